/* Max pooling in a plan: one task per channel plane and band of output rows, a band per
 * thread (the pool runs the first band's tasks on the first thread, which wrote the input rows
 * they read, and so on); a NaN in a window gives NaN, as in
 * PyTorch. The ResNet stem's 3x3 stride-2 pool has an AVX-512 path. */
#include <immintrin.h>
#include <math.h>

#include "plan_gemm.h"
#include "plan_internal.h"
#include "threads.h"

#define TARGET __attribute__((target("avx512f")))

typedef struct pool_job {
  const plan_node *node;
  const plan_value *in, *out;
  float *scratch; /* one input row per thread */
  size_t row_floats;
  int64_t planes, bands;
} pool_job;

/* The plane and output rows [*y0, *y1) of a task. */
static int64_t task_rows(const pool_job *j, int task, int64_t *y0, int64_t *y1) {
  int64_t band = task / j->planes, oh = j->out->shape[2];
  *y0 = cb_share_start(oh, band, j->bands);
  *y1 = cb_share_start(oh, band + 1, j->bands);
  return task % j->planes;
}

/* At least the padded input row, and 32 floats per 16 outputs for the 3x3 stride-2 path. */
size_t pool_row_floats(const cb_pool2d_params *p, int64_t w, int64_t ow) {
  int64_t span = (ow - 1) * p->stride_w + (int64_t)(p->kernel_w - 1) * p->dil_w + 1;
  int64_t need = p->pad_w + w > span ? p->pad_w + w : span;
  int64_t fast = (ow + 15) / 16 * 32;
  return (size_t)((need > fast ? need : fast) + 15) / 16 * 16;
}

static inline float max_nan(float best, float v) {
  return v > best || v != v ? v : best;
}

/* Max pooling of one channel plane; a NaN in a window gives NaN, as in PyTorch. Each output
 * row first takes the maximum over its window's input rows, then over columns. */
CB_VECTOR static void max_pool_task(void *ctx, int task, int thread) {
  const pool_job *j = ctx;
  const cb_pool2d_params *p = &j->node->pool;
  int64_t h = j->in->shape[2], w = j->in->shape[3], oh = j->out->shape[2], ow = j->out->shape[3];
  int64_t y0, y1, c = task_rows(j, task, &y0, &y1);
  const float *plane = j->in->data + c * h * w;
  float *dst = j->out->data + c * oh * ow + y0 * ow;
  /* col[pad_w + x]: the row maximum at input column x, -inf in the padding either side */
  int64_t span = (ow - 1) * p->stride_w + (int64_t)(p->kernel_w - 1) * p->dil_w + 1;
  float *col = j->scratch + (size_t)thread * j->row_floats;
  for (int64_t x = 0; x < span; x++)
    col[x] = -INFINITY;
  float *mid = col + p->pad_w;
  for (int64_t y = y0; y < y1; y++, dst += ow) {
    for (int64_t x = 0; x < w; x++)
      mid[x] = -INFINITY;
    for (int i = 0; i < p->kernel_h; i++) {
      int64_t ih = y * p->stride_h - p->pad_h + (int64_t)i * p->dil_h;
      if (ih < 0 || ih >= h) continue;
      const float *row = plane + ih * w;
      for (int64_t x = 0; x < w; x++)
        mid[x] = max_nan(mid[x], row[x]);
    }
    for (int64_t x = 0; x < ow; x++)
      dst[x] = col[x * p->stride_w];
    for (int k = 1; k < p->kernel_w; k++)
      for (int64_t x = 0; x < ow; x++)
        dst[x] = max_nan(dst[x], col[x * p->stride_w + (int64_t)k * p->dil_w]);
  }
}

TARGET static inline __m512 max_nan16(__m512 a, __m512 b) {
  __m512 r = _mm512_max_ps(a, b);
  return _mm512_mask_add_ps(r, _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q), a, b);
}

/* Kernel 3x3, stride 2, padding 1, undilated, no window past the input. */
static bool is_3x3_stride2(const cb_pool2d_params *p, int64_t h, int64_t w, int64_t oh,
                           int64_t ow) {
  return p->kernel_h == 3 && p->kernel_w == 3 && p->stride_h == 2 && p->stride_w == 2 &&
         p->pad_h == 1 && p->pad_w == 1 && p->dil_h == 1 && p->dil_w == 1 &&
         oh == (h - 1) / 2 + 1 && ow == (w - 1) / 2 + 1;
}

/* The maximum of the window's input rows, then out[k] = max(m[2k - 1], m[2k], m[2k + 1]):
 * the even and odd columns split by permutes, m[-1] shifted in from the previous vector. */
TARGET static void max_pool_3x3s2(void *ctx, int task, int thread) {
  const pool_job *j = ctx;
  int64_t h = j->in->shape[2], w = j->in->shape[3], oh = j->out->shape[2], ow = j->out->shape[3];
  int64_t y0, y1, c = task_rows(j, task, &y0, &y1);
  const float *plane = j->in->data + c * h * w;
  float *dst = j->out->data + c * oh * ow + y0 * ow;
  float *m = j->scratch + (size_t)thread * j->row_floats;
  int64_t vectors = (ow + 15) / 16;
  __m512 ninf = _mm512_set1_ps(-INFINITY);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i even = _mm512_add_epi32(lane, lane), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t y = y0; y < y1; y++, dst += ow) {
    for (int64_t x = 0; x < 2 * 16 * vectors; x += 16) {
      __mmask16 in = x >= w ? 0 : w - x >= 16 ? 0xFFFF : (__mmask16)((1u << (w - x)) - 1);
      __m512 v = ninf;
      for (int64_t r = 2 * y - 1; r <= 2 * y + 1; r++)
        if (r >= 0 && r < h) v = max_nan16(v, _mm512_mask_loadu_ps(ninf, in, plane + r * w + x));
      _mm512_storeu_ps(m + x, v);
    }
    __m512 prev = ninf;
    for (int64_t k = 0; k < vectors; k++) {
      __m512 lo = _mm512_loadu_ps(m + 32 * k), hi = _mm512_loadu_ps(m + 32 * k + 16);
      __m512 e = _mm512_permutex2var_ps(lo, even, hi), o = _mm512_permutex2var_ps(lo, odd, hi);
      __m512 left = _mm512_castsi512_ps(
          _mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(prev), 15));
      prev = o;
      int64_t left_out = ow - 16 * k;
      __mmask16 keep = left_out >= 16 ? 0xFFFF : (__mmask16)((1u << left_out) - 1);
      _mm512_mask_storeu_ps(dst + 16 * k, keep, max_nan16(max_nan16(left, e), o));
    }
  }
}

void plan_max_pool_run(cb_plan *plan, const plan_node *n, const plan_value *in,
                       const plan_value *out) {
  pool_job j = {.node = n,
                .in = in,
                .out = out,
                .scratch = plan->scratch,
                .row_floats = pool_row_floats(&n->pool, in->shape[3], out->shape[3]),
                .planes = in->shape[0] * in->shape[1],
                .bands = plan->threads < out->shape[2] ? plan->threads : out->shape[2]};
  bool fast = plan->kernels && plan->kernels->avx512 &&
              is_3x3_stride2(&n->pool, in->shape[2], in->shape[3], out->shape[2], out->shape[3]);
  cb_parallel_for((int)(j.bands * j.planes), fast ? max_pool_3x3s2 : max_pool_task, &j);
}
