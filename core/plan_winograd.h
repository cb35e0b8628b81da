#ifndef CBRICK_PLAN_WINOGRAD_H
#define CBRICK_PLAN_WINOGRAD_H

/* Winograd convolutions F(m x m, 3x3): per m x m output tile, one product per position of
 * transformed weights U = G g G^T and transformed inputs V = B^T d B, then Y = A^T M A.
 * F(2x2) (16 positions), F(3x3) (25), F(4x4) (36) and F(2x2) at stride 2 (25) share one
 * driver (plan_winograd.c); each brings its transforms (plan_winograd2.c, plan_winograd3.c,
 * plan_winograd4.c, plan_winograd2s2.c). */
#include <assert.h>
#include <immintrin.h>
#include <stdint.h>

#include "plan_gemm.h"
#include "plan_internal.h"

#define WG_MAX_POS 36

typedef struct wg_job {
  cb_plan *plan;
  const plan_node *node;
  const float *x, *res;
  float *y;
  int64_t c, h, w, oh, ow, tiles_h, tiles_w, tiles, n_tiles, m_tiles;
  int64_t channels; /* input channels that the input transforms run over */
  int dil;
  int image; /* shared V: the image being run */
  /* Per thread, the tile chunk (image * n_tiles + chunk) whose V its scratch holds, or -1: a
   * thread that runs several channel blocks of one chunk transforms its inputs once. */
  int64_t *v_held;
} wg_job;

/* Where tile t lies: its phase (ry, rx) and its place (ty, tx) in the phase's grid. A dilated
 * convolution splits into dil x dil independent ones over the phases of the map (rows and
 * columns of one residue modulo dil); every phase has the same grid of tiles. */
typedef struct tile_at {
  int64_t ry, rx, ty, tx;
} tile_at;

static inline tile_at wg_locate(const wg_job *j, int64_t t) {
  int64_t per_phase = j->tiles_h * j->tiles_w, phase = t / per_phase, r = t % per_phase;
  return (tile_at){phase / j->dil, phase % j->dil, r / j->tiles_w, r % j->tiles_w};
}

/* Where a task's V and M lie in its scratch: V[p][ch][tile] with ldv floats per channel row
 * and ldp per position, M[p][tile][SMALL_NO] with ldm floats per position. The position
 * strides are an odd number of cache lines, so that the positions' rows fall in different
 * cache sets. */
typedef struct wg_layout {
  int64_t ldv, ldp, ldm;
} wg_layout;

/* Lanes e of a 16-float load at column x0 + e that fall inside [0, w). */
static inline __mmask16 wg_inside(int64_t x0, int64_t w) {
  int64_t lo = -x0 < 0 ? 0 : -x0, hi = w - x0 > 16 ? 16 : w - x0;
  if (hi <= lo) return 0;
  return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* The dilated case, for tiles [t0, t1) (at most 16) of size tile: the first input of each
 * tile's patch (its offset in the channel plane, off[i]) and, per patch row or column a <
 * span, the tiles whose row or column a lies inside the map (row[a], col[a]). */
static inline void wg_gather_setup(const wg_job *j, int64_t t0, int64_t t1, int tile, int span,
                                   int32_t *off, __mmask16 *row, __mmask16 *col) {
  const plan_conv *c = &j->node->conv;
  int64_t d = j->dil;
  for (int a = 0; a < span; a++)
    row[a] = col[a] = 0;
  for (int i = 0; i < 16; i++)
    off[i] = 0;
  for (int i = 0; i < t1 - t0; i++) {
    tile_at at = wg_locate(j, t0 + i);
    int64_t y0 = d * tile * at.ty + at.ry - c->p.pad_h, x0 = d * tile * at.tx + at.rx - c->p.pad_w;
    off[i] = (int32_t)(y0 * j->w + x0);
    for (int a = 0; a < span; a++) {
      row[a] |= (__mmask16)((y0 + d * a >= 0 && y0 + d * a < j->h) << i);
      col[a] |= (__mmask16)((x0 + d * a >= 0 && x0 + d * a < j->w) << i);
    }
  }
}

/* The input rows of sixteen patches along a row, split into the patches' columns: a reader
 * per step from one patch to the next (wg_row2, wg_row3, wg_row4), each with _init(reader,
 * x0, w) for patches whose first column is x0 in rows of w inputs, and _columns(reader, row,
 * side, d) for columns b < side of the patches in the row from row[0] (the first patch's first
 * column), one vector of patches each, zero outside the map. */

/* Step 2 (F(2x2)): two loads at the patches' column 0 and two at column 2, split into even
 * and odd columns. */
typedef struct wg_row2 {
  __mmask16 m[4];
  __m512i even, odd;
} wg_row2;

__attribute__((target("avx512f"), always_inline)) static inline void
wg_row2_init(wg_row2 *r, int64_t x0, int64_t w) {
#pragma GCC unroll 16
  for (int q = 0; q < 4; q++)
    r->m[q] = wg_inside(x0 + 16 * (q % 2) + 2 * (q / 2), w);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  r->even = _mm512_add_epi32(lane, lane);
  r->odd = _mm512_add_epi32(r->even, _mm512_set1_epi32(1));
}

__attribute__((target("avx512f"), always_inline)) static inline void
wg_row2_columns(const wg_row2 *r, const float *row, int side, __m512 *d) {
  (void)side;
#pragma GCC unroll 16
  for (int h = 0; h < 2; h++) {
    __m512 lo = _mm512_maskz_loadu_ps(r->m[2 * h], row + 2 * h);
    __m512 hi = _mm512_maskz_loadu_ps(r->m[2 * h + 1], row + 2 * h + 16);
    d[2 * h] = _mm512_permutex2var_ps(lo, r->even, hi);
    d[2 * h + 1] = _mm512_permutex2var_ps(lo, r->odd, hi);
  }
}

/* Step 3 (F(3x3)): four loads, lane i of column b taken from element 3i + b. */
typedef struct wg_row3 {
  __mmask16 m[4], high[5];
  __m512i idx[5];
} wg_row3;

__attribute__((target("avx512f"), always_inline)) static inline void
wg_row3_init(wg_row3 *r, int64_t x0, int64_t w) {
#pragma GCC unroll 16
  for (int q = 0; q < 4; q++)
    r->m[q] = wg_inside(x0 + 16 * q, w);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#pragma GCC unroll 16
  for (int b = 0; b < 5; b++) {
    __m512i at =
        _mm512_add_epi32(_mm512_mullo_epi32(lane, _mm512_set1_epi32(3)), _mm512_set1_epi32(b));
    r->high[b] = _mm512_cmpge_epi32_mask(at, _mm512_set1_epi32(32));
    r->idx[b] = _mm512_and_si512(at, _mm512_set1_epi32(31));
  }
}

__attribute__((target("avx512f"), always_inline)) static inline void
wg_row3_columns(const wg_row3 *r, const float *row, int side, __m512 *d) {
  __m512 q[4];
#pragma GCC unroll 16
  for (int k = 0; k < 4; k++)
    q[k] = _mm512_maskz_loadu_ps(r->m[k], row + 16 * k);
#pragma GCC unroll 16
  for (int b = 0; b < side; b++)
    d[b] = _mm512_mask_blend_ps(r->high[b], _mm512_permutex2var_ps(q[0], r->idx[b], q[1]),
                                _mm512_permutex2var_ps(q[2], r->idx[b], q[3]));
}

/* Columns 4i + b (i < 16) of the 64 floats in l[0..3]; idx = 4i + b modulo 32. */
__attribute__((target("avx512f"))) static inline __m512 wg_every_fourth(const __m512 *l,
                                                                        __m512i idx) {
  return _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(l[0], idx, l[1]),
                              _mm512_permutex2var_ps(l[2], idx, l[3]));
}

/* Step 4 (F(4x4), and F(2x2) at stride 2): eight loads at the patches' columns 0 and 4. */
typedef struct wg_row4 {
  __mmask16 m[8];
  __m512i idx[4];
} wg_row4;

__attribute__((target("avx512f"), always_inline)) static inline void
wg_row4_init(wg_row4 *r, int64_t x0, int64_t w) {
#pragma GCC unroll 16
  for (int q = 0; q < 8; q++)
    r->m[q] = wg_inside(x0 + 16 * (q % 4) + 4 * (q / 4), w);
  __m512i four =
      _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 2);
#pragma GCC unroll 16
  for (int b = 0; b < 4; b++)
    r->idx[b] =
        _mm512_and_si512(_mm512_add_epi32(four, _mm512_set1_epi32(b)), _mm512_set1_epi32(31));
}

__attribute__((target("avx512f"), always_inline)) static inline void
wg_row4_columns(const wg_row4 *r, const float *row, int side, __m512 *d) {
  __m512 q[8];
#pragma GCC unroll 16
  for (int k = 0; k < 8; k++)
    q[k] = _mm512_maskz_loadu_ps(r->m[k], row + 16 * (k % 4) + 4 * (k / 4));
#pragma GCC unroll 16
  for (int b = 0; b < side; b++)
    d[b] = wg_every_fourth(q + 4 * (b / 4), r->idx[b % 4]);
}

/* Whole tile rows in one vector (wg_variant.input_rows): lanes [r * tiles_w, (r + 1) *
 * tiles_w) hold tile row r; column b of tile k's patch is element step * k + b of the 32
 * floats loaded from each input row (the patches' first column at -pad_w). */
typedef struct wg_rows {
  int count, step;
  __mmask16 lanes[16], inside[2], store;
  __m512i idx[16][6];
} wg_rows;

__attribute__((target("avx512f"), always_inline)) static inline void
wg_rows_init(wg_rows *r, const wg_job *j, int count, int step, int side) {
  int tw = (int)j->tiles_w;
  int64_t x0 = -j->node->conv.p.pad_w;
  *r = (wg_rows){.count = count, .step = step};
  r->inside[0] = wg_inside(x0, j->w);
  r->inside[1] = wg_inside(x0 + 16, j->w);
  r->store = (__mmask16)((1u << (count * tw)) - 1);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int t = 0; t < count; t++) {
    r->lanes[t] = (__mmask16)(((1u << tw) - 1) << (t * tw));
    __m512i at = _mm512_mullo_epi32(_mm512_sub_epi32(lane, _mm512_set1_epi32(t * tw)),
                                    _mm512_set1_epi32(step));
    for (int b = 0; b < side; b++)
      r->idx[t][b] =
          _mm512_and_si512(_mm512_add_epi32(at, _mm512_set1_epi32(b)), _mm512_set1_epi32(31));
  }
}

/* Columns b < side (the side given to wg_rows_init) of patch row a of the tile rows from ty,
 * in one channel plane x: d[b], zero where the row lies outside the map. */
__attribute__((target("avx512f"), always_inline)) static inline void
wg_rows_columns(const wg_rows *r, const wg_job *j, const float *x, int64_t ty, int a, int side,
                __m512 *d) {
#pragma GCC unroll 16
  for (int b = 0; b < side; b++)
    d[b] = _mm512_setzero_ps();
  for (int t = 0; t < r->count; t++) {
    int64_t y = r->step * (ty + t) - j->node->conv.p.pad_h + a;
    if (y < 0 || y >= j->h) continue;
    const float *row = x + y * j->w - j->node->conv.p.pad_w;
    __m512 q0 = _mm512_maskz_loadu_ps(r->inside[0], row);
    __m512 q1 = _mm512_maskz_loadu_ps(r->inside[1], row + 16);
#pragma GCC unroll 16
    for (int b = 0; b < side; b++)
      d[b] = _mm512_mask_mov_ps(d[b], r->lanes[t], _mm512_permutex2var_ps(q0, r->idx[t][b], q1));
  }
}

/* A variant's column pass, V = (B^T d) B from the row transforms e[a] = B^T (patch row a)
 * (store_columns), and its input transforms of whole tile rows (transform_rows) and of n <= 16
 * tiles of one tile row from tile (ty, tx) (transform_segment, read by wg_row##STEP), for
 * patches of SIDE inputs, STEP apart, whose B^T on SIDE vectors is BT. */
#define WG_ROW_TRANSFORMS(SIDE, STEP, BT)                                                          \
  __attribute__((target("avx512f,fma"), always_inline)) static inline void store_columns(          \
      __m512 e[SIDE][SIDE], float *v, int64_t pos_stride, __mmask16 store) {                       \
    _Pragma("GCC unroll 16") for (int b = 0; b < SIDE; b++) {                                      \
      __m512 col[SIDE], r[SIDE];                                                                   \
      _Pragma("GCC unroll 16") for (int a = 0; a < SIDE; a++) col[a] = e[a][b];                    \
      BT(col, r);                                                                                  \
      _Pragma("GCC unroll 16") for (int a = 0; a < SIDE; a++)                                      \
          _mm512_mask_storeu_ps(v + (a * SIDE + b) * pos_stride, store, r[a]);                     \
    }                                                                                              \
  }                                                                                                \
  __attribute__((target("avx512f,fma"))) static void transform_rows(                               \
      const wg_job *j, const float *x, int64_t ty, int count, float *v, const wg_layout *l) {      \
    wg_rows rows;                                                                                  \
    wg_rows_init(&rows, j, count, STEP, SIDE);                                                     \
    for (int64_t ch = 0; ch < j->channels; ch++, v += l->ldv) {                                    \
      __m512 e[SIDE][SIDE];                                                                        \
      _Pragma("GCC unroll 16") for (int a = 0; a < SIDE; a++) {                                    \
        __m512 d[SIDE];                                                                            \
        wg_rows_columns(&rows, j, x + ch * j->h * j->w, ty, a, SIDE, d);                           \
        BT(d, e[a]);                                                                               \
      }                                                                                            \
      store_columns(e, v, l->ldp, rows.store);                                                     \
    }                                                                                              \
  }                                                                                                \
  __attribute__((target("avx512f,fma"))) static void transform_segment(                            \
      const wg_job *j, const float *x, int64_t ty, int64_t tx, int n, float *v,                    \
      const wg_layout *l) {                                                                        \
    int64_t y0 = STEP * ty - j->node->conv.p.pad_h, x0 = STEP * tx - j->node->conv.p.pad_w;        \
    wg_row##STEP reader;                                                                           \
    wg_row##STEP##_init(&reader, x0, j->w);                                                        \
    bool row_in[SIDE];                                                                             \
    _Pragma("GCC unroll 16") for (int a = 0; a < SIDE; a++) row_in[a] =                            \
        y0 + a >= 0 && y0 + a < j->h;                                                              \
    __mmask16 store = (__mmask16)((1u << n) - 1);                                                  \
    for (int64_t ch = 0; ch < j->channels; ch++, v += l->ldv) {                                    \
      const float *plane = x + ch * j->h * j->w;                                                   \
      __m512 e[SIDE][SIDE];                                                                        \
      _Pragma("GCC unroll 16") for (int a = 0; a < SIDE; a++) {                                    \
        __m512 d[SIDE];                                                                            \
        if (row_in[a]) {                                                                           \
          wg_row##STEP##_columns(&reader, plane + (y0 + a) * j->w + x0, SIDE, d);                  \
          BT(d, e[a]);                                                                             \
        } else {                                                                                   \
          _Pragma("GCC unroll 16") for (int b = 0; b < SIDE; b++) e[a][b] = _mm512_setzero_ps();   \
        }                                                                                          \
      }                                                                                            \
      store_columns(e, v, l->ldp, store);                                                          \
    }                                                                                              \
  }

/* A variant's output transform of one tile (tile_outputs): the OUTS x OUTS outputs A^T M A,
 * o[a * OUTS + b], 16 channels per vector, from its SIDE x SIDE positions ldm floats apart,
 * where A^T on SIDE vectors is AT. */
#define WG_TILE_OUTPUTS(SIDE, OUTS, AT)                                                            \
  __attribute__((target("avx512f,fma"), always_inline)) static inline void tile_outputs(           \
      const float *m, int64_t ldm, __m512 *o) {                                                    \
    __m512 r[OUTS][SIDE];                                                                          \
    _Pragma("GCC unroll 16") for (int b = 0; b < SIDE; b++) {                                      \
      __m512 s[SIDE], t[OUTS];                                                                     \
      _Pragma("GCC unroll 16") for (int a = 0; a < SIDE; a++) s[a] =                               \
          _mm512_loadu_ps(m + (a * SIDE + b) * ldm);                                               \
      AT(s, t);                                                                                    \
      _Pragma("GCC unroll 16") for (int a = 0; a < OUTS; a++) r[a][b] = t[a];                      \
    }                                                                                              \
    _Pragma("GCC unroll 16") for (int a = 0; a < OUTS; a++) AT(r[a], o + a * OUTS);                \
  }

/* out[k][i] for k < outputs (at most 9: F(2x2) and F(3x3)): output k of tile i, 16 channels
 * per vector, as `tile` computes it from the tile's positions ldm floats apart (tile i's
 * channels at m + i * SMALL_NO); zero for tiles i >= n. */
__attribute__((target("avx512f"), always_inline)) static inline void
wg_tiles_outputs(const float *m, int64_t ldm, int n, int outputs,
                 void (*tile)(const float *, int64_t, __m512 *), __m512 (*out)[16]) {
  assert(outputs <= 9);
  for (int i = 0; i < 16; i++) {
    __m512 o[9];
    if (i < n) {
      tile(m + i * SMALL_NO, ldm, o);
#pragma GCC unroll 16
      for (int k = 0; k < outputs; k++)
        out[k][i] = o[k];
      continue;
    }
#pragma GCC unroll 16
    for (int k = 0; k < outputs; k++)
      out[k][i] = _mm512_setzero_ps();
  }
}

/* One Winograd variant's transforms, on 16 tiles per vector. */
typedef struct wg_variant {
  int tile;      /* outputs per tile side */
  int positions; /* (tile + 2)^2 at stride 1 */
  int side;      /* input patch side */
  int step;      /* input columns from one tile's patch to the next: tile x stride */
  /* U for one 3x3 kernel g */
  void (*weight_transform)(const float *g, float *u);
  /* V of n <= 16 tiles of one tile row from tile (ty, tx) (undilated), or of tiles [t0, t1)
   * (at most 16, dilated) */
  void (*input_segment)(const wg_job *j, const float *x, int64_t ty, int64_t tx, int n, float *v,
                        const wg_layout *l);
  void (*input_gather)(const wg_job *j, const float *x, int64_t t0, int64_t t1, float *v,
                       const wg_layout *l);
  /* Y with the epilogue for rows <= 16 channels from ch: n <= 16 tiles of `count` tile rows
   * from tile (ty, tx) (count > 1: whole rows, tx = 0), or tiles [t0, t1) (dilated); m points
   * at the first tile's channels, positions ldm apart */
  void (*output_tiles)(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                       int64_t ty, int64_t tx, int count, int n, float *y, const float *res);
  void (*output_scatter)(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                         int64_t t0, int64_t t1, float *y, const float *res);
  /* V of `count` whole tile rows from ty, tiles_w * count <= 16 (undilated maps of few tiles
   * per row, which would leave most of a vector empty one row at a time) */
  void (*input_rows)(const wg_job *j, const float *x, int64_t ty, int count, float *v,
                     const wg_layout *l);
} wg_variant;

extern const wg_variant wg2_variant, wg3_variant, wg4_variant, wg2s2_variant;

/* The variant that a Winograd convolution runs (its tile and stride). */
const wg_variant *plan_winograd_variant(const plan_conv *c);

/* The parts of whole input channels that a shared V is transformed in, a few per thread:
 * part k holds channels [cb_share_start(cg, k, parts), cb_share_start(cg, k + 1, parts)). */
int plan_winograd_v_parts(const cb_plan *plan, const plan_node *n);

/* Writes the 2x2 output tiles of `count` tile rows with the epilogue (plan_winograd2.c):
 * out[a * 2 + b][i] is output (a, b) of tile i for 16 channels from ch (rows of them valid). */
void wg2_store_tiles(const wg_job *j, __m512 out[4][16], int64_t ch, int rows, int64_t ty,
                     int64_t tx, int count, int n, float *y, const float *res);

/* The dilated outputs: v (16 channels from ch, rows of them valid) plus bias, residual and
 * ReLU, at output (oy, ox) of each channel plane. */
__attribute__((target("avx512f"))) static inline void
wg_scatter_output(const wg_job *j, __m512 v, __m512 bias, __mmask16 mask, int64_t ch, int64_t oy,
                  int64_t ox, float *y, const float *res) {
  int64_t plane = j->oh * j->ow, where = ch * plane + oy * j->ow + ox;
  __m512i lanes =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32((int)plane));
  v = _mm512_add_ps(v, bias);
  if (res)
    v = _mm512_add_ps(v,
                      _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, lanes, res + where, 4));
  if (j->node->relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
  _mm512_mask_i32scatter_ps(y + where, mask, lanes, v, 4);
}

#endif
