#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick/kernels.h"
#include "kernels_internal.h"

/* im2col works on bands of output rows so its buffer stays near this many floats. */
#define CONV_COLS_BUDGET ((int64_t)1 << 22)

typedef struct conv_shape {
  int64_t n, c, h, w;    /* input */
  int64_t o, cg, kh, kw; /* weight: out channels, in channels per group, kernel */
  int64_t og;            /* out channels per group */
  int64_t oh, ow;        /* output */
  int64_t k;             /* gemm depth: cg * kh * kw */
} conv_shape;

static int check_params(const cb_conv2d_params *p, cb_error *err) {
  if (!p) return cb_fail(err, "conv2d: parameters are missing");
  if (p->stride_h < 1 || p->stride_w < 1)
    return cb_fail(err, "conv2d: stride must be >= 1, got %dx%d", p->stride_h, p->stride_w);
  if (p->dil_h < 1 || p->dil_w < 1)
    return cb_fail(err, "conv2d: dilation must be >= 1, got %dx%d", p->dil_h, p->dil_w);
  if (p->pad_h < 0 || p->pad_w < 0)
    return cb_fail(err, "conv2d: padding must be >= 0, got %dx%d", p->pad_h, p->pad_w);
  if (p->groups < 1) return cb_fail(err, "conv2d: groups must be >= 1, got %d", p->groups);
  return 0;
}

static int check_bias(const cb_tensor *bias, int64_t o, cb_error *err) {
  if (!bias) return 0;
  if (bias->dtype != CB_F32 || bias->ndim != 1 || bias->shape[0] != o) {
    char shape[128];
    cb_shape_format(bias->ndim, bias->shape, shape, sizeof shape);
    return cb_fail(err, "conv2d: bias must be float32 of shape %lld, got %s %s", (long long)o,
                   cb_dtype_name(bias->dtype), shape);
  }
  return 0;
}

static int conv_shape_of(const cb_tensor *x, const cb_tensor *wt, const cb_tensor *bias,
                         const cb_conv2d_params *p, conv_shape *s, cb_error *err) {
  if (check_params(p, err) || cb_check_nchw("conv2d", "input", x, err) ||
      cb_check_nchw("conv2d", "weight", wt, err))
    return -1;
  *s = (conv_shape){.n = x->shape[0],
                    .c = x->shape[1],
                    .h = x->shape[2],
                    .w = x->shape[3],
                    .o = wt->shape[0],
                    .cg = wt->shape[1],
                    .kh = wt->shape[2],
                    .kw = wt->shape[3]};
  if (s->o < 1 || s->cg < 1 || s->kh < 1 || s->kw < 1)
    return cb_fail(err, "conv2d: weight has an empty dimension");
  if (s->o % p->groups)
    return cb_fail(err, "conv2d: %lld output channels are not divisible by groups=%d",
                   (long long)s->o, p->groups);
  if (s->cg * p->groups != s->c)
    return cb_fail(err,
                   "conv2d: input has %lld channels but weight expects %lld (%lld per group x %d "
                   "groups)",
                   (long long)s->c, (long long)s->cg * p->groups, (long long)s->cg, p->groups);
  if (s->kh > INT_MAX || s->kw > INT_MAX) return cb_fail(err, "conv2d: kernel is too large");
  if (check_bias(bias, s->o, err)) return -1;
  s->og = s->o / p->groups;
  s->oh = cb_window_out_size(s->h, (int)s->kh, p->stride_h, p->pad_h, p->dil_h, false);
  s->ow = cb_window_out_size(s->w, (int)s->kw, p->stride_w, p->pad_w, p->dil_w, false);
  if (s->oh < 1 || s->ow < 1)
    return cb_fail(err,
                   "conv2d: kernel %lldx%lld (dilated) is larger than the padded input %lldx%lld",
                   (long long)p->dil_h * (s->kh - 1) + 1, (long long)p->dil_w * (s->kw - 1) + 1,
                   (long long)s->h + 2LL * p->pad_h, (long long)s->w + 2LL * p->pad_w);
  int64_t kk, ohw;
  if (!cb_mul_ok(s->cg, s->kh, &kk) || !cb_mul_ok(kk, s->kw, &s->k) ||
      !cb_mul_ok(s->oh, s->ow, &ohw) || s->k > INT_MAX || ohw > INT_MAX || s->og > INT_MAX ||
      s->h * s->w > INT_MAX)
    return cb_fail(err, "conv2d: sizes exceed the supported range (int)");
  return 0;
}

/* Columns for output rows [r0, r1) of one image group: cols[k][(r - r0) * ow + c]. */
static void im2col_rows(const float *img, const conv_shape *s, const cb_conv2d_params *p,
                        int64_t r0, int64_t r1, float *cols) {
  int64_t ncols = (r1 - r0) * s->ow;
  for (int64_t c = 0; c < s->cg; c++) {
    const float *plane = img + c * s->h * s->w;
    for (int64_t i = 0; i < s->kh; i++) {
      for (int64_t j = 0; j < s->kw; j++) {
        float *row = cols + ((c * s->kh + i) * s->kw + j) * ncols;
        int64_t dx = j * p->dil_w - p->pad_w;
        for (int64_t r = r0; r < r1; r++, row += s->ow) {
          int64_t ih = r * p->stride_h - p->pad_h + i * p->dil_h;
          if (ih < 0 || ih >= s->h) {
            memset(row, 0, (size_t)s->ow * sizeof *row);
            continue;
          }
          const float *src = plane + ih * s->w;
          for (int64_t q = 0; q < s->ow; q++) {
            int64_t iw = q * p->stride_w + dx;
            row[q] = iw >= 0 && iw < s->w ? src[iw] : 0.0f;
          }
        }
      }
    }
  }
}

static void fill_bias(float *out, const conv_shape *s, const cb_tensor *bias) {
  int64_t plane = s->oh * s->ow;
  for (int64_t n = 0; n < s->n; n++)
    for (int64_t o = 0; o < s->o; o++) {
      float b = cb_f32(bias)[o];
      float *dst = out + (n * s->o + o) * plane;
      for (int64_t q = 0; q < plane; q++)
        dst[q] = b;
    }
}

/* A 1x1 stride-1 unpadded convolution is a plain matrix product on the input. */
static void conv_direct(const float *x, const float *wt, float *out, const conv_shape *s,
                        int groups, float beta) {
  int64_t hw = s->h * s->w;
  for (int64_t n = 0; n < s->n; n++)
    for (int g = 0; g < groups; g++)
      cb_gemm(false, false, (int)s->og, (int)hw, (int)s->k, 1.0f, wt + g * s->og * s->k, (int)s->k,
              x + (n * s->c + g * s->cg) * hw, (int)hw, beta, out + (n * s->o + g * s->og) * hw,
              (int)hw);
}

static int conv_im2col(const float *x, const float *wt, float *out, const conv_shape *s,
                       const cb_conv2d_params *p, float beta, cb_error *err) {
  int64_t ohw = s->oh * s->ow;
  int64_t per_row = s->k * s->ow;
  if (per_row < 1 || s->oh < 1) return 0;
  int64_t band = CONV_COLS_BUDGET / per_row;
  if (band < 1) band = 1;
  if (band > s->oh) band = s->oh;
  float *cols = malloc((size_t)(s->k * band * s->ow) * sizeof *cols);
  if (!cols) return cb_fail(err, "conv2d: out of memory for %lld columns", (long long)s->k);
  for (int64_t n = 0; n < s->n; n++)
    for (int g = 0; g < p->groups; g++) {
      const float *img = x + (n * s->c + g * s->cg) * s->h * s->w;
      float *dst = out + (n * s->o + g * s->og) * ohw;
      for (int64_t r0 = 0; r0 < s->oh; r0 += band) {
        int64_t r1 = r0 + band < s->oh ? r0 + band : s->oh;
        int ncols = (int)((r1 - r0) * s->ow);
        im2col_rows(img, s, p, r0, r1, cols);
        cb_gemm(false, false, (int)s->og, ncols, (int)s->k, 1.0f, wt + g * s->og * s->k, (int)s->k,
                cols, ncols, beta, dst + r0 * s->ow, (int)ohw);
      }
    }
  free(cols);
  return 0;
}

CB_API cb_tensor *cb_conv2d(const cb_tensor *x, const cb_tensor *weight, const cb_tensor *bias,
                            const cb_conv2d_params *p, cb_error *err) {
  conv_shape s;
  if (conv_shape_of(x, weight, bias, p, &s, err)) return NULL;
  cb_tensor *y = cb_tensor_new4(s.n, s.o, s.oh, s.ow, err);
  if (!y) return NULL;
  if (s.n == 0) return y;
  float beta = 0.0f;
  if (bias) {
    fill_bias(cb_f32(y), &s, bias);
    beta = 1.0f;
  }
  bool direct = s.kh == 1 && s.kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
                p->pad_w == 0;
  if (direct) {
    conv_direct(cb_f32(x), cb_f32(weight), cb_f32(y), &s, p->groups, beta);
  } else if (conv_im2col(cb_f32(x), cb_f32(weight), cb_f32(y), &s, p, beta, err)) {
    cb_tensor_free(y);
    return NULL;
  }
  return y;
}
