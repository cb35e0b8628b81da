/* An out-of-tree plugin: built against <cbrick.h> alone, never linked to
 * libcbrick. "Scale" multiplies each channel by a learned factor. */
#include <stdlib.h>

#include <cbrick.h>

typedef struct scale {
  long long channels;
} scale;

static cb_tensor *scale_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const scale *s = m->impl;
  if (x->ndim != 4 || x->shape[1] != s->channels)
    return cb_fail(err, "Scale: expected N x %lld x H x W input", s->channels), NULL;
  cb_tensor *y = cb_tensor_clone(x, err);
  if (!y) return NULL;
  const float *w = cb_f32(cb_module_param(m, "weight")->tensor);
  int64_t plane = x->shape[2] * x->shape[3];
  float *out = cb_f32(y);
  for (int64_t n = 0; n < x->shape[0]; n++)
    for (int64_t c = 0; c < s->channels; c++)
      for (int64_t i = 0; i < plane; i++)
        out[(n * s->channels + c) * plane + i] *= w[c];
  return y;
}

static const cb_module_ops scale_ops = {.kind = "Scale", .forward = scale_forward};

static cb_module *build_scale(cb_args *a, cb_error *err) {
  long long channels;
  double init;
  if (cb_args_int_required(a, "in_channels", &channels, err) ||
      cb_args_double(a, "init", 1.0, &init, err))
    return NULL;
  if (channels <= 0) return cb_args_fail(a, "in_channels", err, "must be positive"), NULL;
  scale *s = malloc(sizeof *s);
  if (!s) return cb_fail(err, "Scale: out of memory"), NULL;
  s->channels = channels;
  cb_module *m = cb_module_new(&scale_ops, s, err);
  if (!m) {
    free(s);
    return NULL;
  }
  const int64_t shape[1] = {channels};
  cb_tensor *w = cb_module_add_param(m, "weight", 1, shape, err);
  if (!w) {
    cb_module_free(m);
    return NULL;
  }
  for (long long c = 0; c < channels; c++)
    cb_f32(w)[c] = (float)init;
  return m;
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "Scale", build_scale, "scale"},
    {NULL, NULL, NULL, NULL},
};

CB_PLUGIN("scale_layer", "per-channel scale (example plugin)", entries);
