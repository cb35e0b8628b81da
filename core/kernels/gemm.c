/* cb_gemm: on processors with AVX-512 or AVX2 the plan's packed micro-kernels on the thread
 * pool (both operands packed once, tiles handed out to the threads), else and for small
 * products OpenBLAS. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "../plan_gemm.h"
#include "../threads.h"
#include "cbrick/kernels.h"

#define MIN_FLOPS (1 << 21)    /* smaller products stay with OpenBLAS */
#define SLICE_FLOATS (1 << 16) /* packed rows or columns of one task per depth pass: 256 KiB */
#define KC 512                 /* depth per pass: a block's slice stays in L1 across panels */

typedef struct gemm_job {
  bool trans_a, trans_b;
  int m, n, k;
  float alpha;
  const float *a, *b;
  int lda, ldb;
  float *c;
  int ldc;
  bool load_c;
  const plan_kernels *kernels;
  float *pa, *pb; /* [m blocks][k][GEMM_MR], [n panels][k][GEMM_NR] */
  int blocks, panels, mc, nc, m_tasks, n_tasks;
} gemm_job;

static int64_t ceil_div(int64_t v, int64_t d) {
  return (v + d - 1) / d;
}

/* alpha * op(A) rows [12 mb, 12 mb + 12), zero past m. */
static void pack_block(const gemm_job *j, int mb) {
  float *dst = j->pa + (size_t)mb * j->k * GEMM_MR;
  int rows = j->m - mb * GEMM_MR < GEMM_MR ? j->m - mb * GEMM_MR : GEMM_MR;
  /* element (r, p) of the block at a + r * row + p * col */
  size_t row = j->trans_a ? 1 : (size_t)j->lda, col = j->trans_a ? (size_t)j->lda : 1;
  const float *a = j->a + (size_t)mb * GEMM_MR * row;
  for (int p = 0; p < j->k; p++, dst += GEMM_MR) {
    for (int r = 0; r < rows; r++)
      dst[r] = j->alpha * a[r * row + p * col];
    for (int r = rows; r < GEMM_MR; r++)
      dst[r] = 0.0f;
  }
}

/* op(B) columns [32 nb, 32 nb + 32), zero past n. */
static void pack_panel(const gemm_job *j, int nb) {
  float *dst = j->pb + (size_t)nb * j->k * GEMM_NR;
  int cols = j->n - nb * GEMM_NR < GEMM_NR ? j->n - nb * GEMM_NR : GEMM_NR;
  for (int p = 0; p < j->k; p++, dst += GEMM_NR) {
    if (j->trans_b)
      for (int c = 0; c < cols; c++)
        dst[c] = j->b[(size_t)(nb * GEMM_NR + c) * j->ldb + p];
    else
      memcpy(dst, j->b + (size_t)p * j->ldb + nb * GEMM_NR, (size_t)cols * sizeof(float));
    memset(dst + cols, 0, (size_t)(GEMM_NR - cols) * sizeof(float));
  }
}

static void pack_task(void *ctx, int task, int thread) {
  (void)thread;
  const gemm_job *j = ctx;
  if (task < j->blocks)
    pack_block(j, task);
  else
    pack_panel(j, task - j->blocks);
}

static void tile_task(void *ctx, int task, int thread) {
  (void)thread;
  const gemm_job *j = ctx;
  int m0 = task / j->n_tasks * j->mc, n0 = task % j->n_tasks * j->nc;
  int m1 = m0 + j->mc < j->m ? m0 + j->mc : j->m, n1 = n0 + j->nc < j->n ? n0 + j->nc : j->n;
  for (int k0 = 0; k0 < j->k; k0 += KC)
    for (int i = m0; i < m1; i += GEMM_MR)
      for (int c = n0; c < n1; c += GEMM_NR) {
        gemm_tile t = {.kc = j->k - k0 < KC ? j->k - k0 : KC,
                       .a = j->pa + ((size_t)(i / GEMM_MR) * j->k + k0) * GEMM_MR,
                       .b = j->pb + ((size_t)(c / GEMM_NR) * j->k + k0) * GEMM_NR,
                       .c = j->c + (size_t)i * j->ldc + c,
                       .ldc = j->ldc,
                       .mr = m1 - i < GEMM_MR ? m1 - i : GEMM_MR,
                       .nr = n1 - c < GEMM_NR ? n1 - c : GEMM_NR,
                       .load_c = j->load_c || k0 > 0};
        j->kernels->tile(&t);
      }
}

/* Tiles of whole blocks and panels, each slice of packed A and B at most SLICE_FLOATS, and
 * at least two tasks per thread where the product allows. */
static void choose_tiles(gemm_job *j) {
  int per = SLICE_FLOATS / (j->k < KC ? j->k : KC);
  int bm = per / GEMM_MR < 1 ? 1 : per / GEMM_MR, bn = per / GEMM_NR < 1 ? 1 : per / GEMM_NR;
  bm = bm > j->blocks ? j->blocks : bm;
  bn = bn > j->panels ? j->panels : bn;
  int want = 2 * cb_threads_active();
  while (ceil_div(j->blocks, bm) * ceil_div(j->panels, bn) < want && (bm > 1 || bn > 1)) {
    if (bn >= bm && bn > 1)
      bn = (bn + 1) / 2;
    else
      bm = (bm + 1) / 2;
  }
  j->mc = bm * GEMM_MR;
  j->nc = bn * GEMM_NR;
  j->m_tasks = (int)ceil_div(j->m, j->mc);
  j->n_tasks = (int)ceil_div(j->n, j->nc);
}

static void scale_rows(float *c, int m, int n, int ldc, float beta) {
  for (int i = 0; i < m; i++)
    for (int q = 0; q < n; q++)
      c[(size_t)i * ldc + q] *= beta;
}

/* False when the packed path does not apply or its buffers cannot be had. */
static bool packed_gemm(gemm_job *j, float beta) {
  j->kernels = plan_kernels_best();
  if (!j->kernels || j->k <= 0 || j->m < 4 || j->n < 16 || 2.0 * j->m * j->n * j->k < MIN_FLOPS)
    return false;
  j->blocks = (int)ceil_div(j->m, GEMM_MR);
  j->panels = (int)ceil_div(j->n, GEMM_NR);
  j->pa = malloc((size_t)j->blocks * GEMM_MR * j->k * sizeof(float));
  j->pb = malloc((size_t)j->panels * GEMM_NR * j->k * sizeof(float));
  if (!j->pa || !j->pb) {
    free(j->pa);
    free(j->pb);
    return false;
  }
  if (beta != 0.0f && beta != 1.0f) scale_rows(j->c, j->m, j->n, j->ldc, beta);
  j->load_c = beta != 0.0f;
  choose_tiles(j);
  cb_parallel_for(j->blocks + j->panels, pack_task, j);
  cb_parallel_for(j->m_tasks * j->n_tasks, tile_task, j);
  free(j->pa);
  free(j->pb);
  return true;
}

CB_API void cb_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                    int lda, const float *b, int ldb, float beta, float *c, int ldc) {
  if (m <= 0 || n <= 0) return;
  gemm_job j = {.trans_a = trans_a,
                .trans_b = trans_b,
                .m = m,
                .n = n,
                .k = k,
                .alpha = alpha,
                .a = a,
                .b = b,
                .lda = lda,
                .ldb = ldb,
                .c = c,
                .ldc = ldc};
  if (packed_gemm(&j, beta)) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
