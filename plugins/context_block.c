#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick.h"

/* mmcv's ContextBlock (GCNet): global context pooled by attention or averaging,
 * transformed by bottleneck 1x1 convs and fused by channel-wise multiply and/or add
 * (the multiply always first). */

#define CONTEXT_LN_EPS 1e-5

typedef struct context_impl {
  int in_channels, planes;
  double ratio;
  bool att, add, mul;
} context_impl;

/* ---- LayerNorm over [planes, 1, 1] (all of C, H, W) ---- */

typedef struct ln_impl {
  int planes;
} ln_impl;

static cb_tensor *ln_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const ln_impl *ln = m->impl;
  if (x->ndim != 4 || x->shape[1] != ln->planes || x->shape[2] != 1 || x->shape[3] != 1) {
    cb_fail(err, "LayerNorm: expected an N x %d x 1 x 1 input", ln->planes);
    return NULL;
  }
  cb_tensor *y = cb_tensor_clone(x, err);
  if (!y) return NULL;
  const float *w = cb_f32(cb_module_param(m, "weight")->tensor);
  const float *b = cb_f32(cb_module_param(m, "bias")->tensor);
  for (int64_t n = 0; n < x->shape[0]; n++) {
    float *v = cb_f32(y) + n * ln->planes;
    double mean = 0, sq = 0;
    for (int c = 0; c < ln->planes; c++)
      mean += v[c];
    mean /= ln->planes;
    for (int c = 0; c < ln->planes; c++)
      sq += (v[c] - mean) * (v[c] - mean);
    const double rstd = 1.0 / sqrt(sq / ln->planes + CONTEXT_LN_EPS);
    for (int c = 0; c < ln->planes; c++)
      v[c] = (float)((v[c] - mean) * rstd * w[c] + b[c]);
  }
  return y;
}

static void ln_extra_repr(const cb_module *m, char *buf, size_t cap) {
  snprintf(buf, cap, "(%d, 1, 1), eps=1e-05, elementwise_affine=True",
           ((const ln_impl *)m->impl)->planes);
}

static const cb_module_ops ln_ops = {
    .kind = "LayerNorm", .forward = ln_forward, .extra_repr = ln_extra_repr};

static cb_module *new_layer_norm(int planes, cb_error *err) {
  ln_impl *ln = calloc(1, sizeof *ln);
  if (!ln) {
    cb_fail(err, "LayerNorm: out of memory");
    return NULL;
  }
  ln->planes = planes;
  cb_module *m = cb_module_new(&ln_ops, ln, err);
  if (!m) {
    free(ln);
    return NULL;
  }
  const int64_t shape[3] = {planes, 1, 1};
  cb_tensor *w = cb_module_add_param(m, "weight", 3, shape, err);
  if (!w || !cb_module_add_param(m, "bias", 3, shape, err)) {
    cb_module_free(m);
    return NULL;
  }
  cb_init_constant(w, 1.0f);
  return m;
}

/* ---- the parameter-free children PyTorch shows: Softmax(dim=2), AdaptiveAvgPool2d ---- */

/* Softmax over H*W of an N x 1 x H x W map (mmcv's softmax over dim 2 of N x 1 x HW). */
static cb_tensor *softmax_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  (void)m;
  cb_tensor *y = cb_tensor_clone(x, err);
  if (!y) return NULL;
  cb_softmax_rows(cb_f32(y), x->shape[0] * x->shape[1], x->shape[2] * x->shape[3]);
  return y;
}

static void softmax_extra_repr(const cb_module *m, char *buf, size_t cap) {
  (void)m;
  snprintf(buf, cap, "dim=2");
}

static cb_tensor *avg_pool_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  (void)m;
  cb_tensor *y = cb_tensor_new4(x->shape[0], x->shape[1], 1, 1, err);
  if (!y) return NULL;
  const int64_t len = x->shape[2] * x->shape[3];
  for (int64_t row = 0; row < x->shape[0] * x->shape[1]; row++) {
    double sum = 0;
    for (int64_t i = 0; i < len; i++)
      sum += cb_f32(x)[row * len + i];
    cb_f32(y)[row] = (float)(sum / (double)len);
  }
  return y;
}

static void avg_pool_extra_repr(const cb_module *m, char *buf, size_t cap) {
  (void)m;
  snprintf(buf, cap, "output_size=1");
}

static const cb_module_ops softmax_ops = {
    .kind = "Softmax", .forward = softmax_forward, .extra_repr = softmax_extra_repr};
static const cb_module_ops avg_pool_ops = {
    .kind = "AdaptiveAvgPool2d", .forward = avg_pool_forward, .extra_repr = avg_pool_extra_repr};

/* ---- the block ---- */

static cb_tensor *spatial_pool(cb_module *m, const cb_tensor *x, cb_error *err) {
  const context_impl *c = m->impl;
  if (!c->att) return cb_module_forward(cb_module_child(m, "avg_pool"), x, err);
  cb_tensor *logits = cb_module_forward(cb_module_child(m, "conv_mask"), x, err);
  cb_tensor *mask = logits ? cb_module_forward(cb_module_child(m, "softmax"), logits, err) : NULL;
  cb_tensor_free(logits);
  if (!mask) return NULL;
  const int64_t batch = x->shape[0], channels = x->shape[1], len = x->shape[2] * x->shape[3];
  cb_tensor *context = cb_tensor_new4(batch, channels, 1, 1, err);
  for (int64_t n = 0; context && n < batch; n++)
    cb_gemm(false, false, (int)channels, 1, (int)len, 1.0f, cb_f32(x) + n * channels * len,
            (int)len, cb_f32(mask) + n * len, 1, 0.0f, cb_f32(context) + n * channels, 1);
  cb_tensor_free(mask);
  return context;
}

/* out = x * sigmoid(mul_term) and/or out + add_term, terms N x C x 1 x 1. */
static void fuse(cb_tensor *out, const cb_tensor *term, bool multiply) {
  const int64_t rows = out->shape[0] * out->shape[1], len = out->shape[2] * out->shape[3];
  for (int64_t row = 0; row < rows; row++) {
    float t = cb_f32(term)[row];
    float *v = cb_f32(out) + row * len;
    if (multiply) {
      t = 1.0f / (1.0f + expf(-t));
      for (int64_t i = 0; i < len; i++)
        v[i] *= t;
    } else {
      for (int64_t i = 0; i < len; i++)
        v[i] += t;
    }
  }
}

/* Multiplies then adds the transformed context into out (a copy of x). */
static int fuse_all(cb_module *m, const cb_tensor *context, cb_tensor *out, cb_error *err) {
  const context_impl *c = m->impl;
  const char *names[2] = {"channel_mul_conv", "channel_add_conv"};
  const bool used[2] = {c->mul, c->add};
  for (int i = 0; i < 2; i++) {
    if (!used[i]) continue;
    cb_tensor *term = cb_module_forward(cb_module_child(m, names[i]), context, err);
    if (!term) return -1;
    fuse(out, term, i == 0);
    cb_tensor_free(term);
  }
  return 0;
}

static cb_tensor *context_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const context_impl *c = m->impl;
  if (x->dtype != CB_F32 || x->ndim != 4 || x->shape[1] != c->in_channels) {
    cb_fail(err, "ContextBlock: expected a float32 N x %d x H x W input", c->in_channels);
    return NULL;
  }
  cb_tensor *context = spatial_pool(m, x, err);
  cb_tensor *out = context ? cb_tensor_clone(x, err) : NULL;
  if (out && fuse_all(m, context, out, err)) {
    cb_tensor_free(out);
    out = NULL;
  }
  cb_tensor_free(context);
  return out;
}

static void context_extra_repr(const cb_module *m, char *buf, size_t cap) {
  (void)m;
  if (cap) buf[0] = '\0';
}

/* mmcv's reset_parameters: Kaiming (fan_in) on conv_mask, zero on each last conv. */
static int context_init_weights(cb_module *m, struct cb_rng *rng, cb_error *err) {
  (void)err;
  cb_module *mask = cb_module_child(m, "conv_mask");
  if (mask) {
    cb_init_kaiming(cb_module_param(mask, "weight")->tensor, 0, false, "relu", false, rng);
    cb_init_constant(cb_module_param(mask, "bias")->tensor, 0);
  }
  const char *names[2] = {"channel_add_conv", "channel_mul_conv"};
  for (int i = 0; i < 2; i++) {
    cb_module *seq = cb_module_child(m, names[i]);
    if (!seq) continue;
    cb_module *last = seq->children[seq->n_children - 1];
    for (int p = 0; p < last->n_params; p++)
      cb_init_constant(last->params[p].tensor, 0);
  }
  return 0;
}

static const cb_module_ops context_ops = {
    .kind = "ContextBlock",
    .forward = context_forward,
    .extra_repr = context_extra_repr,
    .init_weights = context_init_weights,
};

static int read_fusion_types(cb_args *a, context_impl *c, cb_error *err) {
  json_t *list = cb_args_value(a, "fusion_types");
  if (!list || json_is_null(list)) {
    c->add = true;
    return 0;
  }
  if (!json_is_array(list))
    return cb_args_fail(a, "fusion_types", err,
                        "expected a list of 'channel_add' / 'channel_mul', found %s",
                        json_is_string(list) ? "a string (write it as a list)" : "another value");
  if (json_array_size(list) == 0)
    return cb_args_fail(a, "fusion_types", err, "expected at least one fusion type, found []");
  size_t i;
  json_t *item;
  json_array_foreach(list, i, item) {
    const char *s = json_string_value(item);
    if (s && strcmp(s, "channel_add") == 0) {
      c->add = true;
    } else if (s && strcmp(s, "channel_mul") == 0) {
      c->mul = true;
    } else {
      return cb_args_fail(a, "fusion_types", err,
                          "item %zu: expected 'channel_add' or 'channel_mul', found %s%s%s", i,
                          s ? "'" : "", s ? s : "a non-string", s ? "'" : "");
    }
  }
  return 0;
}

static int read_context_args(cb_args *a, context_impl *c, cb_error *err) {
  long long in_channels;
  const char *pooling;
  if (!cb_args_has(a, "ratio")) return cb_args_fail(a, "ratio", err, "is required");
  if (cb_args_int_required(a, "in_channels", &in_channels, err) ||
      cb_args_double(a, "ratio", 0, &c->ratio, err) ||
      cb_args_string(a, "pooling_type", "att", &pooling, err) || read_fusion_types(a, c, err))
    return -1;
  if (in_channels < 1 || in_channels > (1 << 20))
    return cb_args_fail(a, "in_channels", err, "expected a positive channel count, found %lld",
                        in_channels);
  c->in_channels = (int)in_channels;
  if (strcmp(pooling, "att") != 0 && strcmp(pooling, "avg") != 0)
    return cb_args_fail(a, "pooling_type", err, "expected 'att' or 'avg', found '%s'", pooling);
  c->att = strcmp(pooling, "att") == 0;
  const double planes = floor(c->in_channels * c->ratio);
  if (!(planes >= 1) || planes > (1 << 20))
    return cb_args_fail(a, "ratio", err,
                        "in_channels * ratio must give at least one channel, found %d * %g",
                        c->in_channels, c->ratio);
  c->planes = (int)planes;
  return 0;
}

/* Adds a freshly built child; a NULL child keeps the builder's message. */
static int adopt(cb_module *m, const char *name, cb_module *child, cb_error *err) {
  return child ? cb_module_add_child(m, name, child, err) : -1;
}

static cb_module *conv1x1(int in, int out, const char *path, cb_error *err) {
  const cb_conv_spec spec = {in, out, 1, 1, 0, 1, 1, true};
  return cb_build_conv(NULL, path, &spec, err);
}

/* Sequential(conv1x1, LayerNorm([planes, 1, 1]), ReLU(inplace), conv1x1). */
static cb_module *bottleneck(const context_impl *c, const char *path, cb_error *err) {
  char sub[512];
  cb_module *seq = cb_sequential_new(err);
  if (!seq) return NULL;
  snprintf(sub, sizeof sub, "%s.0", path);
  if (adopt(seq, "0", conv1x1(c->in_channels, c->planes, sub, err), err) ||
      adopt(seq, "1", new_layer_norm(c->planes, err), err))
    goto fail;
  json_t *relu = json_pack("{s:s, s:b}", "type", "ReLU", "inplace", 1);
  snprintf(sub, sizeof sub, "%s.2", path);
  cb_module *act = relu ? cb_build("ACTIVATION_LAYERS", relu, NULL, sub, err) : NULL;
  json_decref(relu);
  snprintf(sub, sizeof sub, "%s.3", path);
  if (adopt(seq, "2", act, err) ||
      adopt(seq, "3", conv1x1(c->planes, c->in_channels, sub, err), err))
    goto fail;
  return seq;
fail:
  cb_module_free(seq);
  return NULL;
}

static int add_new_child(cb_module *m, const char *name, const cb_module_ops *ops, cb_error *err) {
  return adopt(m, name, cb_module_new(ops, NULL, err), err);
}

static int add_children(cb_module *m, const context_impl *c, const char *path, cb_error *err) {
  char sub[512];
  if (c->att) {
    snprintf(sub, sizeof sub, "%s.conv_mask", path);
    if (adopt(m, "conv_mask", conv1x1(c->in_channels, 1, sub, err), err) ||
        add_new_child(m, "softmax", &softmax_ops, err))
      return -1;
  } else if (add_new_child(m, "avg_pool", &avg_pool_ops, err)) {
    return -1;
  }
  snprintf(sub, sizeof sub, "%s.channel_add_conv", path);
  if (c->add && adopt(m, "channel_add_conv", bottleneck(c, sub, err), err)) return -1;
  snprintf(sub, sizeof sub, "%s.channel_mul_conv", path);
  if (c->mul && adopt(m, "channel_mul_conv", bottleneck(c, sub, err), err)) return -1;
  return 0;
}

static cb_module *build_context_block(cb_args *args, cb_error *err) {
  context_impl *c = calloc(1, sizeof *c);
  if (!c) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  cb_module *m = NULL;
  if (read_context_args(args, c, err) || !(m = cb_module_new(&context_ops, c, err))) {
    free(c);
    return NULL;
  }
  if (add_children(m, c, cb_args_path(args), err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "ContextBlock", build_context_block, "context_block"},
    {NULL},
};

CB_PLUGIN("context_block", "GCNet's global context block (ContextBlock)", entries);
