/* Winograd F(2x2, 3x3) at stride 2: 5x5 input patches 4 apart, 25 positions, 2x2 outputs per
 * tile; 1.44x fewer multiplies than the direct convolution (36 per tile).
 *
 * Along one axis, the taps 0 and 2 of a stride-2 kernel read the even inputs of the patch and
 * tap 1 the odd ones: y0 = g0 d0 + g1 d1 + g2 d2, y1 = g0 d2 + g1 d3 + g2 d4. The even part
 * is F(2, 2) on (d0, d2, d4) with the kernel (g0, g2), the odd part two plain products:
 *   V = B^T d  = [d0 - d2, d2, d4 - d2, d1, d3]
 *   U = G g    = [g0, g0 + g2, g2, g1, g1]
 *   Y = A^T M  = [M0 + M1 + M3, M1 + M2 + M4]
 * Only additions: the products round as the direct convolution's do. */
#include <immintrin.h>

#include "plan_gemm.h"
#include "plan_simd.h"
#include "plan_winograd.h"

#define WG_SIDE 5
#define WG_POS 25
#define TARGET __attribute__((target("avx512f,fma")))

static void g_times(const float *in, int stride, float *out) {
  float a = in[0], b = in[stride], c = in[2 * stride];
  out[0] = a;
  out[1] = a + c;
  out[2] = c;
  out[3] = b;
  out[4] = b;
}

/* U = G g G^T for one 3x3 kernel g. */
static void weight_transform(const float *g, float *u) {
  float t[WG_SIDE][3], col[WG_SIDE];
  for (int j = 0; j < 3; j++) {
    g_times(g + j, 3, col);
    for (int i = 0; i < WG_SIDE; i++)
      t[i][j] = col[i];
  }
  for (int i = 0; i < WG_SIDE; i++)
    g_times(t[i], 1, u + i * WG_SIDE);
}

/* B^T d for five vectors. */
TARGET static inline void bt5(const __m512 *d, __m512 *r) {
  r[0] = _mm512_sub_ps(d[0], d[2]);
  r[1] = d[2];
  r[2] = _mm512_sub_ps(d[4], d[2]);
  r[3] = d[1];
  r[4] = d[3];
}

/* A^T m for five vectors: two outputs. */
TARGET static inline void at5(const __m512 *m, __m512 *o) {
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[3]);
  o[1] = _mm512_add_ps(_mm512_add_ps(m[1], m[2]), m[4]);
}

WG_ROW_TRANSFORMS(WG_SIDE, 4, bt5)

WG_TILE_OUTPUTS(WG_SIDE, 2, at5)

/* Outputs of n <= 16 tiles of `count` tile rows from (ty, tx), m pointing at the first tile's
 * 16 channels. */
TARGET static void output_tiles(const wg_job *j, const float *m, int64_t ldm, int64_t ch, int rows,
                                int64_t ty, int64_t tx, int count, int n, float *y,
                                const float *res) {
  __m512 out[4][16];
  wg_tiles_outputs(m, ldm, n, 4, tile_outputs, out);
  wg2_store_tiles(j, out, ch, rows, ty, tx, count, n, y, res);
}

const wg_variant wg2s2_variant = {.tile = 2,
                                  .positions = WG_POS,
                                  .side = WG_SIDE,
                                  .step = 4,
                                  .weight_transform = weight_transform,
                                  .input_segment = transform_segment,
                                  .input_gather = NULL,
                                  .output_tiles = output_tiles,
                                  .output_scatter = NULL,
                                  .input_rows = transform_rows};
