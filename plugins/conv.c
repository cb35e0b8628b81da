#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick.h"

#define CONV_MAX_SIZE (1 << 20)

/* A value given as an int or as [h, w]. */
typedef struct conv_pair {
  int h, w;
} conv_pair;

typedef struct conv_impl {
  int in_channels, out_channels, groups;
  conv_pair kernel, stride, padding, dilation;
  bool bias;
} conv_impl;

static int read_pair(cb_args *a, const char *key, int def, int min, conv_pair *out, cb_error *err) {
  int v[2] = {def, def};
  if (cb_args_int_pair(a, key, min, CONV_MAX_SIZE, v, NULL, err)) return -1;
  *out = (conv_pair){v[0], v[1]};
  return 0;
}

static int read_channels(cb_args *a, const char *key, int *out, cb_error *err) {
  long long v;
  if (cb_args_int_required(a, key, &v, err)) return -1;
  if (v < 1 || v > CONV_MAX_SIZE)
    return cb_args_fail(a, key, err, "must be a positive channel count, found %lld", v);
  *out = (int)v;
  return 0;
}

static int read_conv_args(cb_args *a, conv_impl *c, cb_error *err) {
  long long groups;
  const char *padding_mode;
  if (!cb_args_has(a, "kernel_size")) return cb_args_fail(a, "kernel_size", err, "is required");
  if (read_channels(a, "in_channels", &c->in_channels, err) ||
      read_channels(a, "out_channels", &c->out_channels, err) ||
      read_pair(a, "kernel_size", 0, 1, &c->kernel, err) ||
      read_pair(a, "stride", 1, 1, &c->stride, err) ||
      read_pair(a, "padding", 0, 0, &c->padding, err) ||
      read_pair(a, "dilation", 1, 1, &c->dilation, err) ||
      cb_args_int(a, "groups", 1, &groups, err) || cb_args_bool(a, "bias", true, &c->bias, err) ||
      cb_args_string(a, "padding_mode", "zeros", &padding_mode, err))
    return -1;
  if (strcmp(padding_mode, "zeros") != 0)
    return cb_args_fail(a, "padding_mode", err, "'%s' is not supported (only 'zeros')",
                        padding_mode);
  if (groups < 1 || groups > CONV_MAX_SIZE)
    return cb_args_fail(a, "groups", err, "must be >= 1, found %lld", groups);
  c->groups = (int)groups;
  if (c->in_channels % c->groups)
    return cb_args_fail(a, "groups", err, "in_channels=%d is not divisible by groups=%d",
                        c->in_channels, c->groups);
  if (c->out_channels % c->groups)
    return cb_args_fail(a, "groups", err, "out_channels=%d is not divisible by groups=%d",
                        c->out_channels, c->groups);
  return 0;
}

static cb_tensor *conv_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const conv_impl *c = m->impl;
  const cb_conv2d_params p = {c->stride.h,   c->stride.w,   c->padding.h, c->padding.w,
                              c->dilation.h, c->dilation.w, c->groups};
  cb_param *bias = c->bias ? cb_module_param(m, "bias") : NULL;
  return cb_conv2d(x, cb_module_param(m, "weight")->tensor, bias ? bias->tensor : NULL, &p, err);
}

static int conv_lower(cb_module *m, cb_plan_builder *b, int input, int *output, cb_error *err) {
  const conv_impl *c = m->impl;
  const cb_conv2d_params p = {c->stride.h,   c->stride.w,   c->padding.h, c->padding.w,
                              c->dilation.h, c->dilation.w, c->groups};
  cb_param *bias = c->bias ? cb_module_param(m, "bias") : NULL;
  return cb_plan_conv(b, input, cb_module_param(m, "weight")->tensor, bias ? bias->tensor : NULL,
                      &p, output, err);
}

static void conv_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const conv_impl *c = m->impl;
  size_t len =
      cb_repr_append(buf, cap, 0, "%d, %d, kernel_size=(%d, %d), stride=(%d, %d)", c->in_channels,
                     c->out_channels, c->kernel.h, c->kernel.w, c->stride.h, c->stride.w);
  if (c->padding.h || c->padding.w)
    len = cb_repr_append(buf, cap, len, ", padding=(%d, %d)", c->padding.h, c->padding.w);
  if (c->dilation.h != 1 || c->dilation.w != 1)
    len = cb_repr_append(buf, cap, len, ", dilation=(%d, %d)", c->dilation.h, c->dilation.w);
  if (c->groups != 1) len = cb_repr_append(buf, cap, len, ", groups=%d", c->groups);
  if (!c->bias) cb_repr_append(buf, cap, len, ", bias=False");
}

static const cb_module_ops conv_ops = {
    .kind = "Conv2d",
    .bases = (const char *const[]){"_ConvNd", NULL},
    .forward = conv_forward,
    .extra_repr = conv_extra_repr,
    .lower = conv_lower,
};

static cb_module *build_conv2d(cb_args *args, cb_error *err) {
  conv_impl *c = calloc(1, sizeof *c);
  if (!c) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  if (read_conv_args(args, c, err)) {
    free(c);
    return NULL;
  }
  cb_module *m = cb_module_new(&conv_ops, c, err);
  if (!m) {
    free(c);
    return NULL;
  }
  const int64_t wshape[4] = {c->out_channels, c->in_channels / c->groups, c->kernel.h, c->kernel.w};
  const int64_t bshape[1] = {c->out_channels};
  if (!cb_module_add_param(m, "weight", 4, wshape, err) ||
      (c->bias && !cb_module_add_param(m, "bias", 1, bshape, err))) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static const cb_plugin_entry entries[] = {
    {"CONV_LAYERS", "Conv2d", build_conv2d, "conv"},
    {"CONV_LAYERS", "Conv", build_conv2d, "conv"},
    {NULL},
};

CB_PLUGIN("conv", "2-D convolution (Conv2d, Conv)", entries);
