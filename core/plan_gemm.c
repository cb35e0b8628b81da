/* The 12x32 AVX-512 micro-kernel: 24 accumulators, two column vectors and one broadcast
 * weight per step. Only called on processors with AVX-512F. */
#include <assert.h>
#include <immintrin.h>

#include "plan_gemm.h"
#include "plan_simd.h"

#define TARGET __attribute__((target("avx512f,fma")))
/* Weights stream from memory once per run (a ResNet-50 holds 100 MiB of them); the hardware
 * prefetchers alone reach a third of the bandwidth that the small maps need. Prefetches past
 * the end of a buffer are harmless. */
#define PREFETCH_FLOATS 8192
/* The small-map kernel reads its input a block of pixels at a time from kc rows at once, more
 * streams than the hardware prefetchers follow: over a run of several blocks, each step fetches
 * its row two lines ahead (ResNet-50's 1x1 layers on 56x56 maps ran 10-20% faster, those on
 * 14x14 ones 3-5%). */
#define SMALL_A_AHEAD 32

TARGET static inline __mmask16 tail_mask(int n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

TARGET __attribute__((always_inline)) static inline void
finish_row(const gemm_tile *t, int i, __m512 lo, __m512 hi, __mmask16 m0, __mmask16 m1) {
  float *c = t->c + (i)*t->ldc;
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

/* The residual that the epilogue adds, fetched while the tile is computed: it was written
 * layers ago and has left L1 and often L2; loading it into the accumulators first stalled every
 * tile of a bottleneck's last convolution on its miss. */
TARGET static inline void prefetch_rows(const gemm_tile *t) {
  for (int i = 0; i < t->mr; i++) {
    _mm_prefetch((const char *)(t->res + i * t->ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(t->res + i * t->ldc + 16), _MM_HINT_T0);
  }
}

#define ROWS4(X) X(0) X(1) X(2) X(3)
#define ROWS8(X) ROWS4(X) X(4) X(5) X(6) X(7)
#define ROWS12(X) ROWS8(X) X(8) X(9) X(10) X(11)
#define DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define LOAD(i)                                                                                    \
  if ((i) < t->mr) {                                                                               \
    c##i##a = _mm512_maskz_loadu_ps(m0, t->c + (i)*t->ldc);                                        \
    c##i##b = _mm512_maskz_loadu_ps(m1, t->c + (i)*t->ldc + 16);                                   \
  }
#define STEP(i)                                                                                    \
  {                                                                                                \
    __m512 w = _mm512_set1_ps(a[(i)]);                                                             \
    c##i##a = _mm512_fmadd_ps(w, b0, c##i##a);                                                     \
    c##i##b = _mm512_fmadd_ps(w, b1, c##i##b);                                                     \
  }
#define STORE(i)                                                                                   \
  if ((i) < t->mr) finish_row(t, (i), c##i##a, c##i##b, m0, m1);

/* Row k of the packed columns, or of the columns read in place (gemm_tile.b_off). */
#define B_PACKED(k) (t->b + (k)*GEMM_NR)
#define B_IN_PLACE(k) (t->b + t->b_off[k])

/* The kernel over the rows that ROWS lists (weights still GEMM_MR apart per step). */
#define GEMM_KERNEL(name, ROWS, B_ROW)                                                             \
  TARGET static void name(const gemm_tile *t) {                                                    \
    __mmask16 m0 = tail_mask(t->nr), m1 = tail_mask(t->nr - 16);                                   \
    ROWS(DECL)                                                                                     \
    if (t->load_c) {                                                                               \
      ROWS(LOAD)                                                                                   \
    }                                                                                              \
    if (t->last && t->res) prefetch_rows(t);                                                       \
    const float *a = t->a;                                                                         \
    for (int64_t k = 0; k < t->kc; k++, a += GEMM_MR) {                                            \
      _mm_prefetch((const char *)(a + PREFETCH_FLOATS), _MM_HINT_T0);                              \
      const float *b = B_ROW(k);                                                                   \
      __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);                                \
      ROWS(STEP)                                                                                   \
    }                                                                                              \
    ROWS(STORE)                                                                                    \
  }

GEMM_KERNEL(tile_rows4, ROWS4, B_PACKED)
GEMM_KERNEL(tile_rows8, ROWS8, B_PACKED)
GEMM_KERNEL(tile_rows12, ROWS12, B_PACKED)
GEMM_KERNEL(tile_rows4_in_place, ROWS4, B_IN_PLACE)
GEMM_KERNEL(tile_rows8_in_place, ROWS8, B_IN_PLACE)
GEMM_KERNEL(tile_rows12_in_place, ROWS12, B_IN_PLACE)

#define HDECL(i) __m512 c##i##a = _mm512_setzero_ps();
#define HLOAD(i)                                                                                   \
  if ((i) < t->mr) c##i##a = _mm512_maskz_loadu_ps(m0, t->c + (i)*t->ldc);
#define HSTEP(i) c##i##a = _mm512_fmadd_ps(_mm512_set1_ps(a[(i)]), b0, c##i##a);
#define HSTORE(i)                                                                                  \
  if ((i) < t->mr) finish_row(t, (i), c##i##a, _mm512_setzero_ps(), m0, 0);

/* The kernel for a slab of at most 16 valid columns (a map's last, half-empty slab). */
#define GEMM_KERNEL_HALF(name, ROWS, B_ROW)                                                        \
  TARGET static void name(const gemm_tile *t) {                                                    \
    __mmask16 m0 = tail_mask(t->nr);                                                               \
    ROWS(HDECL)                                                                                    \
    if (t->load_c) {                                                                               \
      ROWS(HLOAD)                                                                                  \
    }                                                                                              \
    if (t->last && t->res) prefetch_rows(t);                                                       \
    const float *a = t->a;                                                                         \
    for (int64_t k = 0; k < t->kc; k++, a += GEMM_MR) {                                            \
      _mm_prefetch((const char *)(a + PREFETCH_FLOATS), _MM_HINT_T0);                              \
      __m512 b0 = _mm512_loadu_ps(B_ROW(k));                                                       \
      ROWS(HSTEP)                                                                                  \
    }                                                                                              \
    ROWS(HSTORE)                                                                                   \
  }

GEMM_KERNEL_HALF(half_rows4, ROWS4, B_PACKED)
GEMM_KERNEL_HALF(half_rows8, ROWS8, B_PACKED)
GEMM_KERNEL_HALF(half_rows12, ROWS12, B_PACKED)
GEMM_KERNEL_HALF(half_rows4_in_place, ROWS4, B_IN_PLACE)
GEMM_KERNEL_HALF(half_rows8_in_place, ROWS8, B_IN_PLACE)
GEMM_KERNEL_HALF(half_rows12_in_place, ROWS12, B_IN_PLACE)

typedef void (*tile_kernel)(const gemm_tile *);

/* By rows (4, 8, 12), width (16 or 32 columns) and columns packed or read in place. */
static const tile_kernel tile_kernels[3][2][2] = {
    {{tile_rows4, tile_rows4_in_place}, {half_rows4, half_rows4_in_place}},
    {{tile_rows8, tile_rows8_in_place}, {half_rows8, half_rows8_in_place}},
    {{tile_rows12, tile_rows12_in_place}, {half_rows12, half_rows12_in_place}}};

/* A last block of 4 or 8 rows (64, 128, 256 channels) runs a shorter kernel instead of
 * multiplying zero rows, a slab of 16 columns or fewer a narrower one. */
static void tile_avx512(const gemm_tile *t) {
  int rows = t->mr <= 4 ? 0 : t->mr <= 8 ? 1 : 2;
  tile_kernels[rows][t->nr <= 16][t->b_off != NULL](t);
}

#define PIXELS1(X) X(0)
#define PIXELS2(X) PIXELS1(X) X(1)
#define PIXELS3(X) PIXELS2(X) X(2)
#define PIXELS4(X) PIXELS3(X) X(3)
#define PIXELS5(X) PIXELS4(X) X(4)
#define PIXELS6(X) PIXELS5(X) X(5)
#define PIXELS7(X) PIXELS6(X) X(6)
#define SDECL(i) __m512 s##i##a = _mm512_setzero_ps(), s##i##b = _mm512_setzero_ps();
#define SLOAD(i)                                                                                   \
  s##i##a = _mm512_loadu_ps(t->c + (i)*SMALL_NO);                                                  \
  s##i##b = _mm512_loadu_ps(t->c + (i)*SMALL_NO + 16);
#define SSTEP(i)                                                                                   \
  {                                                                                                \
    __m512 x = _mm512_set1_ps(a[(i)]);                                                             \
    s##i##a = _mm512_fmadd_ps(x, w0, s##i##a);                                                     \
    s##i##b = _mm512_fmadd_ps(x, w1, s##i##b);                                                     \
  }
#define SSTORE(i)                                                                                  \
  _mm512_storeu_ps(t->c + (i)*SMALL_NO, s##i##a);                                                  \
  _mm512_storeu_ps(t->c + (i)*SMALL_NO + 16, s##i##b);

/* The kernel over the pixels that PIXELS lists. */
#define SMALL_KERNEL(name, PIXELS)                                                                 \
  TARGET static void name(const small_tile *t) {                                                   \
    PIXELS(SDECL)                                                                                  \
    if (t->load_c) {                                                                               \
      PIXELS(SLOAD)                                                                                \
    }                                                                                              \
    const float *a = t->a, *w = t->w;                                                              \
    for (int64_t k = 0; k < t->kc; k++, a += t->lda, w += SMALL_NO) {                              \
      if (t->prefetch) {                                                                           \
        if (k < t->prefetch_lines)                                                                 \
          _mm_prefetch((const char *)(t->prefetch + 16 * k), _MM_HINT_T0);                         \
      } else {                                                                                     \
        _mm_prefetch((const char *)(w + PREFETCH_FLOATS), _MM_HINT_T0);                            \
        _mm_prefetch((const char *)(w + PREFETCH_FLOATS + 16), _MM_HINT_T0);                       \
      }                                                                                            \
      if (t->a_ahead) _mm_prefetch((const char *)(a + t->a_ahead), _MM_HINT_T0);                   \
      __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);                                \
      PIXELS(SSTEP)                                                                                \
    }                                                                                              \
    PIXELS(SSTORE)                                                                                 \
  }

SMALL_KERNEL(small_pixels1, PIXELS1)
SMALL_KERNEL(small_pixels2, PIXELS2)
SMALL_KERNEL(small_pixels3, PIXELS3)
SMALL_KERNEL(small_pixels4, PIXELS4)
SMALL_KERNEL(small_pixels5, PIXELS5)
SMALL_KERNEL(small_pixels6, PIXELS6)
SMALL_KERNEL(small_pixels7, PIXELS7)

void plan_gemm_small(const small_tile *t) {
  static void (*const by_pixels[SMALL_PR + 1])(const small_tile *) = {
      NULL,          small_pixels1, small_pixels2, small_pixels3,
      small_pixels4, small_pixels5, small_pixels6, small_pixels7};
  assert(t->pixels >= 1 && t->pixels <= SMALL_PR);
  by_pixels[t->pixels](t);
}

void plan_gemm_small_run(const small_run *r) {
  int64_t blocks = small_blocks(r->n);
  for (int64_t i = 0; i < blocks; i++) {
    int64_t p = small_block_start(r->n, i);
    int64_t l0 = r->next_lines * i / blocks, l1 = r->next_lines * (i + 1) / blocks;
    small_tile t = {.pixels = (int)(small_block_start(r->n, i + 1) - p),
                    .kc = r->kc,
                    .lda = r->lda,
                    .a = r->a + p,
                    .w = r->w,
                    .c = r->c + p * SMALL_NO,
                    .load_c = r->load_c,
                    .prefetch = blocks > 1 ? r->next + 16 * l0 : NULL,
                    .prefetch_lines = l1 - l0,
                    .a_ahead = blocks > 1 ? SMALL_A_AHEAD : 0};
    plan_gemm_small(&t);
  }
}

/* 16 output channels from ch0 for 16 pixels from p: the accumulators transposed in registers,
 * then bias, residual and ReLU per channel row. */
TARGET static void store_block(const small_out *o, int ch0, int64_t p) {
  int n = (int)(o->pixels - p < 16 ? o->pixels - p : 16);
  int rows = o->rows - ch0 < 16 ? o->rows - ch0 : 16;
  __mmask16 m = tail_mask(n);
  __m512 r[16];
  for (int i = 0; i < 16; i++)
    r[i] = i < n ? _mm512_loadu_ps(o->acc + (p + i) * SMALL_NO + ch0) : _mm512_setzero_ps();
  transpose16(r);
  for (int c = 0; c < rows; c++) {
    int64_t at = (ch0 + c) * o->ldy + p;
    epilogue_store(o->y + at, m, r[c], _mm512_set1_ps(o->bias[ch0 + c]),
                   o->res ? o->res + at : NULL, o->relu);
  }
}

TARGET void plan_small_store(const small_out *o) {
  for (int ch0 = 0; ch0 < o->rows; ch0 += 16)
    for (int64_t p = 0; p < o->pixels; p += 16)
      store_block(o, ch0, p);
}

TARGET void plan_stream_copy(float *dst, const float *src, int64_t n) {
  assert(!((uintptr_t)dst & 63) && n % 16 == 0);
  for (int64_t i = 0; i < n; i += 16)
    _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
  _mm_sfence();
}

typedef struct run_masks {
  __mmask16 lo, hi;
  __mmask16 even[4]; /* stride 2: the source elements of lo (two vectors) and hi (two) */
  int64_t base;      /* source of slab column 0 */
} run_masks;

TARGET static __mmask16 span_mask(int from, int to) {
  return (__mmask16)(tail_mask(to) & ~tail_mask(from));
}

/* Bits 0..7 of m moved to the even bits 0, 2, .., 14. */
__attribute__((target("bmi2"))) static __mmask16 spread_even(unsigned m) {
  return (__mmask16)_pdep_u32(m, 0x5555u);
}

/* Stride 2: lanes of two loaded vectors' even elements, under the lane mask. */
TARGET static inline __m512 even_lanes(__m512 acc, __mmask16 lanes, const __mmask16 *even,
                                       const float *s, __m512i pick) {
  __m512 v0 = _mm512_maskz_loadu_ps(even[0], s), v1 = _mm512_maskz_loadu_ps(even[1], s + 16);
  return _mm512_mask_mov_ps(acc, lanes, _mm512_permutex2var_ps(v0, pick, v1));
}

__attribute__((target("avx512f,fma,bmi2"))) static void
pack_rows_avx512(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                 const slab_run *runs, int n_runs, int stride) {
  run_masks m[GEMM_NR];
  for (int r = 0; r < n_runs; r++) {
    int d0 = runs[r].dst, d1 = d0 + runs[r].len;
    __mmask16 lo = span_mask(d0, d1), hi = span_mask(d0 - 16, d1 - 16);
    m[r] = (run_masks){.lo = lo, .hi = hi, .base = runs[r].src - (int64_t)d0 * stride};
    if (stride == 2)
      for (int i = 0; i < 4; i++)
        m[r].even[i] = spread_even((i < 2 ? lo : hi) >> (i % 2 * 8) & 0xFF);
  }
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(stride));
  __m512i idx_hi = _mm512_add_epi32(idx, _mm512_set1_epi32(16 * stride));
  __m512i pick = _mm512_add_epi32(lane, lane);
  for (int64_t row = 0; row < rows; row++, dst += dst_stride, src += src_stride) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    for (int r = 0; r < n_runs; r++) {
      const float *s = src + m[r].base;
      if (stride == 1) {
        lo = _mm512_mask_loadu_ps(lo, m[r].lo, s);
        hi = _mm512_mask_loadu_ps(hi, m[r].hi, s + 16);
      } else if (stride == 2) {
        if (m[r].lo) lo = even_lanes(lo, m[r].lo, m[r].even, s, pick);
        if (m[r].hi) hi = even_lanes(hi, m[r].hi, m[r].even + 2, s + 32, pick);
      } else {
        if (m[r].lo) lo = _mm512_mask_i32gather_ps(lo, m[r].lo, idx, s, 4);
        if (m[r].hi) hi = _mm512_mask_i32gather_ps(hi, m[r].hi, idx_hi, s, 4);
      }
    }
    _mm512_storeu_ps(dst, lo);
    _mm512_storeu_ps(dst + 16, hi);
  }
}

const plan_kernels plan_kernels_avx512 = {
    .isa = "avx512", .avx512 = true, .tile = tile_avx512, .pack_rows = pack_rows_avx512};
