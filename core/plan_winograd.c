/* 3x3 convolutions as Winograd F(2x2, 3x3), F(3x3, 3x3) or F(4x4, 3x3) at stride 1,
 * F(2x2, 3x3) at stride 2 (plan_winograd.h).
 *
 * A task owns a chunk of tiles and of output channels. It transforms the chunk's inputs, 16
 * tiles per vector, into V[position][c][tiles] (unless its thread's V holds them from a block of
 * channels it ran before); runs the products of every position on the small-map kernel (tiles
 * broadcast, 32 output channels in two vectors), and transforms each block of 32 channels back
 * into the output with the epilogue. At stride 2, where the tasks split only the output
 * channels, the inputs are transformed once beforehand, split by input channels, into one V
 * that they share. */
#include <stdlib.h>

#include "plan_gemm.h"
#include "plan_winograd.h"
#include "threads.h"

#define WG_KC 128          /* depth per pass of the kernel */
#define WG_V_FLOATS 131072 /* transformed inputs per task */
/* Where U is large, larger chunks of tiles (fewer passes over U), still within L2 */
#define WG_V_FLOATS_LARGE_U 200704
#define WG_LARGE_U (2 << 20)

static int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

const wg_variant *plan_winograd_variant(const plan_conv *c) {
  if (c->p.stride_h == 2) return &wg2s2_variant;
  return c->winograd == 4 ? &wg4_variant : c->winograd == 3 ? &wg3_variant : &wg2_variant;
}

static int positions(const plan_conv *c) {
  return plan_winograd_variant(c)->positions;
}

int plan_winograd_positions(const plan_node *n) {
  return positions(&n->conv);
}

/* Stride 1 with any dilation (the same along both axes), F(3x3) undilated only; stride 2
 * undilated, F(2x2) only. */
bool plan_winograd_fits(const plan_node *n, int tile) {
  const plan_conv *c = &n->conv;
  const cb_conv2d_params *p = &c->p;
  if (c->kh != 3 || c->kw != 3 || p->groups != 1 || p->stride_h != p->stride_w) return false;
  bool undilated = p->dil_h == 1 && p->dil_w == 1;
  if (p->stride_h == 2) return tile == 2 && undilated;
  return p->stride_h == 1 && p->dil_h == p->dil_w && (tile != 3 || undilated);
}

/* Tiles of the grid of one phase (see tile_at), some of them partly outside the map. */
static int64_t phase_tiles(int64_t size, int dil, int tile) {
  return ((size + dil - 1) / dil + tile - 1) / tile;
}

static int64_t tiles_of(const int64_t *out, int dil, int tile) {
  return (int64_t)dil * dil * phase_tiles(out[2], dil, tile) * phase_tiles(out[3], dil, tile);
}

/* The cost rule: enough channels for the transforms to pay off (with 32 they cost more than
 * the multiplies saved); F(4x4) on maps of at least 7x7 of its tiles (28x28 outputs), F(3x3)
 * where its tiles need fewer products than F(2x2)'s (14x14 maps) and U stays small, F(2x2)
 * on other smaller ones; at stride 2, F(2x2) on maps of at least 7x7 of its tiles. U (36 / 9
 * or 16 / 9 of the weights) at most 1 MiB per position; F(4x4) with more than 256 KiB per
 * position only on maps of many tiles, where the tiles' work covers its reads; F(2x2) on
 * maps of at least 4x4 of its tiles (7x7 outputs), where its reads, split across the threads
 * by channels (plan_winograd_tile), still cost less than the direct convolution's multiplies. */
int plan_winograd_pays(const cb_plan *plan, const plan_node *n) {
  const plan_conv *c = &n->conv;
  if (c->cg < 64 || c->o < 64 || c->o % 16) return 0;
  const int64_t *out = plan->values[n->out].shape;
  int64_t u = c->o * c->cg, f4 = tiles_of(out, c->p.dil_h, 4), f2 = tiles_of(out, c->p.dil_h, 2);
  if (c->p.stride_h == 2) return plan_winograd_fits(n, 2) && u <= 65536 && f2 >= 49 ? 2 : 0;
  if (!plan_winograd_fits(n, 2)) return 0;
  if (u > 262144) return 0;
  if (f4 >= 49 && (u <= 65536 || f4 >= 256)) return 4;
  int64_t f3 = tiles_of(out, c->p.dil_h, 3);
  if (u <= 65536 && plan_winograd_fits(n, 3) && 25 * f3 < 16 * f2) return 3;
  return u <= 65536 || f2 >= 16 ? 2 : 0;
}

/* Packed U: [o / SMALL_NO][position][c][SMALL_NO] (in the order a task reads it),
 * zero-padded channels. */
static int pack(cb_plan *plan, plan_conv *c, cb_error *err) {
  int pos = positions(c);
  int64_t blocks = (c->o + SMALL_NO - 1) / SMALL_NO;
  float *packed = plan_weights(plan, sizeof(float) * (size_t)(pos * blocks * SMALL_NO * c->cg));
  if (!packed) return cb_fail(err, "plan: out of memory packing Winograd weights");
  float u[WG_MAX_POS];
  for (int64_t o = 0; o < c->o; o++)
    for (int64_t ch = 0; ch < c->cg; ch++) {
      plan_winograd_variant(c)->weight_transform(c->weight + (o * c->cg + ch) * 9, u);
      for (int p = 0; p < pos; p++)
        packed[(((o / SMALL_NO) * pos + p) * c->cg + ch) * SMALL_NO + o % SMALL_NO] = u[p];
    }
  free(c->weight);
  c->weight = NULL;
  c->packed = packed;
  return 0;
}

/* Chunks of nc tiles (V at most WG_V_FLOATS, or WG_V_FLOATS_LARGE_U) by mc channels, of equal sizes
 * to a tile, with a number of tasks that the threads divide: first more tile chunks (of at least
 * two pixel blocks), else blocks of channels, where each thread reads only its share of U (every
 * tile chunk reads all of it). */
static int plan_winograd_tile(cb_plan *plan, plan_node *n, int tile, cb_error *err) {
  plan_conv *c = &n->conv;
  c->winograd = tile;
  const int64_t *out = plan->values[n->out].shape;
  int64_t tiles = tiles_of(out, c->p.dil_h, tile), threads = plan->threads;
  int64_t u_bytes = (int64_t)positions(c) * c->o * c->cg * (int64_t)sizeof(float);
  int64_t most =
      (u_bytes > WG_LARGE_U ? WG_V_FLOATS_LARGE_U : WG_V_FLOATS) / (positions(c) * c->cg);
  most = most < SMALL_PR ? SMALL_PR : most;
  int64_t chunks = (tiles + most - 1) / most, m_tiles = 1;
  if (threads > 1 && (out[0] * chunks) % threads) {
    int64_t more = round_up(chunks, threads);
    if (more * 2 * SMALL_PR <= tiles && more <= 2 * chunks)
      chunks = more;
    else
      m_tiles = (c->o + SMALL_NO - 1) / SMALL_NO;
  }
  c->mc = (int)round_up((c->o + m_tiles - 1) / m_tiles, SMALL_NO);
  c->nc = (int)((tiles + chunks - 1) / chunks);
  /* Split by channels, a task per block of SMALL_NO channels (a thread that falls behind leaves
   * blocks for the others to take), and each thread transforms all the inputs itself once, for
   * the first block it runs (little work on maps this small), and reads them from its own cache;
   * at stride 2, where the input has four times the output's pixels, they are transformed once,
   * split by input channels, into a V that the tasks share. */
  c->shared_panel = m_tiles > 1 && chunks == 1 && c->p.stride_h == 2;
  return pack(plan, c, err);
}

/* A stride of at least floats, an odd number of 64-byte lines. */
static int64_t odd_lines(int64_t floats) {
  int64_t lines = (floats + 15) / 16;
  return (lines | 1) * 16;
}

static wg_layout layout_of(const plan_conv *c, int64_t tiles) {
  int64_t ldv = round_up(tiles, SMALL_PR);
  return (wg_layout){.ldv = ldv, .ldp = odd_lines(c->cg * ldv), .ldm = odd_lines(ldv * SMALL_NO)};
}

/* V (unless shared), then M for one block of SMALL_NO channels. */
static size_t plan_winograd_scratch(const plan_node *n) {
  wg_layout l = layout_of(&n->conv, n->conv.nc);
  return (size_t)positions(&n->conv) * (size_t)((n->conv.shared_panel ? 0 : l.ldp) + l.ldm);
}

static size_t plan_winograd_shared(const plan_node *n) {
  if (!n->conv.shared_panel) return 0;
  return (size_t)positions(&n->conv) * (size_t)layout_of(&n->conv, n->conv.nc).ldp;
}

/* Whole tile rows that one vector of 16 tiles takes from tile t on (t < t1), where tile rows
 * are short enough for two or more of them to share it and for their patches' input rows to
 * be two loads (32 columns); else 0 (one segment of a row). */
static int whole_rows(const wg_job *j, const wg_variant *w, int64_t t, int64_t t1) {
  int64_t columns = w->step * (j->tiles_w - 1) + w->side;
  if (t % j->tiles_w || 2 * j->tiles_w > 16 || columns > 32) return 0;
  int64_t rows = (t1 - t) / j->tiles_w, most = 16 / j->tiles_w;
  rows = rows < most ? rows : most;
  return rows >= 2 ? (int)rows : 0;
}

/* V[p][ch][t - t0] for tiles [t0, t1). */
static void input_transform(const wg_job *j, const float *x, int64_t t0, int64_t t1,
                            const wg_layout *l, float *v) {
  const plan_conv *c = &j->node->conv;
  const wg_variant *w = plan_winograd_variant(c);
  for (int64_t t = t0; t < t1 && j->dil > 1; t += 16)
    w->input_gather(j, x, t, t + 16 < t1 ? t + 16 : t1, v + (t - t0), l);
  for (int64_t t = t0; t < t1 && j->dil == 1;) {
    int rows = whole_rows(j, w, t, t1);
    if (rows) {
      w->input_rows(j, x, t / j->tiles_w, rows, v + (t - t0), l);
      t += rows * j->tiles_w;
      continue;
    }
    int64_t tx = t % j->tiles_w, n = j->tiles_w - tx;
    n = n > 16 ? 16 : n;
    n = n > t1 - t ? t1 - t : n;
    w->input_segment(j, x, t / j->tiles_w, tx, (int)n, v + (t - t0), l);
    t += n;
  }
}

/* Y for channels [m0, m0 + rows) and tiles [t0, t1) with the epilogue, 16 channels at a
 * time; tile t's channels at m + (t - t0) * SMALL_NO. y and res point at the image. */
static void output_transform(const wg_job *j, const float *m, const wg_layout *l, int64_t m0,
                             int rows, int64_t t0, int64_t t1, float *y, const float *res) {
  const wg_variant *w = plan_winograd_variant(&j->node->conv);
  for (int v = 0; v * 16 < rows; v++) {
    int n_rows = rows - v * 16 < 16 ? rows - v * 16 : 16;
    if (j->dil > 1) {
      w->output_scatter(j, m + v * 16, l->ldm, m0 + v * 16, n_rows, t0, t1, y, res);
      continue;
    }
    for (int64_t t = t0; t < t1;) {
      int count = whole_rows(j, w, t, t1);
      int64_t tx = t % j->tiles_w, n = count ? count * j->tiles_w : j->tiles_w - tx;
      n = n > 16 ? 16 : n;
      n = n > t1 - t ? t1 - t : n;
      w->output_tiles(j, m + (t - t0) * SMALL_NO + v * 16, l->ldm, m0 + v * 16, n_rows,
                      t / j->tiles_w, tx, count ? count : 1, (int)n, y, res);
      t += n;
    }
  }
}

int plan_winograd_v_parts(const cb_plan *plan, const plan_node *n) {
  int64_t parts = 4 * (int64_t)plan->threads, cg = n->conv.cg;
  return (int)(parts < cg ? parts : cg);
}

/* One part of the input channels of the shared V. */
static void shared_v_task(void *ctx, int part, int thread) {
  (void)thread;
  const wg_job *j = ctx;
  const plan_conv *c = &j->node->conv;
  int parts = plan_winograd_v_parts(j->plan, j->node);
  int64_t ch0 = cb_share_start(c->cg, part, parts), ch1 = cb_share_start(c->cg, part + 1, parts);
  wg_job slice = *j;
  slice.channels = ch1 - ch0;
  wg_layout l = layout_of(c, j->tiles);
  const float *x = j->x + (j->image * j->c + ch0) * j->h * j->w;
  input_transform(&slice, x, 0, j->tiles, &l, j->plan->shared + ch0 * l.ldv);
}

static void wg_task(void *ctx, int task, int thread) {
  const wg_job *j = ctx;
  const plan_node *n = j->node;
  const plan_conv *c = &n->conv;
  int pos = positions(c);
  int64_t per_image = j->n_tiles * j->m_tiles, img = task / per_image, rest = task % per_image;
  if (c->shared_panel) img = j->image;
  /* channel parts vary fastest: a thread's share of the tasks is a range of tiles */
  int64_t tm = rest % j->m_tiles, tn = rest / j->m_tiles;
  int64_t t0 = tn * c->nc, t1 = t0 + c->nc < j->tiles ? t0 + c->nc : j->tiles;
  int64_t m0 = tm * c->mc, m1 = m0 + c->mc < c->o ? m0 + c->mc : c->o;
  wg_layout l = layout_of(c, t1 - t0);
  float *v = j->plan->scratch + (size_t)thread * j->plan->scratch_floats, *m = v;
  if (c->shared_panel)
    v = j->plan->shared;
  else
    m += pos * layout_of(c, c->nc).ldp;
  int64_t off = img * c->o * j->oh * j->ow;
  int64_t chunk = img * j->n_tiles + tn;
  if (!c->shared_panel && j->v_held[thread] != chunk) {
    input_transform(j, j->x + img * j->c * j->h * j->w, t0, t1, &l, v);
    j->v_held[thread] = chunk;
  }
  for (int64_t b = m0; b < m1; b += SMALL_NO) {
    for (int p = 0; p < pos; p++)
      for (int64_t k0 = 0; k0 < c->cg; k0 += WG_KC) {
        int64_t kc = c->cg - k0 < WG_KC ? c->cg - k0 : WG_KC;
        const float *w = c->packed + ((b / SMALL_NO * pos + p) * c->cg + k0) * SMALL_NO;
        small_run r = {.n = t1 - t0,
                       .kc = kc,
                       .lda = l.ldv,
                       .a = v + p * l.ldp + k0 * l.ldv,
                       .w = w,
                       .c = m + p * l.ldm,
                       .load_c = k0 > 0,
                       .next = w + kc * SMALL_NO,
                       .next_lines = 2 * kc};
        plan_gemm_small_run(&r);
      }
    output_transform(j, m, &l, b, (int)(m1 - b < SMALL_NO ? m1 - b : SMALL_NO), t0, t1, j->y + off,
                     j->res ? j->res + off : NULL);
  }
}

static void plan_winograd_run(cb_plan *plan, const plan_node *n, const float *x, const float *res,
                              float *y) {
  const int64_t *in = plan->values[n->in[0]].shape, *out = plan->values[n->out].shape;
  int tile = n->conv.winograd;
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
  j.res = n->residual_in_place ? y : res;
  j.dil = n->conv.p.dil_h;
  j.tiles_h = phase_tiles(j.oh, j.dil, tile);
  j.tiles_w = phase_tiles(j.ow, j.dil, tile);
  j.tiles = tiles_of(out, j.dil, tile);
  j.n_tiles = (j.tiles + n->conv.nc - 1) / n->conv.nc;
  j.m_tiles = (n->conv.o + n->conv.mc - 1) / n->conv.mc;
  j.channels = n->conv.cg;
  int64_t held[CB_MAX_THREADS];
  for (int t = 0; t < CB_MAX_THREADS; t++)
    held[t] = -1;
  j.v_held = held;
  if (!n->conv.shared_panel) {
    cb_parallel_for((int)(j.n_tiles * j.m_tiles * in[0]), wg_task, &j);
    return;
  }
  int parts = plan_winograd_v_parts(plan, n);
  for (j.image = 0; j.image < in[0]; j.image++) {
    cb_parallel_for(parts, shared_v_task, &j);
    cb_parallel_for((int)(j.n_tiles * j.m_tiles), wg_task, &j);
  }
}

const plan_winograd_path plan_winograd_avx512 = {.fits = plan_winograd_fits,
                                                 .tile = plan_winograd_tile,
                                                 .scratch = plan_winograd_scratch,
                                                 .shared = plan_winograd_shared,
                                                 .run = plan_winograd_run};
