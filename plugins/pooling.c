#include <stdio.h>
#include <stdlib.h>
#include "cbrick.h"

#define POOL_MAX_SIZE (1 << 20)

/* A value given as an int (scalar, printed "3") or as [h, w] (printed "(3, 3)"). */
typedef struct pool_value {
  int h, w;
  bool scalar;
} pool_value;

typedef struct pool_impl {
  bool is_max;
  pool_value kernel, stride, padding, dilation;
  bool ceil_mode, count_include_pad;
} pool_impl;

static int read_value(cb_args *a, const char *key, const pool_value *def, int min, pool_value *out,
                      cb_error *err) {
  int v[2] = {def->h, def->w};
  bool scalar;
  bool given = cb_args_has(a, key);
  if (cb_args_int_pair(a, key, min, POOL_MAX_SIZE, v, &scalar, err)) return -1;
  *out = given ? (pool_value){v[0], v[1], scalar} : *def;
  return 0;
}

static int read_common(cb_args *a, pool_impl *p, cb_error *err) {
  const pool_value zero = {0, 0, true};
  if (!cb_args_has(a, "kernel_size")) return cb_args_fail(a, "kernel_size", err, "is required");
  if (read_value(a, "kernel_size", &zero, 1, &p->kernel, err) ||
      read_value(a, "stride", &p->kernel, 1, &p->stride, err) ||
      read_value(a, "padding", &zero, 0, &p->padding, err))
    return -1;
  if (p->padding.h > p->kernel.h / 2 || p->padding.w > p->kernel.w / 2)
    return cb_args_fail(a, "padding", err, "must be at most half of kernel_size, found %dx%d",
                        p->padding.h, p->padding.w);
  return cb_args_bool(a, "ceil_mode", false, &p->ceil_mode, err);
}

static int read_max_args(cb_args *a, pool_impl *p, cb_error *err) {
  const pool_value one = {1, 1, true};
  bool return_indices;
  p->is_max = true;
  if (read_common(a, p, err) || read_value(a, "dilation", &one, 1, &p->dilation, err) ||
      cb_args_bool(a, "return_indices", false, &return_indices, err))
    return -1;
  if (return_indices)
    return cb_args_fail(a, "return_indices", err, "true is not supported (one output only)");
  return 0;
}

static int read_avg_args(cb_args *a, pool_impl *p, cb_error *err) {
  p->dilation = (pool_value){1, 1, true};
  if (read_common(a, p, err) ||
      cb_args_bool(a, "count_include_pad", true, &p->count_include_pad, err))
    return -1;
  json_t *divisor = cb_args_value(a, "divisor_override");
  if (divisor && !json_is_null(divisor))
    return cb_args_fail(a, "divisor_override", err, "is not supported (only null)");
  return 0;
}

static cb_tensor *pool_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const pool_impl *p = m->impl;
  const cb_pool2d_params params = {p->kernel.h,  p->kernel.w,         p->stride.h,   p->stride.w,
                                   p->padding.h, p->padding.w,        p->dilation.h, p->dilation.w,
                                   p->ceil_mode, p->count_include_pad};
  return p->is_max ? cb_max_pool2d(x, &params, err) : cb_avg_pool2d(x, &params, err);
}

static int pool_lower(cb_module *m, cb_plan_builder *b, int input, int *output, cb_error *err) {
  const pool_impl *p = m->impl;
  const cb_pool2d_params params = {p->kernel.h,  p->kernel.w,         p->stride.h,   p->stride.w,
                                   p->padding.h, p->padding.w,        p->dilation.h, p->dilation.w,
                                   p->ceil_mode, p->count_include_pad};
  return cb_plan_pool(b, input, p->is_max, &params, output, err);
}

static size_t append_value(char *buf, size_t cap, size_t len, const char *key, pool_value v) {
  if (v.scalar) return cb_repr_append(buf, cap, len, "%s%s=%d", len ? ", " : "", key, v.h);
  return cb_repr_append(buf, cap, len, "%s%s=(%d, %d)", len ? ", " : "", key, v.h, v.w);
}

static void pool_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const pool_impl *p = m->impl;
  if (cap) buf[0] = '\0';
  size_t len = append_value(buf, cap, 0, "kernel_size", p->kernel);
  len = append_value(buf, cap, len, "stride", p->stride);
  len = append_value(buf, cap, len, "padding", p->padding);
  if (!p->is_max) return;
  len = append_value(buf, cap, len, "dilation", p->dilation);
  cb_repr_append(buf, cap, len, ", ceil_mode=%s", p->ceil_mode ? "True" : "False");
}

static const cb_module_ops max_pool_ops = {
    .kind = "MaxPool2d",
    .bases = (const char *const[]){"_MaxPoolNd", NULL},
    .forward = pool_forward,
    .extra_repr = pool_extra_repr,
    .lower = pool_lower,
};

static const cb_module_ops avg_pool_ops = {
    .kind = "AvgPool2d",
    .bases = (const char *const[]){"_AvgPoolNd", NULL},
    .forward = pool_forward,
    .extra_repr = pool_extra_repr,
    .lower = pool_lower,
};

static cb_module *build_pool(cb_args *args, bool is_max, cb_error *err) {
  pool_impl *p = calloc(1, sizeof *p);
  if (!p) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  int rc = is_max ? read_max_args(args, p, err) : read_avg_args(args, p, err);
  cb_module *m = rc ? NULL : cb_module_new(is_max ? &max_pool_ops : &avg_pool_ops, p, err);
  if (!m) free(p);
  return m;
}

static cb_module *build_max_pool(cb_args *args, cb_error *err) {
  return build_pool(args, true, err);
}
static cb_module *build_avg_pool(cb_args *args, cb_error *err) {
  return build_pool(args, false, err);
}

static const cb_plugin_entry entries[] = {
    {"POOLING_LAYERS", "MaxPool2d", build_max_pool, "max_pool2d"},
    {"POOLING_LAYERS", "AvgPool2d", build_avg_pool, "avg_pool2d"},
    {NULL},
};

CB_PLUGIN("pooling", "2-D max and average pooling", entries);
