#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick.h"

/* mmcv's DeformConv2dPack ("DCN") and ModulatedDeformConv2dPack ("DCNv2"): a
 * deformable convolution whose offsets (and, for v2, masks) come from the child
 * conv_offset, a plain Conv2d with the same stride, padding and dilation. */

#define DCN_MAX_SIZE (1 << 20)

typedef struct dcn_pair {
  int h, w;
} dcn_pair;

typedef struct dcn_impl {
  int in_channels, out_channels, groups, deform_groups;
  dcn_pair kernel, stride, padding, dilation;
  bool modulated, bias;
} dcn_impl;

static int read_pair(cb_args *a, const char *key, int def, int min, dcn_pair *out, cb_error *err) {
  int v[2] = {def, def};
  if (cb_args_int_pair(a, key, min, DCN_MAX_SIZE, v, NULL, err)) return -1;
  *out = (dcn_pair){v[0], v[1]};
  return 0;
}

static int read_count(cb_args *a, const char *key, bool required, long long def, int *out,
                      cb_error *err) {
  long long v;
  if (required ? cb_args_int_required(a, key, &v, err) : cb_args_int(a, key, def, &v, err))
    return -1;
  if (v < 1 || v > DCN_MAX_SIZE)
    return cb_args_fail(a, key, err, "expected a positive integer, found %lld", v);
  *out = (int)v;
  return 0;
}

/* deform_groups, or its deprecated spelling deformable_groups. */
static int read_deform_groups(cb_args *a, int *out, cb_error *err) {
  if (cb_args_has(a, "deformable_groups")) {
    if (cb_args_has(a, "deform_groups"))
      return cb_args_fail(a, "deformable_groups", err,
                          "given together with deform_groups (use deform_groups only)");
    cb_warn("%s.deformable_groups is deprecated, use deform_groups", cb_args_path(a));
    return read_count(a, "deformable_groups", false, 1, out, err);
  }
  cb_args_value(a, "deformable_groups");
  return read_count(a, "deform_groups", false, 1, out, err);
}

static int read_dcn_args(cb_args *a, dcn_impl *d, cb_error *err) {
  bool fallback;
  long long im2col_step; /* DCN only; a CUDA batching knob */
  if (!cb_args_has(a, "kernel_size")) return cb_args_fail(a, "kernel_size", err, "is required");
  if (read_count(a, "in_channels", true, 0, &d->in_channels, err) ||
      read_count(a, "out_channels", true, 0, &d->out_channels, err) ||
      read_pair(a, "kernel_size", 1, 1, &d->kernel, err) ||
      read_pair(a, "stride", 1, 1, &d->stride, err) ||
      read_pair(a, "padding", 0, 0, &d->padding, err) ||
      read_pair(a, "dilation", 1, 1, &d->dilation, err) ||
      read_count(a, "groups", false, 1, &d->groups, err) ||
      read_deform_groups(a, &d->deform_groups, err) ||
      cb_args_bool(a, "bias", d->modulated, &d->bias, err) ||
      /* Handled by the backbone (only the first DCN block falls back to a plain conv). */
      cb_args_bool(a, "fallback_on_stride", false, &fallback, err) ||
      (!d->modulated && cb_args_int(a, "im2col_step", 32, &im2col_step, err)))
    return -1;
  if (!d->modulated && d->bias)
    return cb_args_fail(a, "bias", err, "true is not supported by DCN (DeformConv2d has no bias)");
  if (d->in_channels % d->groups)
    return cb_args_fail(a, "groups", err, "in_channels=%d is not divisible by groups=%d",
                        d->in_channels, d->groups);
  if (d->out_channels % d->groups)
    return cb_args_fail(a, "groups", err, "out_channels=%d is not divisible by groups=%d",
                        d->out_channels, d->groups);
  if (d->in_channels % d->deform_groups)
    return cb_args_fail(a, "deform_groups", err,
                        "in_channels=%d is not divisible by deform_groups=%d", d->in_channels,
                        d->deform_groups);
  return 0;
}

typedef struct dcn_geometry {
  int channels, height, width, out_h, out_w;
} dcn_geometry;

/* Where one kernel tap at one output position samples: four corners (plane indices) with
 * their bilinear weights, zero for corners outside the image and for samples outside
 * (-1, H) x (-1, W), as mmcv's deformable_im2col_bilinear. The same for every channel of a
 * deform group. */
typedef struct dcn_sample {
  int32_t at[4];
  float w[4];
} dcn_sample;

static dcn_sample sample_at(const dcn_geometry *g, float h, float w) {
  dcn_sample s = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  if (h <= -1 || h >= g->height || w <= -1 || w >= g->width) return s;
  int h_low = (int)floorf(h), w_low = (int)floorf(w);
  float lh = h - h_low, lw = w - w_low, hh = 1 - lh, hw = 1 - lw;
  const int rows[4] = {h_low, h_low, h_low + 1, h_low + 1};
  const int cols[4] = {w_low, w_low + 1, w_low, w_low + 1};
  const float weights[4] = {hh * hw, hh * lw, lh * hw, lh * lw};
  for (int i = 0; i < 4; i++)
    if (rows[i] >= 0 && rows[i] < g->height && cols[i] >= 0 && cols[i] < g->width) {
      s.at[i] = rows[i] * g->width + cols[i];
      s.w[i] = weights[i];
    }
  return s;
}

/* The samples [k][p] of deform group dg. */
static void sample_table(const dcn_impl *d, const dcn_geometry *g, const float *offset, int dg,
                         dcn_sample *table) {
  const int kk = d->kernel.h * d->kernel.w, plane = g->out_h * g->out_w;
  for (int k = 0; k < kk; k++) {
    const int i = k / d->kernel.w, j = k % d->kernel.w;
    const float *off_y = offset + (size_t)((dg * kk + k) * 2) * plane, *off_x = off_y + plane;
    for (int oh = 0; oh < g->out_h; oh++)
      for (int ow = 0; ow < g->out_w; ow++) {
        const int p = oh * g->out_w + ow;
        const float h = (float)(oh * d->stride.h - d->padding.h + i * d->dilation.h) + off_y[p];
        const float w = (float)(ow * d->stride.w - d->padding.w + j * d->dilation.w) + off_x[p];
        table[(size_t)k * plane + p] = sample_at(g, h, w);
      }
  }
}

/* Columns [C * K, out_h * out_w] of one image: channel c, kernel tap k sampled at its
 * offset (offset channel (g*K + k)*2 + {0: dy, 1: dx}), times mask channel g*K + k. */
typedef struct im2col_job {
  const dcn_impl *d;
  const dcn_geometry *g;
  const float *x, *mask;
  const dcn_sample *tables; /* per deform group */
  float *cols;
} im2col_job;

static void im2col_channel(void *ctx, int c, int thread) {
  (void)thread;
  const im2col_job *j = ctx;
  const int kk = j->d->kernel.h * j->d->kernel.w, plane = j->g->out_h * j->g->out_w;
  const int dg = c / (j->g->channels / j->d->deform_groups);
  const float *src = j->x + (size_t)c * j->g->height * j->g->width;
  const dcn_sample *t = j->tables + (size_t)dg * kk * plane;
  float *dst = j->cols + (size_t)c * kk * plane;
  for (int q = 0; q < kk * plane; q++) {
    const dcn_sample *s = &t[q];
    float v = s->w[0] * src[s->at[0]] + s->w[1] * src[s->at[1]] + s->w[2] * src[s->at[2]] +
              s->w[3] * src[s->at[3]];
    dst[q] = j->mask ? v * j->mask[(size_t)dg * kk * plane + q] : v;
  }
}

static float sigmoid(float v) {
  return 1.0f / (1.0f + expf(-v));
}

/* The mask channels of a DCNv2 offset map, passed through the sigmoid. */
static float *dcn_mask(const float *offset, int dg_k, int plane) {
  float *mask = malloc(sizeof(float) * (size_t)dg_k * plane);
  if (!mask) return NULL;
  const float *src = offset + (size_t)2 * dg_k * plane;
  for (size_t i = 0; i < (size_t)dg_k * plane; i++)
    mask[i] = sigmoid(src[i]);
  return mask;
}

static int dcn_image(cb_module *m, const dcn_geometry *g, const float *x, const float *offset,
                     float *cols, float *y, cb_error *err) {
  const dcn_impl *d = m->impl;
  const int kk = d->kernel.h * d->kernel.w, plane = g->out_h * g->out_w;
  float *mask = NULL;
  if (d->modulated && !(mask = dcn_mask(offset, d->deform_groups * kk, plane)))
    return cb_fail(err, "DCNv2: out of memory");
  dcn_sample *tables = malloc(sizeof(dcn_sample) * (size_t)d->deform_groups * kk * plane);
  if (!tables) {
    free(mask);
    return cb_fail(err, "DCN: out of memory for the sampling table");
  }
  for (int dg = 0; dg < d->deform_groups; dg++)
    sample_table(d, g, offset, dg, tables + (size_t)dg * kk * plane);
  im2col_job job = {.d = d, .g = g, .x = x, .mask = mask, .tables = tables, .cols = cols};
  cb_parallel_for(g->channels, im2col_channel, &job);
  free(tables);
  free(mask);
  const float *weight = cb_f32(cb_module_param(m, "weight")->tensor);
  const int cg = g->channels / d->groups, og = d->out_channels / d->groups, depth = cg * kk;
  for (int gr = 0; gr < d->groups; gr++)
    cb_gemm(false, false, og, plane, depth, 1.0f, weight + (size_t)gr * og * depth, depth,
            cols + (size_t)gr * depth * plane, plane, 0.0f, y + (size_t)gr * og * plane, plane);
  cb_param *bias = d->bias ? cb_module_param(m, "bias") : NULL;
  if (bias)
    for (int o = 0; o < d->out_channels; o++)
      for (int p = 0; p < plane; p++)
        y[(size_t)o * plane + p] += cb_f32(bias->tensor)[o];
  return 0;
}

static int check_input(const dcn_impl *d, const cb_tensor *x, const cb_tensor *offset,
                       cb_error *err) {
  const char *kind = d->modulated ? "DCNv2" : "DCN";
  if (x->dtype != CB_F32 || x->ndim != 4 || x->shape[1] != d->in_channels)
    return cb_fail(err, "%s: expected a float32 N x %d x H x W input", kind, d->in_channels);
  const int64_t want =
      (int64_t)d->deform_groups * d->kernel.h * d->kernel.w * (d->modulated ? 3 : 2);
  if (offset->ndim != 4 || offset->shape[0] != x->shape[0] || offset->shape[1] != want)
    return cb_fail(err, "%s: conv_offset gave %lld channels, expected %lld", kind,
                   (long long)(offset->ndim == 4 ? offset->shape[1] : -1), (long long)want);
  return 0;
}

static cb_tensor *dcn_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const dcn_impl *d = m->impl;
  cb_tensor *offset = cb_module_forward(cb_module_child(m, "conv_offset"), x, err);
  if (!offset) return NULL;
  if (check_input(d, x, offset, err)) {
    cb_tensor_free(offset);
    return NULL;
  }
  const dcn_geometry g = {(int)x->shape[1], (int)x->shape[2], (int)x->shape[3],
                          (int)offset->shape[2], (int)offset->shape[3]};
  const size_t plane = (size_t)g.out_h * g.out_w;
  const size_t cols_n = (size_t)g.channels * d->kernel.h * d->kernel.w * plane;
  cb_tensor *y = cb_tensor_new4(x->shape[0], d->out_channels, g.out_h, g.out_w, err);
  float *cols = y ? malloc(sizeof(float) * (cols_n ? cols_n : 1)) : NULL;
  if (y && !cols) cb_fail(err, "DCN: out of memory for %zu columns", cols_n);
  int rc = cols ? 0 : -1;
  for (int64_t n = 0; rc == 0 && n < x->shape[0]; n++)
    rc = dcn_image(m, &g, cb_f32(x) + n * (size_t)g.channels * g.height * g.width,
                   cb_f32(offset) + n * (size_t)offset->shape[1] * plane, cols,
                   cb_f32(y) + n * (size_t)d->out_channels * plane, err);
  free(cols);
  cb_tensor_free(offset);
  if (rc) {
    cb_tensor_free(y);
    return NULL;
  }
  return y;
}

/* mmcv's reset_parameters / init_weights; conv_offset always starts at zero. */
static int dcn_init_weights(cb_module *m, struct cb_rng *rng, cb_error *err) {
  (void)err;
  const dcn_impl *d = m->impl;
  cb_tensor *weight = cb_module_param(m, "weight")->tensor;
  if (d->modulated) {
    const double stdv = 1.0 / sqrt((double)d->in_channels * d->kernel.h * d->kernel.w);
    cb_init_uniform(weight, -stdv, stdv, rng);
  } else {
    cb_init_kaiming(weight, 0, false, "relu", true, rng);
  }
  cb_param *bias = d->bias ? cb_module_param(m, "bias") : NULL;
  if (bias) cb_init_constant(bias->tensor, 0);
  cb_module *offset = cb_module_child(m, "conv_offset");
  for (int i = 0; i < offset->n_params; i++)
    cb_init_constant(offset->params[i].tensor, 0);
  return 0;
}

static void dcn_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const dcn_impl *d = m->impl;
  snprintf(buf, cap,
           "in_channels=%d, out_channels=%d, kernel_size=(%d, %d), stride=(%d, %d), "
           "padding=(%d, %d), dilation=(%d, %d), groups=%d, deform_groups=%d, bias=%s",
           d->in_channels, d->out_channels, d->kernel.h, d->kernel.w, d->stride.h, d->stride.w,
           d->padding.h, d->padding.w, d->dilation.h, d->dilation.w, d->groups, d->deform_groups,
           d->bias ? "True" : "False");
}

static const cb_module_ops dcn_ops = {
    .kind = "DeformConv2dPack",
    .bases = (const char *const[]){"DeformConv2d", NULL},
    .forward = dcn_forward,
    .extra_repr = dcn_extra_repr,
    .init_weights = dcn_init_weights,
};

static const cb_module_ops dcn_v2_ops = {
    .kind = "ModulatedDeformConv2dPack",
    .bases = (const char *const[]){"ModulatedDeformConv2d", NULL},
    .forward = dcn_forward,
    .extra_repr = dcn_extra_repr,
    .init_weights = dcn_init_weights,
};

static cb_module *build_offset_conv(const dcn_impl *d, const char *path, cb_error *err) {
  const int kk = d->kernel.h * d->kernel.w;
  json_t *cfg = json_pack(
      "{s:s, s:i, s:i, s:[ii], s:[ii], s:[ii], s:[ii], s:b}", "type", "Conv2d", "in_channels",
      d->in_channels, "out_channels", d->deform_groups * kk * (d->modulated ? 3 : 2), "kernel_size",
      d->kernel.h, d->kernel.w, "stride", d->stride.h, d->stride.w, "padding", d->padding.h,
      d->padding.w, "dilation", d->dilation.h, d->dilation.w, "bias", 1);
  char child_path[512];
  snprintf(child_path, sizeof child_path, "%s.conv_offset", path);
  cb_module *conv = cfg ? cb_build("CONV_LAYERS", cfg, NULL, child_path, err) : NULL;
  if (!cfg) cb_fail(err, "%s: out of memory", path);
  json_decref(cfg);
  return conv;
}

static cb_module *build_dcn_common(cb_args *args, bool modulated, cb_error *err) {
  dcn_impl *d = calloc(1, sizeof *d);
  if (!d) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  d->modulated = modulated;
  cb_module *m = NULL;
  if (read_dcn_args(args, d, err) ||
      !(m = cb_module_new(modulated ? &dcn_v2_ops : &dcn_ops, d, err))) {
    free(d);
    return NULL;
  }
  const int64_t wshape[4] = {d->out_channels, d->in_channels / d->groups, d->kernel.h, d->kernel.w};
  const int64_t bshape[1] = {d->out_channels};
  cb_module *offset = NULL;
  if (!cb_module_add_param(m, "weight", 4, wshape, err) ||
      (d->bias && !cb_module_add_param(m, "bias", 1, bshape, err)) ||
      !(offset = build_offset_conv(d, cb_args_path(args), err)) ||
      cb_module_add_child(m, "conv_offset", offset, err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static cb_module *build_dcn(cb_args *args, cb_error *err) {
  return build_dcn_common(args, false, err);
}

static cb_module *build_dcn_v2(cb_args *args, cb_error *err) {
  return build_dcn_common(args, true, err);
}

static const cb_plugin_entry entries[] = {
    {"CONV_LAYERS", "DCN", build_dcn, "conv"},
    {"CONV_LAYERS", "DCNv2", build_dcn_v2, "conv"},
    {NULL},
};

CB_PLUGIN("dcn", "Deformable convolution v1 and v2 (DCN, DCNv2)", entries);
