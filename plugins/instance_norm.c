#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "cbrick.h"

typedef struct in_impl {
  int num_features;
  double eps, momentum;
  bool affine, track_running_stats;
} in_impl;

static int read_in_args(cb_args *a, in_impl *in, bool *requires_grad, cb_error *err) {
  long long features = 0;
  if (cb_args_int_required(a, "num_features", &features, err) ||
      cb_args_double(a, "eps", 1e-5, &in->eps, err) ||
      cb_args_double(a, "momentum", 0.1, &in->momentum, err) ||
      cb_args_bool(a, "affine", false, &in->affine, err) ||
      cb_args_bool(a, "track_running_stats", false, &in->track_running_stats, err) ||
      cb_args_bool(a, "requires_grad", true, requires_grad, err))
    return -1;
  if (features < 1 || features > (1 << 24))
    return cb_args_fail(a, "num_features", err, "must be a positive channel count, found %lld",
                        features);
  if (!(in->eps > 0)) return cb_args_fail(a, "eps", err, "must be > 0, found %g", in->eps);
  if (!(in->momentum >= 0 && in->momentum <= 1))
    return cb_args_fail(a, "momentum", err, "must be in [0, 1], found %g", in->momentum);
  in->num_features = (int)features;
  return 0;
}

/* 4-D NCHW, or 3-D CHW taken as one sample (as PyTorch's unbatched input). */
static int input_dims(const in_impl *in, const cb_tensor *x, int64_t *n, int64_t *plane,
                      cb_error *err) {
  if (x->dtype != CB_F32 || (x->ndim != 3 && x->ndim != 4)) {
    char shape[128];
    cb_shape_format(x->ndim, x->shape, shape, sizeof shape);
    return cb_fail(err, "InstanceNorm2d: expected a 3D or 4D float32 input, got %s %s",
                   cb_dtype_name(x->dtype), shape);
  }
  int c_axis = x->ndim - 3;
  if (x->shape[c_axis] != in->num_features)
    return cb_fail(err, "InstanceNorm2d: expected %d channels, found %lld", in->num_features,
                   (long long)x->shape[c_axis]);
  *n = c_axis ? x->shape[0] : 1;
  *plane = x->shape[c_axis + 1] * x->shape[c_axis + 2];
  return 0;
}

static void plane_stats(const float *x, int64_t plane, double *mean, double *var) {
  double sum = 0, sq = 0;
  for (int64_t q = 0; q < plane; q++)
    sum += x[q];
  *mean = sum / (double)plane;
  for (int64_t q = 0; q < plane; q++)
    sq += (x[q] - *mean) * (x[q] - *mean);
  *var = sq / (double)plane;
}

/* PyTorch's train-mode update: each running stat moves by momentum toward the
 * average over the batch of the per-instance mean and unbiased variance. */
static void update_running(cb_module *m, const in_impl *in, int64_t n, int64_t plane,
                           const double *mean, const double *var) {
  float *rm = cb_f32(cb_module_param(m, "running_mean")->tensor);
  float *rv = cb_f32(cb_module_param(m, "running_var")->tensor);
  double f = in->momentum;
  for (int c = 0; c < in->num_features; c++) {
    double mm = 0, vv = 0;
    for (int64_t i = 0; i < n; i++) {
      mm += mean[i * in->num_features + c];
      vv += var[i * in->num_features + c] * (double)plane / (double)(plane - 1);
    }
    rm[c] = (float)((1 - f) * rm[c] + f * mm / (double)n);
    rv[c] = (float)((1 - f) * rv[c] + f * vv / (double)n);
  }
}

static int instance_stats(cb_module *m, const in_impl *in, const cb_tensor *x, int64_t n,
                          int64_t plane, double *mean, double *var, cb_error *err) {
  int c = in->num_features;
  if (!m->training && in->track_running_stats) {
    const float *rm = cb_f32(cb_module_param(m, "running_mean")->tensor);
    const float *rv = cb_f32(cb_module_param(m, "running_var")->tensor);
    for (int64_t i = 0; i < n * c; i++) {
      mean[i] = rm[i % c];
      var[i] = rv[i % c];
    }
    return 0;
  }
  if (plane <= 1)
    return cb_fail(err, "InstanceNorm2d: expected more than 1 spatial element, got %lld",
                   (long long)plane);
  for (int64_t i = 0; i < n * c; i++)
    plane_stats(cb_f32(x) + i * plane, plane, mean + i, var + i);
  if (m->training && in->track_running_stats) update_running(m, in, n, plane, mean, var);
  return 0;
}

static cb_tensor *in_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const in_impl *in = m->impl;
  int64_t n = 0, plane = 0;
  if (input_dims(in, x, &n, &plane, err)) return NULL;
  int c = in->num_features;
  double *mean = calloc((size_t)(n * c) * 2 + 1, sizeof *mean);
  if (!mean) {
    cb_fail(err, "InstanceNorm2d: out of memory");
    return NULL;
  }
  double *var = mean + n * c;
  cb_tensor *y = NULL;
  if (!instance_stats(m, in, x, n, plane, mean, var, err))
    y = cb_tensor_new(CB_F32, x->ndim, x->shape, err);
  const float *w = in->affine ? cb_f32(cb_module_param(m, "weight")->tensor) : NULL;
  const float *b = in->affine ? cb_f32(cb_module_param(m, "bias")->tensor) : NULL;
  for (int64_t i = 0; y && i < n * c; i++) {
    double alpha = 1.0 / sqrt(var[i] + in->eps) * (w ? w[i % c] : 1.0);
    float a = (float)alpha, s = (float)((b ? b[i % c] : 0.0) - mean[i] * alpha);
    const float *src = cb_f32(x) + i * plane;
    float *dst = cb_f32(y) + i * plane;
    for (int64_t q = 0; q < plane; q++)
      dst[q] = src[q] * a + s;
  }
  free(mean);
  return y;
}

static void in_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const in_impl *in = m->impl;
  char eps[32], momentum[32];
  cb_format_pyfloat(in->eps, eps, sizeof eps);
  cb_format_pyfloat(in->momentum, momentum, sizeof momentum);
  snprintf(buf, cap, "%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", in->num_features,
           eps, momentum, in->affine ? "True" : "False",
           in->track_running_stats ? "True" : "False");
}

static const cb_module_ops in_ops = {
    .kind = "InstanceNorm2d",
    .bases = (const char *const[]){"_InstanceNorm", NULL},
    .forward = in_forward,
    .extra_repr = in_extra_repr,
};

static int add_state(cb_module *m, const in_impl *in, cb_error *err) {
  const int64_t shape[1] = {in->num_features};
  if (in->affine) {
    cb_tensor *w = cb_module_add_param(m, "weight", 1, shape, err);
    if (!w || !cb_module_add_param(m, "bias", 1, shape, err)) return -1;
    for (int c = 0; c < in->num_features; c++)
      cb_f32(w)[c] = 1.0f;
  }
  if (in->track_running_stats) {
    cb_tensor *rv;
    if (!cb_module_add_buffer(m, "running_mean", CB_F32, 1, shape, err) ||
        !(rv = cb_module_add_buffer(m, "running_var", CB_F32, 1, shape, err)) ||
        !cb_module_add_buffer(m, "num_batches_tracked", CB_I64, 0, shape, err))
      return -1;
    for (int c = 0; c < in->num_features; c++)
      cb_f32(rv)[c] = 1.0f;
  }
  return 0;
}

static cb_module *build_in(cb_args *args, cb_error *err) {
  in_impl *in = calloc(1, sizeof *in);
  bool requires_grad = true;
  if (!in) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  cb_module *m =
      read_in_args(args, in, &requires_grad, err) ? NULL : cb_module_new(&in_ops, in, err);
  if (!m) {
    free(in);
    return NULL;
  }
  if (add_state(m, in, err)) {
    cb_module_free(m);
    return NULL;
  }
  cb_module_set_requires_grad(m, requires_grad);
  return m;
}

static const cb_plugin_entry entries[] = {
    {"NORM_LAYERS", "IN", build_in, "in"},
    {"NORM_LAYERS", "IN2d", build_in, "in"},
    {NULL},
};

CB_PLUGIN("instance_norm", "Instance normalisation (IN, IN2d)", entries);
