/* Winograd F(2x2, 3x3): 4x4 input patches, 16 positions, 2x2 outputs per tile; 2.25x fewer
 * multiplies than the direct convolution. The transforms run on 16 tiles per vector: inputs
 * gathered from two loads per patch row (padding masked), outputs transposed back into rows. */
#include <immintrin.h>
#include <string.h>

#include "plan_gemm.h"
#include "plan_simd.h"
#include "plan_winograd.h"

#define WG_POS 16
#define TARGET __attribute__((target("avx512f,fma")))

/* U = G g G^T for one 3x3 kernel, G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]]. */
static void weight_transform(const float *g, float *u) {
  float t[4][3];
  for (int j = 0; j < 3; j++) {
    t[0][j] = g[j];
    t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
    t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
    t[3][j] = g[6 + j];
  }
  for (int i = 0; i < 4; i++) {
    u[i * 4 + 0] = t[i][0];
    u[i * 4 + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
    u[i * 4 + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
    u[i * 4 + 3] = t[i][2];
  }
}

/* B^T d for four vectors, B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]. */
TARGET static inline void bt4(const __m512 *d, __m512 *r) {
  r[0] = _mm512_sub_ps(d[0], d[2]);
  r[1] = _mm512_add_ps(d[1], d[2]);
  r[2] = _mm512_sub_ps(d[2], d[1]);
  r[3] = _mm512_sub_ps(d[1], d[3]);
}

WG_ROW_TRANSFORMS(4, 2, bt4)

/* The dilated case: V for tiles [t0, t1) (at most 16), each input of the 4x4 patches
 * gathered, dil apart. */
TARGET static void gather_tiles(const wg_job *j, const float *x, int64_t t0, int64_t t1, float *v,
                                const wg_layout *l) {
  int64_t plane = j->h * j->w, pos_stride = l->ldp, d = j->dil;
  int32_t off[16];
  __mmask16 row[4], col[4];
  wg_gather_setup(j, t0, t1, 2, 4, off, row, col);
  __m512i base = _mm512_loadu_si512(off);
  __mmask16 store = (__mmask16)((1u << (t1 - t0)) - 1);
  for (int64_t ch = 0; ch < j->channels; ch++, v += l->ldv) {
    const float *src = x + ch * plane;
    __m512 e[4][4];
#pragma GCC unroll 16
    for (int a = 0; a < 4; a++) {
      __m512 dd[4];
#pragma GCC unroll 16
      for (int b = 0; b < 4; b++)
        dd[b] = _mm512_mask_i32gather_ps(
            _mm512_setzero_ps(), row[a] & col[b],
            _mm512_add_epi32(base, _mm512_set1_epi32((int)(d * (a * j->w + b)))), src, 4);
      bt4(dd, e[a]);
    }
    store_columns(e, v, pos_stride, store);
  }
}

/* Writes the 2x2 outputs of n <= 16 tiles of `count` tile rows from (ty, tx) (count > 1:
 * whole rows) for rows <= 16 channels from ch: out[a * 2 + b][i] holds output (a, b) of tile
 * i, 16 channels per vector; they are transposed to one vector of tiles per channel, then
 * interleaved into output rows with bias, residual and ReLU. */
TARGET void wg2_store_tiles(const wg_job *j, __m512 out[4][16], int64_t ch, int rows, int64_t ty,
                            int64_t tx, int count, int n, float *y, const float *res) {
#pragma GCC unroll 16
  for (int k = 0; k < 4; k++)
    transpose16(out[k]);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i half = _mm512_srli_epi32(lane, 1),
          odd = _mm512_slli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(1)), 4);
  __m512i lo = _mm512_or_si512(half, odd), hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
  int64_t plane = j->oh * j->ow, x0 = 2 * tx, per_row = n / count;
  int64_t width = 2 * per_row < j->ow - x0 ? 2 * per_row : j->ow - x0;
  __mmask16 m0 = (__mmask16)(width >= 16 ? 0xFFFF : (1u << width) - 1);
  __mmask16 m1 = (__mmask16)(width >= 32 ? 0xFFFF : width <= 16 ? 0 : (1u << (width - 16)) - 1);
  for (int t = 0; t < count; t++) {
    __m512i first = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(t * per_row)));
    for (int a = 0; a < 2 && 2 * (ty + t) + a < j->oh; a++)
      for (int c = 0; c < rows; c++) {
        __m512 bias = _mm512_set1_ps(j->node->conv.bias[ch + c]);
        __m512 even = _mm512_permutexvar_ps(first, out[2 * a][c]);
        __m512 odd = _mm512_permutexvar_ps(first, out[2 * a + 1][c]);
        int64_t at = (ch + c) * plane + (2 * (ty + t) + a) * j->ow + x0;
        epilogue_store(y + at, m0, _mm512_permutex2var_ps(even, lo, odd), bias,
                       res ? res + at : NULL, j->node->relu);
        epilogue_store(y + at + 16, m1, _mm512_permutex2var_ps(even, hi, odd), bias,
                       res ? res + at + 16 : NULL, j->node->relu);
      }
  }
}

/* A^T m for four vectors, A^T = [[1,1,1,0],[0,1,-1,-1]]: two outputs. */
TARGET static inline void at4(const __m512 *m, __m512 *o) {
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
  o[1] = _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]);
}

WG_TILE_OUTPUTS(4, 2, at4)

/* Outputs of n <= 16 tiles of `count` tile rows from (ty, tx), m pointing at the first tile's
 * 16 channels. */
TARGET static void output_tiles(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                                int64_t ty, int64_t tx, int count, int n, float *y,
                                const float *res) {
  __m512 out[4][16];
  wg_tiles_outputs(m, ldm, n, 4, tile_outputs, out);
  wg2_store_tiles(j, out, ch, rows, ty, tx, count, n, y, res);
}

/* The dilated case: the 2x2 outputs of each tile, dil apart, scattered over 16 channels. */
TARGET static void scatter_tiles(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                                 int64_t t0, int64_t t1, float *y, const float *res) {
  int64_t d = j->dil;
  __mmask16 mask = (__mmask16)(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
  __m512 bias = _mm512_maskz_loadu_ps(mask, j->node->conv.bias + ch);
  for (int64_t t = t0; t < t1; t++) {
    __m512 o[4];
    tile_outputs(m + (t - t0) * SMALL_NO, ldm, o);
    tile_at at = wg_locate(j, t);
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        int64_t oy = d * (2 * at.ty + a) + at.ry, ox = d * (2 * at.tx + b) + at.rx;
        if (oy >= j->oh || ox >= j->ow) continue;
        wg_scatter_output(j, o[a * 2 + b], bias, mask, ch, oy, ox, y, res);
      }
  }
}

const wg_variant wg2_variant = {.tile = 2,
                                .positions = 16,
                                .side = 4,
                                .step = 2,
                                .weight_transform = weight_transform,
                                .input_segment = transform_segment,
                                .input_gather = gather_tiles,
                                .output_tiles = output_tiles,
                                .output_scatter = scatter_tiles,
                                .input_rows = transform_rows};
