/* Winograd F(2x2), F(3x3) and F(4x4, 3x3) on the AVX2 kernels (stride 1, undilated), for
 * processors without AVX-512: the same transforms as plan_winograd*.c on 8 tiles per vector,
 * and the products of every position on the column kernel (12 output channels by 32 tiles).
 *
 * A task owns a chunk of at most `nc` tiles and a part of the output channels. It transforms
 * the chunk's inputs into V[position][slab of 32 tiles][c][32] (the column kernel's packed
 * layout; where the parts share a map's only chunk, V is transformed once beforehand, split
 * by input channels, and shared), then per group of channels (M at most WG8_M_FLOATS) runs the
 * products of every position into M[position][ch][tiles], reading U in the order it is stored, and
 * transforms M back into the output with the epilogue. */
#include <immintrin.h>
#include <stdlib.h>

#include "plan_gemm.h"
#include "plan_winograd.h"
#include "plan_winograd_math.h"
#include "threads.h"

#define TARGET __attribute__((target("avx2,fma")))
#define WG8_MAX_SIDE 6
#define WG8_V_FLOATS 131072 /* transformed inputs per task */
#define WG8_M_FLOATS 131072 /* products per group of output channels */
#define WG8_SLAB GEMM_NR

static int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

/* The transformed positions per tile: the variant's of the AVX-512 path. */
static int positions(const plan_conv *c) {
  return plan_winograd_variant(c)->positions;
}

static bool plan_winograd8_fits(const plan_node *n, int tile) {
  const cb_conv2d_params *p = &n->conv.p;
  /* at stride 2 the gathered transforms of the larger input cost what the products save */
  return plan_winograd_fits(n, tile) && p->stride_h == 1 && p->dil_h == 1 && p->dil_w == 1;
}

/* U packed as the column kernel reads it: [position][o / GEMM_MR][c][GEMM_MR], zero rows past
 * o. */
static int pack(cb_plan *plan, plan_conv *c, cb_error *err) {
  const wg_variant *v = plan_winograd_variant(c);
  int pos = v->positions;
  int64_t blocks = (c->o + GEMM_MR - 1) / GEMM_MR;
  float *packed = plan_weights(plan, sizeof(float) * (size_t)(pos * blocks * GEMM_MR * c->cg));
  if (!packed) return cb_fail(err, "plan: out of memory packing Winograd weights");
  float u[WG_MAX_POS];
  for (int64_t o = 0; o < c->o; o++)
    for (int64_t ch = 0; ch < c->cg; ch++) {
      v->weight_transform(c->weight + (o * c->cg + ch) * 9, u);
      for (int p = 0; p < pos; p++)
        packed[((p * blocks + o / GEMM_MR) * c->cg + ch) * GEMM_MR + o % GEMM_MR] = u[p];
    }
  free(c->weight);
  c->weight = NULL;
  c->packed = packed;
  return 0;
}

static int64_t tiles_of(const int64_t *out, int tile) {
  return ((out[2] + tile - 1) / tile) * ((out[3] + tile - 1) / tile);
}

/* Chunks of near-equal numbers of tiles (V at most about WG8_V_FLOATS), as many as make the
 * threads' shares equal, and where the chunks are fewer than the threads, parts of the output
 * channels (which share V where there is one chunk, else transform their chunk's inputs each). */
static int plan_winograd8_tile(cb_plan *plan, plan_node *n, int tile, cb_error *err) {
  plan_conv *c = &n->conv;
  c->winograd = tile;
  const int64_t *out = plan->values[n->out].shape;
  int64_t tiles = tiles_of(out, tile), pos = positions(c), threads = plan->threads;
  int64_t most = WG8_V_FLOATS / (pos * c->cg);
  most = most < WG8_SLAB ? WG8_SLAB : most;
  int64_t chunks = (tiles + most - 1) / most, parts = 1;
  if (threads > 1 && (chunks * out[0]) % threads) {
    if (out[0] == 1 && tiles / round_up(chunks, threads) >= WG8_SLAB)
      chunks = round_up(chunks, threads);
    else
      parts = threads;
  }
  c->nc = (int)((tiles + chunks - 1) / chunks);
  int64_t blocks = (c->o + GEMM_MR - 1) / GEMM_MR;
  parts = parts > blocks ? blocks : parts;
  c->mc = (int)(((blocks + parts - 1) / parts) * GEMM_MR);
  c->shared_panel = parts > 1 && chunks == 1;
  return pack(plan, c, err);
}

static int64_t slabs_of(int64_t tiles) {
  return (tiles + WG8_SLAB - 1) / WG8_SLAB;
}

/* Output channels per group of products: whole blocks of GEMM_MR, M at most WG8_M_FLOATS. */
static int64_t group_of(const plan_conv *c) {
  int64_t pos = positions(c), cols = slabs_of(c->nc) * WG8_SLAB;
  int64_t group = WG8_M_FLOATS / (pos * cols) / GEMM_MR * GEMM_MR;
  return group < GEMM_MR ? GEMM_MR : group;
}

static int64_t v_floats(const plan_conv *c) {
  return positions(c) * slabs_of(c->nc) * WG8_SLAB * c->cg;
}

/* V (unless shared), then M for one group of channels. */
static size_t plan_winograd8_scratch(const plan_node *n) {
  int64_t pos = positions(&n->conv), cols = slabs_of(n->conv.nc) * WG8_SLAB;
  int64_t group = group_of(&n->conv) < n->conv.mc ? group_of(&n->conv) : n->conv.mc;
  return (size_t)((n->conv.shared_panel ? 0 : v_floats(&n->conv)) + pos * cols * group);
}

static size_t plan_winograd8_shared(const plan_node *n) {
  return n->conv.shared_panel ? (size_t)v_floats(&n->conv) : 0;
}

typedef struct wg8_job {
  cb_plan *plan;
  const plan_node *node;
  const float *x, *res;
  float *y;
  int64_t c, h, w, oh, ow, tiles_w, tiles, n_chunks, m_parts;
  int64_t image, v_parts; /* shared V: the image being run, and the parts it is built in */
} wg8_job;

/* ---- the transforms, on 8 tiles per vector ---- */

TARGET static inline void bt4(const __m256 *d, __m256 *r) {
  r[0] = _mm256_sub_ps(d[0], d[2]);
  r[1] = _mm256_add_ps(d[1], d[2]);
  r[2] = _mm256_sub_ps(d[2], d[1]);
  r[3] = _mm256_sub_ps(d[1], d[3]);
}

TARGET static inline void at4(const __m256 *m, __m256 *o) {
  o[0] = _mm256_add_ps(_mm256_add_ps(m[0], m[1]), m[2]);
  o[1] = _mm256_sub_ps(_mm256_sub_ps(m[1], m[2]), m[3]);
}

WG_TRANSFORMS(TARGET, __m256, _mm256)

/* Where 8 tiles lie: the first input of each patch (offset in the channel plane, valid where
 * the lane's tile exists), which patch rows and columns lie inside the map, and the first
 * output of each tile. */
typedef struct lanes8 {
  __m256i off, row[WG8_MAX_SIDE], col[WG8_MAX_SIDE];
  int64_t oy[8], ox[8];
  int n;            /* valid lanes */
  int runs, run[9]; /* lanes [run[k], run[k + 1]) lie in one tile row */
} lanes8;

/* Tiles [t0, t0 + n) (n <= 8) of size tile, patches of side inputs. */
TARGET static void lanes_setup(const wg8_job *j, int tile, int side, int64_t t0, int n, lanes8 *l) {
  const cb_conv2d_params *p = &j->node->conv.p;
  int32_t off[8] = {0}, row[WG8_MAX_SIDE][8] = {{0}}, col[WG8_MAX_SIDE][8] = {{0}};
  l->n = n;
  for (int i = 0; i < n; i++) {
    int64_t t = t0 + i;
    l->oy[i] = t / j->tiles_w * tile;
    l->ox[i] = t % j->tiles_w * tile;
    int64_t y0 = l->oy[i] - p->pad_h, x0 = l->ox[i] - p->pad_w;
    off[i] = (int32_t)(y0 * j->w + x0);
    for (int a = 0; a < side; a++) {
      row[a][i] = y0 + a >= 0 && y0 + a < j->h ? -1 : 0;
      col[a][i] = x0 + a >= 0 && x0 + a < j->w ? -1 : 0;
    }
  }
  l->runs = 0;
  for (int i = 0; i < n; i++)
    if (i == 0 || l->oy[i] != l->oy[i - 1]) l->run[l->runs++] = i;
  l->run[l->runs] = n;
  l->off = _mm256_loadu_si256((const __m256i *)off);
  for (int a = 0; a < side; a++) {
    l->row[a] = _mm256_loadu_si256((const __m256i *)row[a]);
    l->col[a] = _mm256_loadu_si256((const __m256i *)col[a]);
  }
}

/* V of the lanes' tiles for one input channel plane x: each input of the patches gathered,
 * zero outside the map, B^T d B stored at v + position * ldp (8 floats each). */
TARGET __attribute__((always_inline)) static inline void
input_lanes(const wg8_job *j, const lanes8 *l, const float *x, int side,
            void (*bt)(const __m256 *, __m256 *), float *v, int64_t ldp) {
  __m256 e[WG8_MAX_SIDE][WG8_MAX_SIDE];
  for (int a = 0; a < side; a++) {
    __m256 d[WG8_MAX_SIDE];
    for (int b = 0; b < side; b++) {
      __m256i idx = _mm256_add_epi32(l->off, _mm256_set1_epi32((int)(a * j->w + b)));
      __m256 mask = _mm256_castsi256_ps(_mm256_and_si256(l->row[a], l->col[b]));
      d[b] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, idx, mask, 4);
    }
    bt(d, e[a]);
  }
  for (int b = 0; b < side; b++) {
    __m256 col[WG8_MAX_SIDE], r[WG8_MAX_SIDE];
    for (int a = 0; a < side; a++)
      col[a] = e[a][b];
    bt(col, r);
    for (int a = 0; a < side; a++)
      _mm256_storeu_ps(v + (a * side + b) * ldp, r[a]);
  }
}

/* The outputs of one row of the 8 tiles, o[c] holding column c of each: row[tile * i + c]. */
TARGET __attribute__((always_inline)) static inline void interleave(const __m256 *o, int tile,
                                                                    float *row) {
  if (tile == 4) {
    __m256 t0 = _mm256_unpacklo_ps(o[0], o[1]), t1 = _mm256_unpackhi_ps(o[0], o[1]);
    __m256 t2 = _mm256_unpacklo_ps(o[2], o[3]), t3 = _mm256_unpackhi_ps(o[2], o[3]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm256_storeu_ps(row, _mm256_permute2f128_ps(u0, u1, 0x20));
    _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
    _mm256_storeu_ps(row + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(row + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
  } else if (tile == 2) {
    __m256 lo = _mm256_unpacklo_ps(o[0], o[1]), hi = _mm256_unpackhi_ps(o[0], o[1]);
    _mm256_storeu_ps(row, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  } else {
    float col[4][8];
    for (int c = 0; c < tile; c++)
      _mm256_storeu_ps(col[c], o[c]);
    for (int i = 0; i < 8; i++)
      for (int c = 0; c < tile; c++)
        row[tile * i + c] = col[c][i];
  }
}

/* y[i] = v[i] + bias (+ res[i]), then ReLU, for i < len. */
TARGET static inline void epilogue_run(const float *v, int64_t len, __m256 bias, const float *res,
                                       bool relu, float *y) {
  for (int64_t i = 0; i < len; i += 8) {
    int64_t n = len - i < 8 ? len - i : 8;
    __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 s = _mm256_add_ps(_mm256_loadu_ps(v + i), bias);
    if (res)
      s = _mm256_add_ps(s, n == 8 ? _mm256_loadu_ps(res + i) : _mm256_maskload_ps(res + i, mask));
    if (relu) s = _mm256_max_ps(s, _mm256_setzero_ps());
    if (n == 8)
      _mm256_storeu_ps(y + i, s);
    else
      _mm256_maskstore_ps(y + i, mask, s);
  }
}

/* Y = A^T M A of the lanes' tiles for output channel ch (M at m, positions ldp apart), with
 * the epilogue, into the image's output y. */
TARGET __attribute__((always_inline)) static inline void
output_lanes(const wg8_job *j, const lanes8 *l, const float *m, int64_t ldp, int64_t ch, int tile,
             int side, void (*at)(const __m256 *, __m256 *), float *y, const float *res) {
  __m256 q[4][WG8_MAX_SIDE];
  for (int b = 0; b < side; b++) {
    __m256 s[WG8_MAX_SIDE], o[4];
    for (int a = 0; a < side; a++)
      s[a] = _mm256_loadu_ps(m + (a * side + b) * ldp);
    at(s, o);
    for (int r = 0; r < tile; r++)
      q[r][b] = o[r];
  }
  const plan_node *n = j->node;
  __m256 bias = _mm256_set1_ps(n->conv.bias[ch]);
  int64_t plane = ch * j->oh * j->ow;
  for (int r = 0; r < tile; r++) {
    __m256 o[4];
    float row[4 * 8 + 8]; /* + 8: the vector loads of a run that ends near the last tile */
    at(q[r], o);
    interleave(o, tile, row);
    for (int k = 0; k < l->runs; k++) {
      int i0 = l->run[k], i1 = l->run[k + 1];
      int64_t oy = l->oy[i0] + r, ox = l->ox[i0], len = (i1 - i0) * tile;
      if (oy >= j->oh) continue;
      len = len < j->ow - ox ? len : j->ow - ox;
      int64_t at_yx = plane + oy * j->ow + ox;
      epilogue_run(row + i0 * tile, len, bias, res ? res + at_yx : NULL, n->relu, y + at_yx);
    }
  }
}

typedef void (*input_fn)(const wg8_job *, const lanes8 *, const float *, float *, int64_t);
typedef void (*output_fn)(const wg8_job *, const lanes8 *, const float *, int64_t, int64_t, float *,
                          const float *);

/* One variant on 8 tiles per vector: output tile, input patch side, transforms. */
typedef struct wg8_variant {
  int tile, side;
  input_fn input;
  output_fn output;
} wg8_variant;

#define WG8_VARIANT(NAME, TILE, SIDE, BT, AT)                                                      \
  TARGET static void input_##NAME(const wg8_job *j, const lanes8 *l, const float *x, float *v,     \
                                  int64_t ldp) {                                                   \
    input_lanes(j, l, x, SIDE, BT, v, ldp);                                                        \
  }                                                                                                \
  TARGET static void output_##NAME(const wg8_job *j, const lanes8 *l, const float *m, int64_t ldp, \
                                   int64_t ch, float *y, const float *res) {                       \
    output_lanes(j, l, m, ldp, ch, TILE, SIDE, AT, y, res);                                        \
  }                                                                                                \
  static const wg8_variant NAME = {TILE, SIDE, input_##NAME, output_##NAME};

WG8_VARIANT(f2, 2, 4, bt4, at4)
WG8_VARIANT(f3, 3, 5, bt5, at5)
WG8_VARIANT(f4, 4, 6, bt6, at6)

static const wg8_variant *variant_of(const plan_conv *c) {
  return c->winograd == 4 ? &f4 : c->winograd == 3 ? &f3 : &f2;
}

/* ---- a task ---- */

/* V[p][slab][ch][32] of tiles [t0, t0 + nt) of image x, input channels [ch0, ch1). */
static void transform_inputs(const wg8_job *j, const float *x, int64_t t0, int64_t nt, int64_t ch0,
                             int64_t ch1, float *v) {
  const plan_conv *c = &j->node->conv;
  const wg8_variant *var = variant_of(c);
  int64_t slabs = slabs_of(nt), ldp = slabs * c->cg * WG8_SLAB;
  for (int64_t q = 0; q < nt; q += 8) {
    lanes8 l;
    lanes_setup(j, var->tile, var->side, t0 + q, (int)(nt - q < 8 ? nt - q : 8), &l);
    float *at = v + q / WG8_SLAB * c->cg * WG8_SLAB + q % WG8_SLAB;
    for (int64_t ch = ch0; ch < ch1; ch++)
      var->input(j, &l, x + ch * j->h * j->w, at + ch * WG8_SLAB, ldp);
  }
}

/* One part of the input channels of the shared V (plan_winograd_v_parts). */
static void shared_v_task(void *ctx, int part, int thread) {
  (void)thread;
  const wg8_job *j = ctx;
  int64_t cg = j->node->conv.cg;
  transform_inputs(j, j->x + j->image * j->c * j->h * j->w, 0, j->tiles,
                   cb_share_start(cg, part, j->v_parts), cb_share_start(cg, part + 1, j->v_parts),
                   j->plan->shared);
}

/* M[p][ch - m0][tiles] = U[p] V[p] for channels [m0, m1) (whole blocks of GEMM_MR from m0). */
static void products(const wg8_job *j, const float *v, int64_t nt, int64_t m0, int64_t m1,
                     float *m) {
  const plan_conv *c = &j->node->conv;
  int pos = positions(c);
  int64_t slabs = slabs_of(nt), ldm = slabs * WG8_SLAB, blocks = (c->o + GEMM_MR - 1) / GEMM_MR;
  for (int p = 0; p < pos; p++)
    for (int64_t r = m0; r < m1; r += GEMM_MR)
      for (int64_t s = 0; s < slabs; s++) {
        gemm_tile t = {.kc = c->cg,
                       .a = c->packed + ((p * blocks + r / GEMM_MR) * c->cg) * GEMM_MR,
                       .b = v + (p * slabs + s) * c->cg * WG8_SLAB,
                       .c = m + (p * (m1 - m0) + r - m0) * ldm + s * WG8_SLAB,
                       .ldc = ldm,
                       .mr = (int)(m1 - r < GEMM_MR ? m1 - r : GEMM_MR),
                       .nr = (int)(nt - s * WG8_SLAB < WG8_SLAB ? nt - s * WG8_SLAB : WG8_SLAB),
                       .last = false};
        j->plan->kernels->tile(&t);
      }
}

static void transform_outputs(const wg8_job *j, const float *m, int64_t t0, int64_t nt, int64_t m0,
                              int64_t m1, float *y, const float *res) {
  const wg8_variant *var = variant_of(&j->node->conv);
  int64_t ldm = slabs_of(nt) * WG8_SLAB, ldp = (m1 - m0) * ldm;
  for (int64_t q = 0; q < nt; q += 8) {
    lanes8 l;
    lanes_setup(j, var->tile, var->side, t0 + q, (int)(nt - q < 8 ? nt - q : 8), &l);
    for (int64_t ch = m0; ch < m1; ch++)
      var->output(j, &l, m + (ch - m0) * ldm + q, ldp, ch, y, res);
  }
}

static void wg8_task(void *ctx, int task, int thread) {
  const wg8_job *j = ctx;
  const plan_conv *c = &j->node->conv;
  /* channel parts vary fastest: a thread's share of the tasks is a range of tiles */
  int64_t part = task % j->m_parts, rest = task / j->m_parts;
  int64_t chunk = rest % j->n_chunks, img = c->shared_panel ? j->image : rest / j->n_chunks;
  int64_t t0 = chunk * c->nc, nt = j->tiles - t0 < c->nc ? j->tiles - t0 : c->nc;
  int64_t m0 = part * c->mc, m1 = m0 + c->mc < c->o ? m0 + c->mc : c->o;
  if (nt <= 0 || m0 >= m1) return;
  float *v = j->plan->scratch + (size_t)thread * j->plan->scratch_floats, *m = v;
  int64_t off = img * c->o * j->oh * j->ow;
  if (c->shared_panel) {
    v = j->plan->shared;
  } else {
    m += v_floats(c);
    transform_inputs(j, j->x + img * j->c * j->h * j->w, t0, nt, 0, c->cg, v);
  }
  int64_t groups = (m1 - m0 + group_of(c) - 1) / group_of(c);
  int64_t group = round_up((m1 - m0 + groups - 1) / groups, GEMM_MR);
  for (int64_t b = m0; b < m1; b += group) {
    int64_t b1 = b + group < m1 ? b + group : m1;
    products(j, v, nt, b, b1, m);
    transform_outputs(j, m, t0, nt, b, b1, j->y + off, j->res ? j->res + off : NULL);
  }
}

static void plan_winograd8_run(cb_plan *plan, const plan_node *n, const float *x, const float *res,
                               float *y) {
  const int64_t *in = plan->values[n->in[0]].shape, *out = plan->values[n->out].shape;
  const plan_conv *c = &n->conv;
  int tile = c->winograd;
  wg8_job j = {.plan = plan,
               .node = n,
               .x = x,
               .res = n->residual_in_place ? y : res,
               .y = y,
               .c = in[1],
               .h = in[2],
               .w = in[3],
               .oh = out[2],
               .ow = out[3],
               .tiles_w = (out[3] + tile - 1) / tile};
  j.tiles = tiles_of(out, tile);
  j.n_chunks = (j.tiles + c->nc - 1) / c->nc;
  j.m_parts = (c->o + c->mc - 1) / c->mc;
  if (!c->shared_panel) {
    cb_parallel_for((int)(j.n_chunks * j.m_parts * in[0]), wg8_task, &j);
    return;
  }
  j.v_parts = plan_winograd_v_parts(plan, n);
  for (j.image = 0; j.image < in[0]; j.image++) {
    cb_parallel_for((int)j.v_parts, shared_v_task, &j);
    cb_parallel_for((int)j.m_parts, wg8_task, &j);
  }
}

const plan_winograd_path plan_winograd_avx2 = {.fits = plan_winograd8_fits,
                                               .tile = plan_winograd8_tile,
                                               .scratch = plan_winograd8_scratch,
                                               .shared = plan_winograd8_shared,
                                               .run = plan_winograd8_run};
