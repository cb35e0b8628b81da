#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "cbrick.h"

typedef struct gn_impl {
  int num_groups, num_channels;
  double eps;
  bool affine;
} gn_impl;

static int read_channels(cb_args *a, long long *out, cb_error *err) {
  bool has_features = cb_args_has(a, "num_features"), has_channels = cb_args_has(a, "num_channels");
  if (has_features && has_channels) {
    long long f, c;
    if (cb_args_int(a, "num_features", 0, &f, err) || cb_args_int(a, "num_channels", 0, &c, err))
      return -1;
    if (f != c)
      return cb_args_fail(a, "num_channels", err, "is %lld but num_features is %lld; give one", c,
                          f);
    *out = c;
    return 0;
  }
  return cb_args_int_required(a, has_channels ? "num_channels" : "num_features", out, err);
}

static int read_gn_args(cb_args *a, gn_impl *gn, bool *requires_grad, cb_error *err) {
  long long groups = 0, channels = 0;
  if (!cb_args_has(a, "num_groups"))
    return cb_args_fail(a, "num_groups", err,
                        "GroupNorm needs num_groups, e.g. {\"type\": \"GN\", \"num_groups\": 32}");
  if (cb_args_int(a, "num_groups", 0, &groups, err) || read_channels(a, &channels, err) ||
      cb_args_double(a, "eps", 1e-5, &gn->eps, err) ||
      cb_args_bool(a, "affine", true, &gn->affine, err) ||
      cb_args_bool(a, "requires_grad", true, requires_grad, err))
    return -1;
  if (channels < 1 || channels > (1 << 24))
    return cb_args_fail(a, "num_features", err, "must be a positive channel count, found %lld",
                        channels);
  if (groups < 1 || groups > channels)
    return cb_args_fail(a, "num_groups", err, "must be between 1 and %lld, found %lld", channels,
                        groups);
  if (channels % groups)
    return cb_args_fail(a, "num_groups", err, "%lld channels are not divisible by %lld groups",
                        channels, groups);
  if (!(gn->eps > 0)) return cb_args_fail(a, "eps", err, "must be > 0, found %g", gn->eps);
  gn->num_groups = (int)groups;
  gn->num_channels = (int)channels;
  return 0;
}

/* Normalises one (sample, group) block of cg channels of plane values each. */
static void normalise_group(const gn_impl *gn, const float *x, float *y, int c0, int cg,
                            int64_t plane, const float *w, const float *b) {
  int64_t count = (int64_t)cg * plane;
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < count; i++)
    sum += x[i];
  double mean = sum / (double)count;
  for (int64_t i = 0; i < count; i++)
    sq += (x[i] - mean) * (x[i] - mean);
  double rstd = 1.0 / sqrt(sq / (double)count + gn->eps);
  for (int c = 0; c < cg; c++) {
    double alpha = rstd * (w ? w[c0 + c] : 1.0);
    float a = (float)alpha, s = (float)((b ? b[c0 + c] : 0.0) - mean * alpha);
    for (int64_t q = 0; q < plane; q++)
      y[c * plane + q] = x[c * plane + q] * a + s;
  }
}

static cb_tensor *gn_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const gn_impl *gn = m->impl;
  if (x->dtype != CB_F32 || x->ndim < 2 || x->shape[1] != gn->num_channels) {
    char shape[128];
    cb_shape_format(x->ndim, x->shape, shape, sizeof shape);
    cb_fail(err, "GroupNorm: expected a float32 input of shape Nx%dx..., got %s %s",
            gn->num_channels, cb_dtype_name(x->dtype), shape);
    return NULL;
  }
  cb_tensor *y = cb_tensor_new(CB_F32, x->ndim, x->shape, err);
  if (!y) return NULL;
  int64_t plane = 1;
  for (int i = 2; i < x->ndim; i++)
    plane *= x->shape[i];
  const float *w = gn->affine ? cb_f32(cb_module_param(m, "weight")->tensor) : NULL;
  const float *b = gn->affine ? cb_f32(cb_module_param(m, "bias")->tensor) : NULL;
  int cg = gn->num_channels / gn->num_groups;
  for (int64_t n = 0; n < x->shape[0]; n++)
    for (int g = 0; g < gn->num_groups; g++) {
      int64_t off = (n * gn->num_channels + (int64_t)g * cg) * plane;
      normalise_group(gn, cb_f32(x) + off, cb_f32(y) + off, g * cg, cg, plane, w, b);
    }
  return y;
}

static void gn_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const gn_impl *gn = m->impl;
  char eps[32];
  cb_format_pyfloat(gn->eps, eps, sizeof eps);
  snprintf(buf, cap, "%d, %d, eps=%s, affine=%s", gn->num_groups, gn->num_channels, eps,
           gn->affine ? "True" : "False");
}

static const cb_module_ops gn_ops = {
    .kind = "GroupNorm", .forward = gn_forward, .extra_repr = gn_extra_repr};

static cb_module *build_gn(cb_args *args, cb_error *err) {
  gn_impl *gn = calloc(1, sizeof *gn);
  bool requires_grad = true;
  if (!gn) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  cb_module *m =
      read_gn_args(args, gn, &requires_grad, err) ? NULL : cb_module_new(&gn_ops, gn, err);
  if (!m) {
    free(gn);
    return NULL;
  }
  if (gn->affine) {
    const int64_t shape[1] = {gn->num_channels};
    cb_tensor *w = cb_module_add_param(m, "weight", 1, shape, err);
    if (!w || !cb_module_add_param(m, "bias", 1, shape, err)) {
      cb_module_free(m);
      return NULL;
    }
    for (int c = 0; c < gn->num_channels; c++)
      cb_f32(w)[c] = 1.0f;
  }
  cb_module_set_requires_grad(m, requires_grad);
  return m;
}

static const cb_plugin_entry entries[] = {{"NORM_LAYERS", "GN", build_gn, "gn"}, {NULL}};

CB_PLUGIN("group_norm", "Group normalisation (GN)", entries);
