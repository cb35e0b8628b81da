#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "cbrick.h"

/* The PyTorch class each registered name builds, and the input ranks it takes. */
typedef struct bn_variant {
  const char *kind;
  int min_ndim, max_ndim;
} bn_variant;

static const bn_variant bn_2d = {"BatchNorm2d", 4, 4};
static const bn_variant bn_1d = {"BatchNorm1d", 2, 3};
static const bn_variant bn_sync = {"SyncBatchNorm", 2, CB_MAX_DIMS};

typedef struct bn_impl {
  const bn_variant *variant;
  int num_features;
  double eps;
  double momentum;
  bool cumulative; /* momentum=None: a cumulative moving average */
  bool affine, track_running_stats;
} bn_impl;

static const char *py_bool(bool b) {
  return b ? "True" : "False";
}

static int read_bn_args(cb_args *a, bn_impl *bn, bool *requires_grad, cb_error *err) {
  long long features = 0;
  json_t *momentum = json_object_get(cb_args_json(a), "momentum");
  bn->cumulative = momentum && json_is_null(momentum);
  if (cb_args_int_required(a, "num_features", &features, err) ||
      cb_args_double(a, "eps", 1e-5, &bn->eps, err) ||
      cb_args_double(a, "momentum", 0.1, &bn->momentum, err) ||
      cb_args_bool(a, "affine", true, &bn->affine, err) ||
      cb_args_bool(a, "track_running_stats", true, &bn->track_running_stats, err) ||
      cb_args_bool(a, "requires_grad", true, requires_grad, err))
    return -1;
  if (features < 1 || features > (1 << 24))
    return cb_args_fail(a, "num_features", err, "must be a positive channel count, found %lld",
                        features);
  if (!(bn->eps > 0)) return cb_args_fail(a, "eps", err, "must be > 0, found %g", bn->eps);
  if (!bn->cumulative && !(bn->momentum >= 0 && bn->momentum <= 1))
    return cb_args_fail(a, "momentum", err, "must be in [0, 1] or null, found %g", bn->momentum);
  bn->num_features = (int)features;
  return 0;
}

static int check_input(const bn_impl *bn, const cb_tensor *x, cb_error *err) {
  const bn_variant *v = bn->variant;
  if (x->dtype != CB_F32)
    return cb_fail(err, "%s: expected a float32 input, got %s", v->kind, cb_dtype_name(x->dtype));
  if (x->ndim < v->min_ndim || x->ndim > v->max_ndim) {
    if (v->min_ndim == v->max_ndim)
      return cb_fail(err, "%s: expected %dD input (got %dD input)", v->kind, v->min_ndim, x->ndim);
    return cb_fail(err, "%s: expected %dD to %dD input (got %dD input)", v->kind, v->min_ndim,
                   v->max_ndim, x->ndim);
  }
  if (x->shape[1] != bn->num_features)
    return cb_fail(err, "%s: expected %d channels, found %lld", v->kind, bn->num_features,
                   (long long)x->shape[1]);
  return 0;
}

/* Per-channel mean and biased variance over the batch and spatial positions. */
static void batch_stats(const cb_tensor *x, int64_t plane, double *mean, double *var) {
  int64_t n = x->shape[0], c = x->shape[1];
  for (int64_t ch = 0; ch < c; ch++) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) {
      const float *p = cb_f32(x) + (i * c + ch) * plane;
      for (int64_t q = 0; q < plane; q++)
        sum += p[q];
    }
    double mu = sum / (double)(n * plane);
    for (int64_t i = 0; i < n; i++) {
      const float *p = cb_f32(x) + (i * c + ch) * plane;
      for (int64_t q = 0; q < plane; q++)
        sq += (p[q] - mu) * (p[q] - mu);
    }
    mean[ch] = mu;
    var[ch] = sq / (double)(n * plane);
  }
}

static void update_running(cb_module *m, const bn_impl *bn, const double *mean, const double *var,
                           int64_t count) {
  int64_t *tracked = cb_i64(cb_module_param(m, "num_batches_tracked")->tensor);
  *tracked += 1;
  double f = bn->cumulative ? 1.0 / (double)*tracked : bn->momentum;
  float *rm = cb_f32(cb_module_param(m, "running_mean")->tensor);
  float *rv = cb_f32(cb_module_param(m, "running_var")->tensor);
  for (int c = 0; c < bn->num_features; c++) {
    rm[c] = (float)((1 - f) * rm[c] + f * mean[c]);
    rv[c] = (float)((1 - f) * rv[c] + f * var[c] * (double)count / (double)(count - 1));
  }
}

/* y = x * alpha[c] + beta[c], alpha = weight / sqrt(var + eps), beta = bias - mean * alpha. */
static void normalise(cb_module *m, const bn_impl *bn, const cb_tensor *x, cb_tensor *y,
                      int64_t plane, const double *mean, const double *var) {
  const float *w = bn->affine ? cb_f32(cb_module_param(m, "weight")->tensor) : NULL;
  const float *b = bn->affine ? cb_f32(cb_module_param(m, "bias")->tensor) : NULL;
  int64_t n = x->shape[0], c = x->shape[1];
  for (int64_t ch = 0; ch < c; ch++) {
    double alpha = 1.0 / sqrt(var[ch] + bn->eps) * (w ? w[ch] : 1.0);
    float a = (float)alpha, s = (float)((b ? b[ch] : 0.0) - mean[ch] * alpha);
    for (int64_t i = 0; i < n; i++) {
      const float *src = cb_f32(x) + (i * c + ch) * plane;
      float *dst = cb_f32(y) + (i * c + ch) * plane;
      for (int64_t q = 0; q < plane; q++)
        dst[q] = src[q] * a + s;
    }
  }
}

static cb_tensor *bn_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const bn_impl *bn = m->impl;
  if (check_input(bn, x, err)) return NULL;
  int64_t plane = 1;
  for (int i = 2; i < x->ndim; i++)
    plane *= x->shape[i];
  int64_t count = x->shape[0] * plane;
  bool use_batch = m->training || !bn->track_running_stats;
  if (m->training && count <= 1) {
    cb_fail(err, "%s: expected more than 1 value per channel when training", bn->variant->kind);
    return NULL;
  }
  double *mean = calloc((size_t)bn->num_features * 2, sizeof *mean);
  cb_tensor *y = mean ? cb_tensor_new(CB_F32, x->ndim, x->shape, err) : NULL;
  if (!y) {
    if (!mean) cb_fail(err, "%s: out of memory", bn->variant->kind);
    free(mean);
    return NULL;
  }
  double *var = mean + bn->num_features;
  if (use_batch) {
    batch_stats(x, plane, mean, var);
    if (m->training && bn->track_running_stats) update_running(m, bn, mean, var, count);
  } else {
    for (int c = 0; c < bn->num_features; c++) {
      mean[c] = cb_f32(cb_module_param(m, "running_mean")->tensor)[c];
      var[c] = cb_f32(cb_module_param(m, "running_var")->tensor)[c];
    }
  }
  normalise(m, bn, x, y, plane, mean, var);
  free(mean);
  return y;
}

/* Eval mode with running statistics is a per-channel affine map; anything else runs as is. */
static int bn_lower(cb_module *m, cb_plan_builder *b, int input, int *output, cb_error *err) {
  const bn_impl *bn = m->impl;
  if (m->training || !bn->track_running_stats || bn->variant == &bn_1d)
    return cb_plan_opaque(b, m, input, output, err);
  const float *w = bn->affine ? cb_f32(cb_module_param(m, "weight")->tensor) : NULL;
  const float *bias = bn->affine ? cb_f32(cb_module_param(m, "bias")->tensor) : NULL;
  const float *mean = cb_f32(cb_module_param(m, "running_mean")->tensor);
  const float *var = cb_f32(cb_module_param(m, "running_var")->tensor);
  float *scale = malloc((size_t)bn->num_features * 2 * sizeof *scale);
  if (!scale) return cb_fail(err, "%s: out of memory", bn->variant->kind);
  float *shift = scale + bn->num_features;
  for (int c = 0; c < bn->num_features; c++) {
    double alpha = 1.0 / sqrt((double)var[c] + bn->eps) * (w ? w[c] : 1.0);
    scale[c] = (float)alpha;
    shift[c] = (float)((bias ? bias[c] : 0.0) - mean[c] * alpha);
  }
  int rc = cb_plan_affine(b, input, scale, shift, bn->num_features, output, err);
  free(scale);
  return rc;
}

static void bn_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const bn_impl *bn = m->impl;
  char eps[32], momentum[32];
  cb_format_pyfloat(bn->eps, eps, sizeof eps);
  if (bn->cumulative)
    snprintf(momentum, sizeof momentum, "None");
  else
    cb_format_pyfloat(bn->momentum, momentum, sizeof momentum);
  snprintf(buf, cap, "%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", bn->num_features,
           eps, momentum, py_bool(bn->affine), py_bool(bn->track_running_stats));
}

static const char *const bn_bases[] = {"_BatchNorm", NULL};

static const cb_module_ops bn_2d_ops = {.kind = "BatchNorm2d",
                                        .bases = bn_bases,
                                        .forward = bn_forward,
                                        .extra_repr = bn_extra_repr,
                                        .lower = bn_lower};
static const cb_module_ops bn_1d_ops = {.kind = "BatchNorm1d",
                                        .bases = bn_bases,
                                        .forward = bn_forward,
                                        .extra_repr = bn_extra_repr,
                                        .lower = bn_lower};
static const cb_module_ops bn_sync_ops = {.kind = "SyncBatchNorm",
                                          .bases = bn_bases,
                                          .forward = bn_forward,
                                          .extra_repr = bn_extra_repr,
                                          .lower = bn_lower};

static void fill(cb_tensor *t, float v) {
  for (int64_t i = 0; i < cb_tensor_numel(t); i++)
    cb_f32(t)[i] = v;
}

static int add_state(cb_module *m, const bn_impl *bn, cb_error *err) {
  const int64_t shape[1] = {bn->num_features};
  if (bn->affine) {
    cb_tensor *w = cb_module_add_param(m, "weight", 1, shape, err);
    if (!w || !cb_module_add_param(m, "bias", 1, shape, err)) return -1;
    fill(w, 1.0f);
  }
  if (bn->track_running_stats) {
    cb_tensor *rv;
    if (!cb_module_add_buffer(m, "running_mean", CB_F32, 1, shape, err) ||
        !(rv = cb_module_add_buffer(m, "running_var", CB_F32, 1, shape, err)) ||
        !cb_module_add_buffer(m, "num_batches_tracked", CB_I64, 0, shape, err))
      return -1;
    fill(rv, 1.0f);
  }
  return 0;
}

static cb_module *build_bn(cb_args *args, const bn_variant *variant, const cb_module_ops *ops,
                           cb_error *err) {
  bn_impl *bn = calloc(1, sizeof *bn);
  bool requires_grad = true;
  if (!bn) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  bn->variant = variant;
  cb_module *m = read_bn_args(args, bn, &requires_grad, err) ? NULL : cb_module_new(ops, bn, err);
  if (!m) {
    free(bn);
    return NULL;
  }
  if (add_state(m, bn, err)) {
    cb_module_free(m);
    return NULL;
  }
  cb_module_set_requires_grad(m, requires_grad);
  return m;
}

static cb_module *build_bn2d(cb_args *args, cb_error *err) {
  return build_bn(args, &bn_2d, &bn_2d_ops, err);
}
static cb_module *build_bn1d(cb_args *args, cb_error *err) {
  return build_bn(args, &bn_1d, &bn_1d_ops, err);
}
static cb_module *build_sync_bn(cb_args *args, cb_error *err) {
  return build_bn(args, &bn_sync, &bn_sync_ops, err);
}

static const cb_plugin_entry entries[] = {
    {"NORM_LAYERS", "BN", build_bn2d, "bn"},
    {"NORM_LAYERS", "BN2d", build_bn2d, "bn"},
    {"NORM_LAYERS", "BN1d", build_bn1d, "bn"},
    {"NORM_LAYERS", "SyncBN", build_sync_bn, "bn"},
    {NULL},
};

CB_PLUGIN("batch_norm", "Batch normalisation (BN, BN1d, BN2d, SyncBN)", entries);
