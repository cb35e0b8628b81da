#ifndef CBRICK_PLAN_WINOGRAD_H
#define CBRICK_PLAN_WINOGRAD_H

/* Winograd convolutions F(m x m, 3x3): per m x m output tile, (m + 2)^2 products of
 * transformed weights U = G g G^T and transformed inputs V = B^T d B, then Y = A^T M A.
 * F(2x2) (16 positions) and F(4x4) (36 positions) share one driver (plan_winograd.c); each
 * brings its transforms (plan_winograd2.c, plan_winograd4.c). */
#include <stdint.h>

#include "plan_internal.h"

#define WG_MAX_POS 36

typedef struct wg_job {
  cb_plan *plan;
  const plan_node *node;
  const float *x, *res;
  float *y;
  int64_t c, h, w, oh, ow, tiles_h, tiles_w, tiles, n_tiles, m_tiles;
  int dil;
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

/* U for one 3x3 kernel g: 16 (F2) or 36 (F4) floats. */
void wg2_weight_transform(const float *g, float *u);
void wg4_weight_transform(const float *g, float *u);

/* V[p][ch][t - t0] for tiles [t0, t1); columns past t1 are left as they are. */
void wg2_input_transform(const wg_job *j, const float *x, int64_t t0, int64_t t1,
                         const wg_layout *l, float *v);
void wg4_input_transform(const wg_job *j, const float *x, int64_t t0, int64_t t1,
                         const wg_layout *l, float *v);

/* Y for channels [m0, m0 + rows) and tiles [t0, t1) with the epilogue, from M (tile t at
 * m + (t - t0) * SMALL_NO). y and res point at the image. */
void wg2_output_transform(const wg_job *j, const float *m, const wg_layout *l, int64_t m0, int rows,
                          int64_t t0, int64_t t1, float *y, const float *res);
void wg4_output_transform(const wg_job *j, const float *m, const wg_layout *l, int64_t m0, int rows,
                          int64_t t0, int64_t t1, float *y, const float *res);

#endif
