/* An out-of-tree ResNet block, built against <cbrick.h> alone: "ScaledBottleneck", a
 * Bottleneck whose residual branch is multiplied by a learned scalar gamma before the identity
 * is added. ResNet builds it through RES_BLOCKS for a config's
 * "block": {"type": "ScaledBottleneck", "expansion": 4} and adds the downsample branch as its
 * child "downsample". It has no lower hook, so a plan runs it as an opaque node. */
#include <stdlib.h>
#include <string.h>

#include <cbrick.h>

typedef struct scaled_bottleneck {
  char norm[3][32]; /* bn1, bn2, bn3 (or gn1, ...) as cb_build_norm names them */
} scaled_bottleneck;

static cb_tensor *run(cb_module *m, const char *child, cb_tensor *x, cb_error *err) {
  if (!x) return NULL;
  cb_tensor *y = cb_module_forward(cb_module_child(m, child), x, err);
  cb_tensor_free(x);
  return y;
}

static cb_tensor *residual_branch(cb_module *m, const cb_tensor *x, cb_error *err) {
  const scaled_bottleneck *s = m->impl;
  cb_tensor *out = run(m, s->norm[0], cb_module_forward(cb_module_child(m, "conv1"), x, err), err);
  if (out) cb_relu_inplace(out);
  out = run(m, s->norm[1], run(m, "conv2", out, err), err);
  if (out) cb_relu_inplace(out);
  out = run(m, s->norm[2], run(m, "conv3", out, err), err);
  if (!out) return NULL;
  const float gamma = cb_f32(cb_module_param(m, "gamma")->tensor)[0];
  float *o = cb_f32(out);
  for (int64_t i = 0, n = cb_tensor_numel(out); i < n; i++)
    o[i] *= gamma;
  return out;
}

/* relu(gamma * branch(x) + identity), the identity being ResNet's downsample(x) when it added
 * one. */
static cb_tensor *scaled_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  cb_tensor *out = residual_branch(m, x, err);
  if (!out) return NULL;
  cb_module *down = cb_module_child(m, "downsample");
  cb_tensor *identity = down ? cb_module_forward(down, x, err) : NULL;
  int rc = down && !identity ? -1 : cb_add_inplace(out, identity ? identity : x, err);
  cb_tensor_free(identity);
  if (rc) {
    cb_tensor_free(out);
    return NULL;
  }
  cb_relu_inplace(out);
  return out;
}

static const cb_module_ops scaled_ops = {.kind = "ScaledBottleneck", .forward = scaled_forward};

/* What ResNet passes to every block. */
typedef struct block_args {
  long long inplanes, planes, expansion, stride, dilation;
  bool caffe, with_cp;
  json_t *conv_cfg, *norm_cfg;
  double gamma_init;
} block_args;

static int refuse_extension(cb_args *a, const char *key, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  bool empty = !v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0);
  return empty ? 0 : cb_args_fail(a, key, err, "ScaledBottleneck takes no %s (found one)", key);
}

static int read_args(cb_args *a, block_args *b, cb_error *err) {
  const char *style;
  if (cb_args_int_required(a, "inplanes", &b->inplanes, err) ||
      cb_args_int_required(a, "planes", &b->planes, err) ||
      cb_args_int_required(a, "expansion", &b->expansion, err) ||
      cb_args_int(a, "stride", 1, &b->stride, err) ||
      cb_args_int(a, "dilation", 1, &b->dilation, err) ||
      cb_args_string(a, "style", "pytorch", &style, err) ||
      cb_args_object(a, "conv_cfg", &b->conv_cfg, err) ||
      cb_args_object(a, "norm_cfg", &b->norm_cfg, err) ||
      cb_args_bool(a, "with_cp", false, &b->with_cp, err) ||
      cb_args_double(a, "gamma_init", 1.0, &b->gamma_init, err))
    return -1;
  if (refuse_extension(a, "dcn", err) || refuse_extension(a, "plugins", err)) return -1;
  if (!b->norm_cfg) return cb_args_fail(a, "norm_cfg", err, "required, but missing");
  if (b->inplanes < 1 || b->planes < 1 || b->expansion < 1 || b->stride < 1 || b->dilation < 1)
    return cb_fail(err, "%s: inplanes, planes, expansion, stride and dilation must be positive",
                   cb_args_path(a));
  b->caffe = strcmp(style, "caffe") == 0;
  return 0;
}

static int add_conv(cb_module *m, const block_args *b, const char *path, const char *name,
                    const cb_conv_spec *spec, cb_error *err) {
  cb_module *conv = cb_build_conv(b->conv_cfg, path, spec, err);
  return conv ? cb_module_add_child(m, name, conv, err) : -1;
}

static int add_norm(cb_module *m, const block_args *b, const char *path, int channels, int index,
                    cb_error *err) {
  scaled_bottleneck *s = m->impl;
  char postfix[4];
  snprintf(postfix, sizeof postfix, "%d", index);
  cb_module *norm = cb_build_norm(b->norm_cfg, path, channels, postfix, s->norm[index - 1],
                                  sizeof s->norm[index - 1], err);
  return norm ? cb_module_add_child(m, s->norm[index - 1], norm, err) : -1;
}

static int add_relu(cb_module *m, const char *path, cb_error *err) {
  json_t *cfg = json_pack("{s:s, s:b}", "type", "ReLU", "inplace", 1);
  cb_module *relu = cfg ? cb_build("ACTIVATION_LAYERS", cfg, NULL, path, err) : NULL;
  json_decref(cfg);
  return relu ? cb_module_add_child(m, "relu", relu, err) : -1;
}

/* Bottleneck's layers: the stride on the 3x3 conv ("pytorch") or on the first 1x1 ("caffe"). */
static int add_layers(cb_module *m, const block_args *b, const char *path, cb_error *err) {
  const int in = (int)b->inplanes, planes = (int)b->planes, out = planes * (int)b->expansion;
  const int s1 = b->caffe ? (int)b->stride : 1, s2 = b->caffe ? 1 : (int)b->stride;
  const int d = (int)b->dilation;
  const cb_conv_spec c1 = {in, planes, 1, s1, 0, 1, 1, false};
  const cb_conv_spec c2 = {planes, planes, 3, s2, d, d, 1, false};
  const cb_conv_spec c3 = {planes, out, 1, 1, 0, 1, 1, false};
  return add_conv(m, b, path, "conv1", &c1, err) || add_norm(m, b, path, planes, 1, err) ||
                 add_conv(m, b, path, "conv2", &c2, err) || add_norm(m, b, path, planes, 2, err) ||
                 add_conv(m, b, path, "conv3", &c3, err) || add_norm(m, b, path, out, 3, err) ||
                 add_relu(m, path, err)
             ? -1
             : 0;
}

static cb_module *build_scaled_bottleneck(cb_args *a, cb_error *err) {
  block_args b;
  if (read_args(a, &b, err)) return NULL;
  scaled_bottleneck *s = calloc(1, sizeof *s);
  if (!s) return cb_fail(err, "%s: out of memory", cb_args_path(a)), NULL;
  cb_module *m = cb_module_new(&scaled_ops, s, err);
  if (!m) {
    free(s);
    return NULL;
  }
  const int64_t one[1] = {1};
  cb_tensor *gamma = cb_module_add_param(m, "gamma", 1, one, err);
  if (!gamma || add_layers(m, &b, cb_args_path(a), err)) {
    cb_module_free(m);
    return NULL;
  }
  cb_f32(gamma)[0] = (float)b.gamma_init;
  return m;
}

static const cb_plugin_entry entries[] = {
    {"RES_BLOCKS", "ScaledBottleneck", build_scaled_bottleneck, NULL},
    {NULL, NULL, NULL, NULL},
};

CB_PLUGIN("custom_block", "a Bottleneck with a learned residual scale (example block)", entries);
