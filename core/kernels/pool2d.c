#include <math.h>
#include "cbrick/kernels.h"
#include "kernels_internal.h"

typedef struct pool_shape {
  int64_t n, c, h, w, oh, ow;
} pool_shape;

static int check_pool_params(const char *op, const cb_pool2d_params *p, bool is_max,
                             cb_error *err) {
  if (!p) return cb_fail(err, "%s: parameters are missing", op);
  if (p->kernel_h < 1 || p->kernel_w < 1)
    return cb_fail(err, "%s: kernel_size must be >= 1, got %dx%d", op, p->kernel_h, p->kernel_w);
  if (p->stride_h < 1 || p->stride_w < 1)
    return cb_fail(err, "%s: stride must be >= 1, got %dx%d", op, p->stride_h, p->stride_w);
  if (p->pad_h < 0 || p->pad_w < 0)
    return cb_fail(err, "%s: padding must be >= 0, got %dx%d", op, p->pad_h, p->pad_w);
  int dh = is_max ? p->dil_h : 1, dw = is_max ? p->dil_w : 1;
  if (dh < 1 || dw < 1) return cb_fail(err, "%s: dilation must be >= 1, got %dx%d", op, dh, dw);
  /* PyTorch's limit: padding at most half the (undilated) kernel. */
  if (p->pad_h > p->kernel_h / 2 || p->pad_w > p->kernel_w / 2)
    return cb_fail(err, "%s: padding %dx%d must be at most half the kernel size %dx%d", op,
                   p->pad_h, p->pad_w, p->kernel_h, p->kernel_w);
  return 0;
}

static int pool_shape_of(const char *op, const cb_tensor *x, const cb_pool2d_params *p, bool is_max,
                         pool_shape *s, cb_error *err) {
  if (check_pool_params(op, p, is_max, err) || cb_check_nchw(op, "input", x, err)) return -1;
  int dh = is_max ? p->dil_h : 1, dw = is_max ? p->dil_w : 1;
  *s = (pool_shape){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3]};
  s->oh = cb_window_out_size(s->h, p->kernel_h, p->stride_h, p->pad_h, dh, p->ceil_mode);
  s->ow = cb_window_out_size(s->w, p->kernel_w, p->stride_w, p->pad_w, dw, p->ceil_mode);
  if (s->oh < 1 || s->ow < 1)
    return cb_fail(err, "%s: kernel %lldx%lld%s is larger than the padded input %lldx%lld", op,
                   ((long long)p->kernel_h - 1) * dh + 1, ((long long)p->kernel_w - 1) * dw + 1,
                   is_max ? " (dilated)" : "", (long long)s->h + 2LL * p->pad_h,
                   (long long)s->w + 2LL * p->pad_w);
  return 0;
}

static float max_window(const float *plane, const pool_shape *s, const cb_pool2d_params *p,
                        int64_t oh, int64_t ow) {
  float best = -INFINITY;
  for (int i = 0; i < p->kernel_h; i++) {
    int64_t ih = oh * p->stride_h - p->pad_h + (int64_t)i * p->dil_h;
    if (ih < 0 || ih >= s->h) continue;
    for (int j = 0; j < p->kernel_w; j++) {
      int64_t iw = ow * p->stride_w - p->pad_w + (int64_t)j * p->dil_w;
      if (iw < 0 || iw >= s->w) continue;
      float v = plane[ih * s->w + iw];
      if (v > best || isnan(v)) best = v;
      if (isnan(v)) return v;
    }
  }
  return best;
}

/* One axis of an average window: [*lo, *hi) in bounds; returns the length of
 * the window clipped to the padded extent (PyTorch's count_include_pad size). */
static int64_t avg_span(int64_t o, int stride, int pad, int k, int64_t in, int64_t *lo,
                        int64_t *hi) {
  int64_t start = o * stride - pad;
  int64_t end = start + k < in + pad ? start + k : in + pad;
  int64_t padded = end - start;
  *lo = start > 0 ? start : 0;
  *hi = end < in ? end : in;
  return padded;
}

static float avg_window(const float *plane, const pool_shape *s, const cb_pool2d_params *p,
                        int64_t oh, int64_t ow) {
  int64_t h0, h1, w0, w1;
  int64_t ph = avg_span(oh, p->stride_h, p->pad_h, p->kernel_h, s->h, &h0, &h1);
  int64_t pw = avg_span(ow, p->stride_w, p->pad_w, p->kernel_w, s->w, &w0, &w1);
  if (h0 >= h1 || w0 >= w1) return 0.0f;
  float sum = 0.0f;
  for (int64_t ih = h0; ih < h1; ih++)
    for (int64_t iw = w0; iw < w1; iw++)
      sum += plane[ih * s->w + iw];
  int64_t divisor = p->count_include_pad ? ph * pw : (h1 - h0) * (w1 - w0);
  return sum / (float)divisor;
}

typedef float (*window_fn)(const float *plane, const pool_shape *s, const cb_pool2d_params *p,
                           int64_t oh, int64_t ow);

/* Every output of every plane through window. */
static cb_tensor *pool2d(const char *op, bool is_max, window_fn window, const cb_tensor *x,
                         const cb_pool2d_params *p, cb_error *err) {
  pool_shape s;
  if (pool_shape_of(op, x, p, is_max, &s, err)) return NULL;
  cb_tensor *y = cb_tensor_new4(s.n, s.c, s.oh, s.ow, err);
  if (!y) return NULL;
  float *out = cb_f32(y);
  for (int64_t nc = 0; nc < s.n * s.c; nc++) {
    const float *plane = cb_f32(x) + nc * s.h * s.w;
    for (int64_t oh = 0; oh < s.oh; oh++)
      for (int64_t ow = 0; ow < s.ow; ow++)
        *out++ = window(plane, &s, p, oh, ow);
  }
  return y;
}

CB_API cb_tensor *cb_max_pool2d(const cb_tensor *x, const cb_pool2d_params *p, cb_error *err) {
  return pool2d("max_pool2d", true, max_window, x, p, err);
}

CB_API cb_tensor *cb_avg_pool2d(const cb_tensor *x, const cb_pool2d_params *p, cb_error *err) {
  return pool2d("avg_pool2d", false, avg_window, x, p, err);
}
