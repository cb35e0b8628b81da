/* The 12x32 AVX-512 micro-kernel: 24 accumulators, two column vectors and one broadcast
 * weight per step. Only built for and called on processors with AVX-512F. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "plan_gemm.h"

/* CBRICK_NO_AVX512=1 selects the portable path (OpenBLAS) on any processor. */
bool plan_gemm_available(void) {
  const char *off = getenv("CBRICK_NO_AVX512");
  if (off && *off && strcmp(off, "0") != 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

#define TARGET __attribute__((target("avx512f,fma")))

TARGET static inline __mmask16 tail_mask(int n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

TARGET static void finish_row(const gemm_tile *t, int i, __m512 lo, __m512 hi, __mmask16 m0,
                              __mmask16 m1) {
  float *c = t->c + i * t->ldc;
  if (t->last) {
    __m512 b = _mm512_set1_ps(t->bias[i]);
    lo = _mm512_add_ps(lo, b);
    hi = _mm512_add_ps(hi, b);
    if (t->res) {
      const float *r = t->res + i * t->ldc;
      lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(m0, r));
      hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(m1, r + 16));
    }
    if (t->relu) {
      lo = _mm512_max_ps(lo, _mm512_setzero_ps());
      hi = _mm512_max_ps(hi, _mm512_setzero_ps());
    }
  }
  _mm512_mask_storeu_ps(c, m0, lo);
  _mm512_mask_storeu_ps(c + 16, m1, hi);
}

#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define LOAD(i)                                                                                    \
  if (i < t->mr) {                                                                                 \
    c##i##a = _mm512_maskz_loadu_ps(m0, t->c + i * t->ldc);                                        \
    c##i##b = _mm512_maskz_loadu_ps(m1, t->c + i * t->ldc + 16);                                   \
  }
#define STEP(i)                                                                                    \
  {                                                                                                \
    __m512 w = _mm512_set1_ps(a[i]);                                                               \
    c##i##a = _mm512_fmadd_ps(w, b0, c##i##a);                                                     \
    c##i##b = _mm512_fmadd_ps(w, b1, c##i##b);                                                     \
  }
#define STORE(i)                                                                                   \
  if (i < t->mr) finish_row(t, i, c##i##a, c##i##b, m0, m1);

TARGET void plan_gemm_tile(const gemm_tile *t) {
  __mmask16 m0 = tail_mask(t->nr), m1 = tail_mask(t->nr - 16);
  ROWS(DECL)
  if (t->load_c) {
    ROWS(LOAD)
  }
  const float *a = t->a, *b = t->b;
  for (int64_t k = 0; k < t->kc; k++, a += GEMM_MR, b += GEMM_NR) {
    __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    ROWS(STEP)
  }
  ROWS(STORE)
}
