/* Winograd F(4x4, 3x3): 6x6 input patches, 36 positions, 4x4 outputs per tile; 4x fewer
 * multiplies than the direct convolution (F(2x2) saves 2.25x), for larger maps where the
 * 36 / 9 times larger U is read by enough tiles. The transforms run on 16 tiles per vector. */
#include <immintrin.h>

#include "plan_gemm.h"
#include "plan_simd.h"
#include "plan_winograd.h"
#include "plan_winograd_math.h"

#define WG_POS 36
#define TARGET __attribute__((target("avx512f,fma")))

/* G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
 *      [1/24, -1/12, 1/6], [0, 0, 1]], in double so that U rounds once. */
static void g_times(const double *in, int stride, double *out) {
  double a = in[0], b = in[stride], c = in[2 * stride];
  out[0] = a / 4;
  out[1] = -(a + b + c) / 6;
  out[2] = -(a - b + c) / 6;
  out[3] = a / 24 + b / 12 + c / 6;
  out[4] = a / 24 - b / 12 + c / 6;
  out[5] = c;
}

static void weight_transform(const float *g, float *u) {
  double in[9], t[6][3], col[3], row[6];
  for (int i = 0; i < 9; i++)
    in[i] = g[i];
  for (int j = 0; j < 3; j++) {
    g_times(in + j, 3, row);
    for (int i = 0; i < 6; i++)
      t[i][j] = row[i];
  }
  for (int i = 0; i < 6; i++) {
    for (int j = 0; j < 3; j++)
      col[j] = t[i][j];
    g_times(col, 1, row);
    for (int j = 0; j < 6; j++)
      u[i * 6 + j] = (float)row[j];
  }
}

WG_TRANSFORMS(TARGET, __m512, _mm512)

/* V for tiles [t0, t1) (at most 16): each input of the 6x6 patches gathered, dil apart,
 * outside the map zero. */
TARGET static void gather_tiles(const wg_job *j, const float *x, int64_t t0, int64_t t1, float *v,
                                const wg_layout *l) {
  int64_t plane = j->h * j->w, pos_stride = l->ldp, d = j->dil;
  int32_t off[16];
  __mmask16 row[6], col[6];
  wg_gather_setup(j, t0, t1, 4, 6, off, row, col);
  __m512i base = _mm512_loadu_si512(off), at[6][6];
#pragma GCC unroll 16
  for (int a = 0; a < 6; a++)
#pragma GCC unroll 16
    for (int b = 0; b < 6; b++)
      at[a][b] = _mm512_add_epi32(base, _mm512_set1_epi32((int)(d * (a * j->w + b))));
  __mmask16 store = (__mmask16)((1u << (t1 - t0)) - 1);
  for (int64_t ch = 0; ch < j->channels; ch++, v += l->ldv) {
    const float *src = x + ch * plane;
    __m512 r[6][6];
#pragma GCC unroll 16
    for (int b = 0; b < 6; b++) {
      __m512 dd[6], t[6];
#pragma GCC unroll 16
      for (int a = 0; a < 6; a++)
        dd[a] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), row[a] & col[b], at[a][b], src, 4);
      bt6(dd, t);
#pragma GCC unroll 16
      for (int a = 0; a < 6; a++)
        r[a][b] = t[a];
    }
#pragma GCC unroll 16
    for (int a = 0; a < 6; a++) {
      __m512 out[6];
      bt6(r[a], out);
#pragma GCC unroll 16
      for (int b = 0; b < 6; b++)
        _mm512_mask_storeu_ps(v + (a * 6 + b) * pos_stride, store, out[b]);
    }
  }
}

WG_ROW_TRANSFORMS(6, 4, bt6)

WG_TILE_OUTPUTS(6, 4, at6)

/* The 4x4 outputs of each tile, dil apart, scattered over up to 16 channels. */
TARGET static void scatter_tiles(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                                 int64_t t0, int64_t t1, float *y, const float *res) {
  int64_t d = j->dil;
  __mmask16 mask = (__mmask16)(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
  __m512 bias = _mm512_maskz_loadu_ps(mask, j->node->conv.bias + ch);
  for (int64_t t = t0; t < t1; t++) {
    __m512 out[16];
    tile_outputs(m + (t - t0) * SMALL_NO, ldm, out);
    tile_at at = wg_locate(j, t);
#pragma GCC unroll 16
    for (int a = 0; a < 4; a++)
#pragma GCC unroll 16
      for (int b = 0; b < 4; b++) {
        int64_t oy = d * (4 * at.ty + a) + at.ry, ox = d * (4 * at.tx + b) + at.rx;
        if (oy >= j->oh || ox >= j->ow) continue;
        wg_scatter_output(j, out[a * 4 + b], bias, mask, ch, oy, ox, y, res);
      }
  }
}

/* The 4x4 outputs of tile i, 16 channels per vector, into out[a * 4 + b][i]. */
TARGET static void spill_tile_outputs(const float *m, int64_t ldm, float (*out)[16][16]) {
  __m512 o[16];
  tile_outputs(m, ldm, o);
#pragma GCC unroll 16
  for (int k = 0; k < 16; k++)
    _mm512_store_ps(out[k][0], o[k]);
}

/* y[0..63] = u[b][i] at column 4i + b, with bias, residual and ReLU, the first width stored. */
TARGET static void store_interleaved(const wg_job *j, const __m512 *u, float bias, int width,
                                     float *y, const float *res) {
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  /* pairs: lanes 2k, 2k + 1 = first[k], second[k]; then quads of two pairs */
  __m512i pair =
      _mm512_or_si512(_mm512_srli_epi32(lane, 1),
                      _mm512_slli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(1)), 4));
  __m512i pair_hi = _mm512_add_epi32(pair, _mm512_set1_epi32(8));
  __m512i quad = _mm512_or_si512(
      _mm512_add_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(1)),
                       _mm512_slli_epi32(_mm512_srli_epi32(lane, 2), 1)),
      _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(lane, 1), _mm512_set1_epi32(1)), 4));
  __m512i quad_hi = _mm512_add_epi32(quad, _mm512_set1_epi32(8));
  __m512 p02[2] = {_mm512_permutex2var_ps(u[0], pair, u[1]),
                   _mm512_permutex2var_ps(u[0], pair_hi, u[1])};
  __m512 p13[2] = {_mm512_permutex2var_ps(u[2], pair, u[3]),
                   _mm512_permutex2var_ps(u[2], pair_hi, u[3])};
  __m512 b = _mm512_set1_ps(bias);
  for (int k = 0; k < 4 && 16 * k < width; k++) {
    int left = width - 16 * k;
    __mmask16 mask = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1);
    __m512 v = _mm512_permutex2var_ps(p02[k / 2], k % 2 ? quad_hi : quad, p13[k / 2]);
    epilogue_store(y + 16 * k, mask, v, b, res ? res + 16 * k : NULL, j->node->relu);
  }
}

/* Outputs of `count` tile rows from (ty, tx), n <= 16 tiles in all (count > 1: whole rows of
 * tiles_w) for rows <= 16 channels from ch: each tile's 4x4 outputs, transposed to one vector
 * of tiles per channel and output position, interleaved into output rows. m points at the
 * first tile's 16 channels. */
TARGET static void output_tiles(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                                int64_t ty, int64_t tx, int count, int n, float *y,
                                const float *res) {
  float out[16][16][16] __attribute__((aligned(64)));
  float by_tile[4][16][16] __attribute__((aligned(64)));
  for (int i = 0; i < 16; i++) {
    if (i < n) {
      spill_tile_outputs(m + i * SMALL_NO, ldm, (float(*)[16][16])out[0][i]);
      continue;
    }
#pragma GCC unroll 16
    for (int p = 0; p < 16; p++)
      _mm512_store_ps(out[p][i], _mm512_setzero_ps());
  }
  int64_t plane = j->oh * j->ow, x0 = 4 * tx, per_row = n / count;
  int width = (int)(4 * per_row < j->ow - x0 ? 4 * per_row : j->ow - x0);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int a = 0; a < 4; a++) {
#pragma GCC unroll 16
    for (int b = 0; b < 4; b++) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; i++)
        r[i] = _mm512_load_ps(out[a * 4 + b][i]);
      transpose16(r);
#pragma GCC unroll 16
      for (int c = 0; c < 16; c++)
        _mm512_store_ps(by_tile[b][c], r[c]);
    }
    for (int t = 0; t < count && 4 * (ty + t) + a < j->oh; t++) {
      __m512i first = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(t * per_row)));
      for (int c = 0; c < rows; c++) {
        __m512 u[4];
#pragma GCC unroll 16
        for (int b = 0; b < 4; b++)
          u[b] = _mm512_permutexvar_ps(first, _mm512_load_ps(by_tile[b][c]));
        int64_t at = (ch + c) * plane + (4 * (ty + t) + a) * j->ow + x0;
        store_interleaved(j, u, j->node->conv.bias[ch + c], width, y + at, res ? res + at : NULL);
      }
    }
  }
}

const wg_variant wg4_variant = {.tile = 4,
                                .positions = 36,
                                .side = 6,
                                .step = 4,
                                .weight_transform = weight_transform,
                                .input_segment = transform_segment,
                                .input_gather = gather_tiles,
                                .output_tiles = output_tiles,
                                .output_scatter = scatter_tiles,
                                .input_rows = transform_rows};
