#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "cbrick.h"

/* nn.LayerNorm(num_features): normalises over the last dimension. */
typedef struct ln_impl {
  int num_features;
  double eps;
  bool elementwise_affine;
} ln_impl;

static int read_ln_args(cb_args *a, ln_impl *ln, bool *requires_grad, cb_error *err) {
  long long features = 0;
  if (cb_args_int_required(a, "num_features", &features, err) ||
      cb_args_double(a, "eps", 1e-5, &ln->eps, err) ||
      cb_args_bool(a, "elementwise_affine", true, &ln->elementwise_affine, err) ||
      cb_args_bool(a, "requires_grad", true, requires_grad, err))
    return -1;
  if (features < 1 || features > (1 << 24))
    return cb_args_fail(a, "num_features", err, "must be a positive size, found %lld", features);
  if (!(ln->eps > 0)) return cb_args_fail(a, "eps", err, "must be > 0, found %g", ln->eps);
  ln->num_features = (int)features;
  return 0;
}

static void normalise_row(const ln_impl *ln, const float *x, float *y, const float *w,
                          const float *b) {
  int d = ln->num_features;
  double sum = 0, sq = 0;
  for (int i = 0; i < d; i++)
    sum += x[i];
  double mean = sum / d;
  for (int i = 0; i < d; i++)
    sq += (x[i] - mean) * (x[i] - mean);
  double rstd = 1.0 / sqrt(sq / d + ln->eps);
  for (int i = 0; i < d; i++) {
    double v = (x[i] - mean) * rstd;
    y[i] = (float)(w ? v * w[i] + b[i] : v);
  }
}

static cb_tensor *ln_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const ln_impl *ln = m->impl;
  if (x->dtype != CB_F32 || x->ndim < 1 || x->shape[x->ndim - 1] != ln->num_features) {
    char shape[128];
    cb_shape_format(x->ndim, x->shape, shape, sizeof shape);
    cb_fail(err, "LayerNorm: expected a float32 input whose last dimension is %d, got %s %s",
            ln->num_features, cb_dtype_name(x->dtype), shape);
    return NULL;
  }
  cb_tensor *y = cb_tensor_new(CB_F32, x->ndim, x->shape, err);
  if (!y) return NULL;
  const float *w = ln->elementwise_affine ? cb_f32(cb_module_param(m, "weight")->tensor) : NULL;
  const float *b = ln->elementwise_affine ? cb_f32(cb_module_param(m, "bias")->tensor) : NULL;
  int64_t rows = cb_tensor_numel(x) / ln->num_features;
  for (int64_t r = 0; r < rows; r++) {
    int64_t off = r * ln->num_features;
    normalise_row(ln, cb_f32(x) + off, cb_f32(y) + off, w, b);
  }
  return y;
}

static void ln_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const ln_impl *ln = m->impl;
  char eps[32];
  cb_format_pyfloat(ln->eps, eps, sizeof eps);
  snprintf(buf, cap, "(%d,), eps=%s, elementwise_affine=%s", ln->num_features, eps,
           ln->elementwise_affine ? "True" : "False");
}

static const cb_module_ops ln_ops = {
    .kind = "LayerNorm", .forward = ln_forward, .extra_repr = ln_extra_repr};

static cb_module *build_ln(cb_args *args, cb_error *err) {
  ln_impl *ln = calloc(1, sizeof *ln);
  bool requires_grad = true;
  if (!ln) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  cb_module *m =
      read_ln_args(args, ln, &requires_grad, err) ? NULL : cb_module_new(&ln_ops, ln, err);
  if (!m) {
    free(ln);
    return NULL;
  }
  if (ln->elementwise_affine) {
    const int64_t shape[1] = {ln->num_features};
    cb_tensor *w = cb_module_add_param(m, "weight", 1, shape, err);
    if (!w || !cb_module_add_param(m, "bias", 1, shape, err)) {
      cb_module_free(m);
      return NULL;
    }
    for (int i = 0; i < ln->num_features; i++)
      cb_f32(w)[i] = 1.0f;
  }
  cb_module_set_requires_grad(m, requires_grad);
  return m;
}

static const cb_plugin_entry entries[] = {{"NORM_LAYERS", "LN", build_ln, "ln"}, {NULL}};

CB_PLUGIN("layer_norm", "Layer normalisation over the last dimension (LN)", entries);
