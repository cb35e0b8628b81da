/* 3x3 stride-1 convolutions as Winograd F(2x2, 3x3): per 2x2 output tile, 16 products of
 * transformed weights U (G g G^T) and transformed inputs V (B^T d B), one GEMM per position
 * on the AVX-512 micro-kernel, then Y = A^T M A with the epilogue. 2.25x fewer multiplies. */
#include <stdlib.h>
#include <string.h>

#include "plan_gemm.h"
#include "plan_internal.h"
#include "threads.h"

#define WG_POS 16 /* 4x4 transformed positions */
/* Floats between the slabs of two positions: padded off a multiple of 4 KiB, so that the 16
 * streams do not alias in the L1 cache. */
#define WG_SLAB(cg) ((cg)*GEMM_NR + 48)
#define WG_TILE (GEMM_MR * GEMM_NR + 48)

bool plan_winograd_fits(const plan_node *n) {
  const plan_conv *c = &n->conv;
  return c->kh == 3 && c->kw == 3 && c->p.stride_h == 1 && c->p.stride_w == 1 && c->p.dil_h == 1 &&
         c->p.dil_w == 1 && c->p.groups == 1 && c->cg >= 16;
}

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

/* Packed U: [position][block of GEMM_MR output channels][c][GEMM_MR]. */
int plan_winograd_pack(plan_conv *c, cb_error *err) {
  int64_t blocks = (c->o + GEMM_MR - 1) / GEMM_MR, per_pos = blocks * GEMM_MR * c->cg;
  float *packed = calloc((size_t)(WG_POS * per_pos), sizeof(float));
  if (!packed) return cb_fail(err, "plan: out of memory packing Winograd weights");
  float u[WG_POS];
  for (int64_t o = 0; o < c->o; o++)
    for (int64_t ch = 0; ch < c->cg; ch++) {
      weight_transform(c->weight + (o * c->cg + ch) * 9, u);
      for (int p = 0; p < WG_POS; p++)
        packed[p * per_pos + ((o / GEMM_MR) * c->cg + ch) * GEMM_MR + o % GEMM_MR] = u[p];
    }
  free(c->weight);
  c->weight = NULL;
  c->packed = packed;
  return 0;
}

typedef struct wg_job {
  cb_plan *plan;
  const plan_node *node;
  const float *x, *res;
  float *y;
  int64_t c, h, w, oh, ow, tiles_w, tiles;
  int slabs, m_tiles;
  int64_t mc;
} wg_job;

/* V = B^T d B for the 4x4 input patch of every tile in [t0, t1), into 16 slabs [c][GEMM_NR]. */
static void input_transform(const wg_job *j, const float *x, int64_t t0, int64_t t1, float *v) {
  const plan_conv *c = &j->node->conv;
  int64_t slab = WG_SLAB(c->cg);
  memset(v, 0, (size_t)(WG_POS * slab) * sizeof(float));
  for (int64_t ch = 0; ch < c->cg; ch++) {
    const float *plane = x + ch * j->h * j->w;
    float *dst = v + ch * GEMM_NR;
    for (int64_t t = t0; t < t1; t++) {
      int64_t ty = t / j->tiles_w, tx = t % j->tiles_w, col = t - t0;
      int64_t y0 = 2 * ty - c->p.pad_h, x0 = 2 * tx - c->p.pad_w;
      float d[4][4], r[4][4];
      if (y0 >= 0 && x0 >= 0 && y0 + 4 <= j->h && x0 + 4 <= j->w) {
        for (int a = 0; a < 4; a++)
          for (int b = 0; b < 4; b++)
            d[a][b] = plane[(y0 + a) * j->w + x0 + b];
      } else {
        for (int a = 0; a < 4; a++)
          for (int b = 0; b < 4; b++) {
            int64_t yy = y0 + a, xx = x0 + b;
            d[a][b] = yy >= 0 && yy < j->h && xx >= 0 && xx < j->w ? plane[yy * j->w + xx] : 0.0f;
          }
      }
      for (int b = 0; b < 4; b++) {
        r[0][b] = d[0][b] - d[2][b];
        r[1][b] = d[1][b] + d[2][b];
        r[2][b] = d[2][b] - d[1][b];
        r[3][b] = d[1][b] - d[3][b];
      }
      for (int a = 0; a < 4; a++) {
        dst[(a * 4 + 0) * slab + col] = r[a][0] - r[a][2];
        dst[(a * 4 + 1) * slab + col] = r[a][1] + r[a][2];
        dst[(a * 4 + 2) * slab + col] = r[a][2] - r[a][1];
        dst[(a * 4 + 3) * slab + col] = r[a][1] - r[a][3];
      }
    }
  }
}

/* Y = A^T M A (A^T = [[1,1,1,0],[0,1,-1,-1]]) for rows [m0, m0 + mr) and tiles [t0, t1), plus
 * bias, residual and ReLU, written where the 2x2 tile falls inside the output. */
static void output_transform(const wg_job *j, const float *m, int64_t m0, int mr, int64_t t0,
                             int64_t t1, float *y, const float *res) {
  const plan_node *n = j->node;
  int64_t plane = j->oh * j->ow, stride = WG_TILE;
  for (int i = 0; i < mr; i++) {
    float bias = n->conv.bias[m0 + i];
    for (int64_t t = t0; t < t1; t++) {
      const float *src = m + i * GEMM_NR + (t - t0);
      float s[WG_POS];
      for (int p = 0; p < WG_POS; p++)
        s[p] = src[p * stride];
      float r0[4], r1[4];
      for (int b = 0; b < 4; b++) {
        r0[b] = s[b] + s[4 + b] + s[8 + b];
        r1[b] = s[4 + b] - s[8 + b] - s[12 + b];
      }
      float out[2][2] = {{r0[0] + r0[1] + r0[2], r0[1] - r0[2] - r0[3]},
                         {r1[0] + r1[1] + r1[2], r1[1] - r1[2] - r1[3]}};
      int64_t oy = 2 * (t / j->tiles_w), ox = 2 * (t % j->tiles_w);
      for (int a = 0; a < 2 && oy + a < j->oh; a++)
        for (int b = 0; b < 2 && ox + b < j->ow; b++) {
          int64_t at = (m0 + i) * plane + (oy + a) * j->ow + ox + b;
          float v = out[a][b] + bias + (res ? res[at] : 0.0f);
          y[at] = n->relu && v < 0.0f ? 0.0f : v;
        }
    }
  }
}

static void wg_task(void *ctx, int task, int thread) {
  const wg_job *j = ctx;
  const plan_node *n = j->node;
  const plan_conv *c = &n->conv;
  int64_t per_image = (int64_t)j->slabs * j->m_tiles;
  int64_t img = task / per_image, rest = task % per_image;
  int64_t s = rest % j->slabs, tm = rest / j->slabs;
  int64_t t0 = s * GEMM_NR, t1 = t0 + GEMM_NR < j->tiles ? t0 + GEMM_NR : j->tiles;
  int64_t m_begin = tm * j->mc, m_end = m_begin + j->mc < c->o ? m_begin + j->mc : c->o;
  if (m_begin >= m_end) return;
  float *v = j->plan->scratch + (size_t)thread * j->plan->scratch_floats;
  float *m = v + WG_POS * WG_SLAB(c->cg);
  const float *x = j->x + img * j->c * j->h * j->w;
  float *y = j->y + img * c->o * j->oh * j->ow;
  const float *res = j->res ? j->res + img * c->o * j->oh * j->ow : NULL;
  input_transform(j, x, t0, t1, v);
  int64_t blocks = (c->o + GEMM_MR - 1) / GEMM_MR, per_pos = blocks * GEMM_MR * c->cg;
  for (int64_t m0 = m_begin; m0 < m_end; m0 += GEMM_MR) {
    int mr = (int)(m_end - m0 < GEMM_MR ? m_end - m0 : GEMM_MR);
    for (int p = 0; p < WG_POS; p++) {
      gemm_tile t = {.kc = c->cg,
                     .a = c->packed + p * per_pos + (m0 / GEMM_MR) * GEMM_MR * c->cg,
                     .b = v + p * WG_SLAB(c->cg),
                     .c = m + p * WG_TILE,
                     .ldc = GEMM_NR,
                     .mr = GEMM_MR,
                     .nr = GEMM_NR};
      plan_gemm_tile(&t);
    }
    output_transform(j, m, m0, mr, t0, t1, y, res);
  }
}

size_t plan_winograd_scratch(const plan_node *n) {
  return (size_t)(WG_POS * WG_SLAB(n->conv.cg) + WG_POS * WG_TILE);
}

void plan_winograd_run(cb_plan *plan, const plan_node *n, const float *x, const float *res,
                       float *y) {
  const int64_t *in = plan->values[n->in[0]].shape, *out = plan->values[n->out].shape;
  wg_job j = {.plan = plan,
              .node = n,
              .x = x,
              .y = y,
              .c = in[1],
              .h = in[2],
              .w = in[3],
              .oh = out[2],
              .ow = out[3]};
  /* A residual written in place is read before its element is overwritten. */
  j.res = res ? res : NULL;
  if (n->residual_in_place) j.res = y;
  int64_t tiles_h = (j.oh + 1) / 2;
  j.tiles_w = (j.ow + 1) / 2;
  j.tiles = tiles_h * j.tiles_w;
  j.slabs = (int)((j.tiles + GEMM_NR - 1) / GEMM_NR);
  int threads = plan->threads, m_tiles = 1;
  if (threads > 1 && j.slabs * in[0] < 2 * threads)
    m_tiles = (int)((2 * threads + j.slabs - 1) / j.slabs);
  j.mc = (n->conv.o + m_tiles - 1) / m_tiles;
  j.mc = (j.mc + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
  j.m_tiles = (int)((n->conv.o + j.mc - 1) / j.mc);
  cb_parallel_for((int)(j.slabs * j.m_tiles * in[0]), wg_task, &j);
}
