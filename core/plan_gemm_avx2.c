/* The packed path on processors with AVX2 and FMA but no AVX-512: the same 12x32 tiles over
 * the same packed weights and columns as the AVX-512 kernel, each as up to four 6x16 blocks
 * (12 accumulators, two column vectors and one broadcast weight per step: 15 of the 16
 * registers). Only called on processors with AVX2 and FMA. */
#include <immintrin.h>
#include <string.h>

#include "plan_gemm.h"

#define TARGET __attribute__((target("avx2,fma")))
#define BLOCK_ROWS 6
#define BLOCK_COLS 16
/* Weights stream from memory once per run; see plan_gemm.c. */
#define PREFETCH_FLOATS 8192

/* Lanes [0, n) of a vector of 8, as maskload and maskstore take them. */
TARGET static inline __m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One block of a tile: rows [row, row + rows) and columns [col, col + cols) of t, rows <= 6
 * and cols <= 16. */
typedef struct block {
  const gemm_tile *t;
  int row, col, rows, cols;
} block;

/* 8 floats at p, those past n zero (n < 8: a masked load, slow on some processors). */
TARGET static inline __m256 load_part(const float *p, int n) {
  if (n >= 8) return _mm256_loadu_ps(p);
  return n > 0 ? _mm256_maskload_ps(p, lanes(n)) : _mm256_setzero_ps();
}

TARGET static inline void store_part(float *p, int n, __m256 v) {
  if (n >= 8)
    _mm256_storeu_ps(p, v);
  else if (n > 0)
    _mm256_maskstore_ps(p, lanes(n), v);
}

TARGET __attribute__((always_inline)) static inline void finish_row(const block *b, int i,
                                                                    __m256 lo, __m256 hi) {
  const gemm_tile *t = b->t;
  int64_t at = (int64_t)(b->row + i) * t->ldc + b->col;
  if (t->last) {
    __m256 bias = _mm256_set1_ps(t->bias[b->row + i]);
    lo = _mm256_add_ps(lo, bias);
    hi = _mm256_add_ps(hi, bias);
    if (t->res) {
      lo = _mm256_add_ps(lo, load_part(t->res + at, b->cols));
      hi = _mm256_add_ps(hi, load_part(t->res + at + 8, b->cols - 8));
    }
    if (t->relu) {
      lo = _mm256_max_ps(lo, _mm256_setzero_ps());
      hi = _mm256_max_ps(hi, _mm256_setzero_ps());
    }
  }
  store_part(t->c + at, b->cols, lo);
  store_part(t->c + at + 8, b->cols - 8, hi);
}

#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define DECL(i) __m256 c##i##a = _mm256_setzero_ps(), c##i##b = _mm256_setzero_ps();
#define LOAD(i)                                                                                    \
  if ((i) < b->rows) {                                                                             \
    const float *c = t->c + (int64_t)(b->row + (i)) * t->ldc + b->col;                             \
    c##i##a = load_part(c, b->cols);                                                               \
    c##i##b = load_part(c + 8, b->cols - 8);                                                       \
  }
#define STEP(i)                                                                                    \
  {                                                                                                \
    __m256 w = _mm256_broadcast_ss(a + (i));                                                       \
    c##i##a = _mm256_fmadd_ps(w, b0, c##i##a);                                                     \
    c##i##b = _mm256_fmadd_ps(w, b1, c##i##b);                                                     \
  }
#define STORE(i)                                                                                   \
  if ((i) < b->rows) finish_row(b, (i), c##i##a, c##i##b);

/* Row k of the packed columns, or of the columns read in place (gemm_tile.b_off). */
#define B_PACKED(k) (t->b + (k)*GEMM_NR)
#define B_IN_PLACE(k) (t->b + t->b_off[k])

#define BLOCK_KERNEL(name, B_ROW)                                                                  \
  TARGET static void name(const block *b) {                                                        \
    const gemm_tile *t = b->t;                                                                     \
    ROWS6(DECL)                                                                                    \
    if (t->load_c) {                                                                               \
      ROWS6(LOAD)                                                                                  \
    }                                                                                              \
    const float *a = t->a + b->row;                                                                \
    for (int64_t k = 0; k < t->kc; k++, a += GEMM_MR) {                                            \
      _mm_prefetch((const char *)(a + PREFETCH_FLOATS), _MM_HINT_T0);                              \
      const float *row = B_ROW(k) + b->col;                                                        \
      __m256 b0 = _mm256_loadu_ps(row), b1 = _mm256_loadu_ps(row + 8);                             \
      ROWS6(STEP)                                                                                  \
    }                                                                                              \
    ROWS6(STORE)                                                                                   \
  }

BLOCK_KERNEL(block_packed, B_PACKED)
BLOCK_KERNEL(block_in_place, B_IN_PLACE)

#define HDECL(i) __m256 c##i##a = _mm256_setzero_ps();
#define HLOAD(i)                                                                                   \
  if ((i) < b->rows) c##i##a = load_part(t->c + (int64_t)(b->row + (i)) * t->ldc + b->col, b->cols);
#define HSTEP(i) c##i##a = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (i)), b0, c##i##a);
#define HSTORE(i)                                                                                  \
  if ((i) < b->rows) finish_row(b, (i), c##i##a, _mm256_setzero_ps());

/* A block of at most 8 valid columns (a map's last, nearly empty slab). */
#define HALF_KERNEL(name, B_ROW)                                                                   \
  TARGET static void name(const block *b) {                                                        \
    const gemm_tile *t = b->t;                                                                     \
    ROWS6(HDECL)                                                                                   \
    if (t->load_c) {                                                                               \
      ROWS6(HLOAD)                                                                                 \
    }                                                                                              \
    const float *a = t->a + b->row;                                                                \
    for (int64_t k = 0; k < t->kc; k++, a += GEMM_MR) {                                            \
      _mm_prefetch((const char *)(a + PREFETCH_FLOATS), _MM_HINT_T0);                              \
      __m256 b0 = _mm256_loadu_ps(B_ROW(k) + b->col);                                              \
      ROWS6(HSTEP)                                                                                 \
    }                                                                                              \
    ROWS6(HSTORE)                                                                                  \
  }

HALF_KERNEL(half_packed, B_PACKED)
HALF_KERNEL(half_in_place, B_IN_PLACE)

/* Adds (load_c), then applies the epilogue (last) to, column col of the tile's rows. */
static void finish_column(const gemm_tile *t, int col, const float *acc) {
  for (int i = 0; i < t->mr; i++) {
    int64_t at = (int64_t)i * t->ldc + col;
    float v = acc[i] + (t->load_c ? t->c[at] : 0.0f);
    if (t->last) {
      v += t->bias[i] + (t->res ? t->res[at] : 0.0f);
      if (t->relu && v < 0.0f) v = 0.0f;
    }
    t->c[at] = v;
  }
}

/* Column col of every row of a tile on its own (a 7x7 map's 49th column, of whose products two
 * 6x8 blocks would use one in eight): rows 0-7 and 8-11 of the packed weights times one
 * broadcast input, four depth steps in flight (ResNet-50's layer4 8-17% faster on a Zen 3). */
#define COLUMN_KERNEL(name, B_ROW)                                                                 \
  TARGET static void name(const gemm_tile *t, int col) {                                           \
    __m256 lo[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),                 \
                    _mm256_setzero_ps()};                                                          \
    __m128 hi[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};       \
    const float *a = t->a;                                                                         \
    int64_t k = 0;                                                                                 \
    for (; k + 4 <= t->kc; k += 4, a += 4 * GEMM_MR)                                               \
      for (int u = 0; u < 4; u++) {                                                                \
        __m256 x = _mm256_broadcast_ss(B_ROW(k + u) + col);                                        \
        lo[u] = _mm256_fmadd_ps(_mm256_loadu_ps(a + u * GEMM_MR), x, lo[u]);                       \
        hi[u] = _mm_fmadd_ps(_mm_loadu_ps(a + u * GEMM_MR + 8), _mm256_castps256_ps128(x), hi[u]); \
      }                                                                                            \
    for (; k < t->kc; k++, a += GEMM_MR) {                                                         \
      __m256 x = _mm256_broadcast_ss(B_ROW(k) + col);                                              \
      lo[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a), x, lo[0]);                                       \
      hi[0] = _mm_fmadd_ps(_mm_loadu_ps(a + 8), _mm256_castps256_ps128(x), hi[0]);                 \
    }                                                                                              \
    float acc[GEMM_MR];                                                                            \
    _mm256_storeu_ps(acc,                                                                          \
                     _mm256_add_ps(_mm256_add_ps(lo[0], lo[1]), _mm256_add_ps(lo[2], lo[3])));     \
    _mm_storeu_ps(acc + 8, _mm_add_ps(_mm_add_ps(hi[0], hi[1]), _mm_add_ps(hi[2], hi[3])));        \
    finish_column(t, col, acc);                                                                    \
  }

COLUMN_KERNEL(column_packed, B_PACKED)
COLUMN_KERNEL(column_in_place, B_IN_PLACE)

/* The residual that the epilogue adds, fetched while the tile is computed, as in plan_gemm.c
 * (a bottleneck's conv3 on 56x56 and 28x28 maps 3-9% faster on a Zen 3). */
static void prefetch_residual(const gemm_tile *t) {
  for (int i = 0; i < t->mr; i++) {
    _mm_prefetch((const char *)(t->res + (int64_t)i * t->ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(t->res + (int64_t)i * t->ldc + 16), _MM_HINT_T0);
  }
}

/* Rows past t->mr are the packed weights' zero padding, columns past t->nr the slab's (or
 * the padded copy's next floats): computed, never stored. */
static void tile_avx2(const gemm_tile *t) {
  if (t->last && t->res) prefetch_residual(t);
  for (int row = 0; row < t->mr; row += BLOCK_ROWS)
    for (int col = 0; col < t->nr; col += BLOCK_COLS) {
      block b = {.t = t,
                 .row = row,
                 .col = col,
                 .rows = t->mr - row < BLOCK_ROWS ? t->mr - row : BLOCK_ROWS,
                 .cols = t->nr - col < BLOCK_COLS ? t->nr - col : BLOCK_COLS};
      if (b.cols == 1 && t->mr > BLOCK_ROWS) {
        if (row == 0) (t->b_off ? column_in_place : column_packed)(t, col);
      } else if (b.cols <= 8)
        (t->b_off ? half_in_place : half_packed)(&b);
      else
        (t->b_off ? block_in_place : block_packed)(&b);
    }
}

/* d[i] = s[2 * i] for i < n: eight at a time from two vectors while s[2 * i + 15] lies before
 * the run's last element, the rest one by one (a gather and a masked store for the rest made
 * 7- and 14-wide runs slower on a Zen 3). A stride-2 3x3 convolution on 28x28 outputs ran 6-9%
 * faster. */
TARGET static void copy_even(float *d, const float *s, int n) {
  int i = 0;
  for (; i + 8 < n; i += 8) {
    __m256 a = _mm256_loadu_ps(s + 2 * i), b = _mm256_loadu_ps(s + 2 * i + 8);
    __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    _mm256_storeu_ps(d + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even),
                                                                   _MM_SHUFFLE(3, 1, 2, 0))));
  }
  for (; i < n; i++)
    d[i] = s[2 * i];
}

/* Stride 1: runs copied as they are; stride 2 by copy_even; others element by element. */
TARGET static void pack_row(float *dst, const float *src, const slab_run *runs, int n_runs,
                            int stride) {
  if (n_runs == 1 && runs[0].dst == 0 && runs[0].len == GEMM_NR && stride == 1) {
    const float *s = src + runs[0].src;
    for (int i = 0; i < GEMM_NR; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_loadu_ps(s + i));
    return;
  }
  for (int i = 0; i < GEMM_NR; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_setzero_ps());
  for (int r = 0; r < n_runs; r++) {
    const float *s = src + runs[r].src;
    float *d = dst + runs[r].dst;
    if (stride == 1)
      memcpy(d, s, (size_t)runs[r].len * sizeof(float));
    else if (stride == 2)
      copy_even(d, s, runs[r].len);
    else
      for (int i = 0; i < runs[r].len; i++)
        d[i] = s[(int64_t)i * stride];
  }
}

static void pack_rows_avx2(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                           int64_t rows, const slab_run *runs, int n_runs, int stride) {
  for (int64_t row = 0; row < rows; row++, dst += dst_stride, src += src_stride)
    pack_row(dst, src, runs, n_runs, stride);
}

const plan_kernels plan_kernels_avx2 = {
    .isa = "avx2", .avx512 = false, .tile = tile_avx2, .pack_rows = pack_rows_avx2};
