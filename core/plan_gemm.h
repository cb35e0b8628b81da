#ifndef CBRICK_PLAN_GEMM_H
#define CBRICK_PLAN_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* The convolution GEMM: C[MR x NR] tiles over packed weights (MR rows, K-major) and packed
 * columns (NR wide, K-major), with the epilogue applied in registers; kernels for AVX-512
 * (plan_gemm.c) and for AVX2 with FMA (plan_gemm_avx2.c) on the same packing. */
#define GEMM_MR 12
#define GEMM_NR 32

/* The small-map kernel: C^T[pixels <= SMALL_PR x SMALL_NO output channels] over an unpacked
 * input A[k][pixel] (row stride lda, one broadcast per pixel) and weights packed [k][SMALL_NO].
 * Maps of 7x7 and 14x14 pixels split into whole blocks of 7. */
#define SMALL_PR 7
#define SMALL_NO 32

typedef struct small_tile {
  int pixels; /* 1 to SMALL_PR: the valid pixels of a and c */
  int64_t kc, lda;
  const float *a; /* a[k * lda + pixel] */
  const float *w; /* [kc][SMALL_NO] */
  float *c;       /* [pixels][SMALL_NO] */
  bool load_c;
  /* Lines to bring into cache, one per step from the first: the weights of the next pass
   * spread over the passes that reuse these (NULL: prefetch ahead of w instead). */
  const float *prefetch;
  int64_t prefetch_lines;
  int64_t a_ahead; /* > 0: each step also fetches its row of a this many floats ahead */
} small_tile;

void plan_gemm_small(const small_tile *t);

/* A run of n pixels splits into ceil(n / SMALL_PR) blocks of near-equal sizes (with 3 pixels
 * or fewer the kernel runs at half speed); block i starts at small_block_start(n, i). */
static inline int64_t small_blocks(int64_t n) {
  return (n + SMALL_PR - 1) / SMALL_PR;
}

static inline int64_t small_block_start(int64_t n, int64_t i) {
  return i * n / small_blocks(n);
}

/* The kernel over every pixel block of a run of n pixels, for one depth chunk of kc rows:
 * c[pixel][SMALL_NO] (+)= the run's pixels of a times w. The next lines of weights from next
 * (the next depth chunk) are fetched a share per block: all at once, they would need more
 * bandwidth than memory gives while the first block runs. */
typedef struct small_run {
  int64_t n, kc, lda;
  const float *a, *w;
  float *c;
  bool load_c;
  const float *next;
  int64_t next_lines;
} small_run;

void plan_gemm_small_run(const small_run *r);

/* Writes back one block of accumulators [pixels][SMALL_NO] transposed: for rows < SMALL_NO
 * output channels, y[r][p] = acc[p][r] + bias[r] (+ res[r][p]), then ReLU. */
typedef struct small_out {
  const float *acc;
  int rows;
  int64_t pixels, ldy;
  float *y;
  const float *res; /* like y, or NULL */
  const float *bias;
  bool relu;
} small_out;

void plan_small_store(const small_out *o);
/* n floats (a multiple of 16) from src to a line-aligned dst with non-temporal stores, then
 * a store fence. */
void plan_stream_copy(float *dst, const float *src, int64_t n);

typedef struct gemm_tile {
  int64_t kc;
  const float *a;       /* [kc][GEMM_MR] */
  const float *b;       /* [kc][GEMM_NR], or with b_off: row k at b + b_off[k] */
  const int64_t *b_off; /* NULL: b is packed */
  float *c;
  int64_t ldc;
  int mr, nr;        /* valid rows and columns */
  bool load_c;       /* accumulate onto c */
  bool last;         /* apply bias, residual and ReLU, else store the partial sum */
  const float *bias; /* [mr] */
  const float *res;  /* like c, or NULL */
  bool relu;
} gemm_tile;

/* A run of valid input pixels for consecutive slab columns: dst column, source offset in the
 * channel plane, length. Outside the runs a slab row is zero (padding). */
typedef struct slab_run {
  int dst, len;
  int64_t src;
} slab_run;

/* A piece of a slab's output columns within one output row: slab column, length, output row
 * and first output column. */
typedef struct slab_piece {
  int dst, len;
  int64_t oh, ow0;
} slab_piece;

/* The packed path's kernels for one instruction set. The small-map kernel (plan_gemm_small)
 * runs on AVX-512 only; Winograd has a path for each (plan_winograd*.c). */
typedef struct plan_kernels {
  const char *isa; /* "avx512", "avx2" */
  bool avx512;
  void (*tile)(const gemm_tile *t);
  /* rows slab rows of GEMM_NR floats, dst + r * dst_stride, gathered from src + r * src_stride
   * by the runs (consecutive sources stride apart). */
  void (*pack_rows)(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                    int64_t rows, const slab_run *runs, int n_runs, int stride);
} plan_kernels;

extern const plan_kernels plan_kernels_avx512, plan_kernels_avx2;

/* The best kernels this processor runs, capped by CBRICK_ISA (avx512, avx2 or portable), or
 * NULL: the portable path (OpenBLAS on im2col). */
const plan_kernels *plan_kernels_best(void);

#endif
