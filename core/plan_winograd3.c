/* Winograd F(3x3, 3x3): 5x5 input patches 3 apart, 25 positions, 3x3 outputs per tile; 3.24x
 * fewer multiplies than the direct convolution. On 14x14 maps its 5x5 tiles need 20% fewer
 * products than F(2x2)'s 7x7 (625 against 784 per channel pair). Interpolation points 0, 1,
 * -1, 2 and infinity:
 *   B^T = [[2,-1,-2,1,0], [0,2,1,-1,0], [0,-2,3,-1,0], [0,-1,0,1,0], [0,2,-1,-2,1]]
 *   G   = [[1/2,0,0], [1/2,1/2,1/2], [1/6,-1/6,1/6], [1/6,1/3,2/3], [0,0,1]]
 *   A^T = [[1,1,1,1,0], [0,1,-1,2,0], [0,1,1,4,1]]
 * The transforms run on 16 tiles of one tile row per vector. */
#include <immintrin.h>

#include "plan_gemm.h"
#include "plan_simd.h"
#include "plan_winograd.h"
#include "plan_winograd_math.h"

#define WG_SIDE 5
#define WG_POS 25
#define TARGET __attribute__((target("avx512f,fma")))

/* G times three values stride apart, in double so that U rounds once. */
static void g_times(const double *in, int stride, double *out) {
  double a = in[0], b = in[stride], c = in[2 * stride];
  out[0] = a / 2;
  out[1] = (a + b + c) / 2;
  out[2] = (a - b + c) / 6;
  out[3] = (a + 2 * b + 4 * c) / 6;
  out[4] = c;
}

/* U = G g G^T for one 3x3 kernel g. */
static void weight_transform(const float *g, float *u) {
  double in[9], t[WG_SIDE][3], row[WG_SIDE];
  for (int i = 0; i < 9; i++)
    in[i] = g[i];
  for (int j = 0; j < 3; j++) {
    g_times(in + j, 3, row);
    for (int i = 0; i < WG_SIDE; i++)
      t[i][j] = row[i];
  }
  for (int i = 0; i < WG_SIDE; i++) {
    g_times(t[i], 1, row);
    for (int j = 0; j < WG_SIDE; j++)
      u[i * WG_SIDE + j] = (float)row[j];
  }
}

WG_TRANSFORMS(TARGET, __m512, _mm512)

WG_ROW_TRANSFORMS(WG_SIDE, 3, bt5)

WG_TILE_OUTPUTS(WG_SIDE, 3, at5)

/* y[0..width) = u[q % 3][first + q / 3] (column q of the three outputs per row of the tiles
 * from lane first), with bias, residual and ReLU. */
TARGET static void store_interleaved(const wg_job *j, const __m512 *u, float bias, int width,
                                     int first, float *y, const float *res) {
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 b = _mm512_set1_ps(bias);
  for (int k = 0; k < 3 && 16 * k < width; k++) {
    __m512i q = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * k));
    /* q / 3 (as (q * 43) >> 7, exact for q < 48) and q % 3 */
    __m512i tile = _mm512_srli_epi32(_mm512_mullo_epi32(q, _mm512_set1_epi32(43)), 7);
    __m512i part = _mm512_sub_epi32(q, _mm512_mullo_epi32(tile, _mm512_set1_epi32(3)));
    tile = _mm512_add_epi32(tile, _mm512_set1_epi32(first));
    __mmask16 one = _mm512_cmpeq_epi32_mask(part, _mm512_set1_epi32(1));
    __mmask16 two = _mm512_cmpeq_epi32_mask(part, _mm512_set1_epi32(2));
    __m512 v = _mm512_permutexvar_ps(tile, u[0]);
    v = _mm512_mask_permutexvar_ps(v, one, tile, u[1]);
    v = _mm512_mask_permutexvar_ps(v, two, tile, u[2]);
    int left = width - 16 * k;
    __mmask16 mask = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1);
    epilogue_store(y + 16 * k, mask, v, b, res ? res + 16 * k : NULL, j->node->relu);
  }
}

/* Outputs of n <= 16 tiles of `count` tile rows from (ty, tx) (count > 1: whole rows) for
 * rows <= 16 channels from ch: each tile's 3x3 outputs, transposed to one vector of tiles per
 * channel and output position, interleaved into output rows. m points at the first tile's 16
 * channels. */
TARGET static void output_tiles(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                                int64_t ty, int64_t tx, int count, int n, float *y,
                                const float *res) {
  __m512 out[9][16];
  wg_tiles_outputs(m, ldm, n, 9, tile_outputs, out);
#pragma GCC unroll 16
  for (int p = 0; p < 9; p++)
    transpose16(out[p]);
  int64_t plane = j->oh * j->ow, x0 = 3 * tx, per_row = n / count;
  int width = (int)(3 * per_row < j->ow - x0 ? 3 * per_row : j->ow - x0);
  for (int t = 0; t < count; t++)
    for (int a = 0; a < 3 && 3 * (ty + t) + a < j->oh; a++)
      for (int c = 0; c < rows; c++) {
        __m512 u[3] = {out[a * 3][c], out[a * 3 + 1][c], out[a * 3 + 2][c]};
        int64_t at = (ch + c) * plane + (3 * (ty + t) + a) * j->ow + x0;
        store_interleaved(j, u, j->node->conv.bias[ch + c], width, (int)(t * per_row), y + at,
                          res ? res + at : NULL);
      }
}

const wg_variant wg3_variant = {.tile = 3,
                                .positions = WG_POS,
                                .side = WG_SIDE,
                                .step = 3,
                                .weight_transform = weight_transform,
                                .input_segment = transform_segment,
                                .input_gather = NULL,
                                .output_tiles = output_tiles,
                                .output_scatter = NULL,
                                .input_rows = transform_rows};
