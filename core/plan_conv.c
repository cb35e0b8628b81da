/* A plan's convolution: tiles of output columns (and, when there are few, of output
 * channels) run on the thread pool; each builds its im2col panel, multiplies it with the
 * packed weights and applies the epilogue (bias, residual, ReLU) while the tile is in cache. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "plan_gemm.h"
#include "plan_internal.h"
#include "threads.h"

#define PANEL_FLOATS (64 * 1024) /* im2col panel per thread: stays in L2 across row blocks */
#define TILE_FLOATS (512 * 1024) /* output tile */
#define MIN_COLS 32

static int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* The padded copy of an input with few channels is split by column phase (stride_w), so that
 * every im2col row of an output row is a run of consecutive floats: x[ch][phase][row][col]
 * for padded row `row` and padded column col * stride_w + phase. Columns per phase: */
static int64_t padded_cols(int64_t w, const cb_conv2d_params *p) {
  return (w + 2 * p->pad_w + p->stride_w - 1) / p->stride_w;
}

static int64_t padded_image(const plan_conv *c, int64_t h, int64_t w) {
  return c->cg * c->p.stride_w * (h + 2 * c->p.pad_h) * padded_cols(w, &c->p);
}

/* Weights in micro-kernel order: per group, per block of GEMM_MR rows, [k][GEMM_MR], the last
 * block padded with zero rows. The unpacked copy is freed. */
static int pack_weights(cb_plan *plan, plan_conv *c, cb_error *err) {
  int64_t og = c->o / c->p.groups, blocks = (og + GEMM_MR - 1) / GEMM_MR;
  float *packed =
      plan_weights(plan, sizeof(float) * (size_t)(c->p.groups * blocks * GEMM_MR * c->k));
  if (!packed) return cb_fail(err, "plan: out of memory packing weights");
  for (int g = 0; g < c->p.groups; g++)
    for (int64_t m = 0; m < og; m++) {
      const float *src = c->weight + (g * og + m) * c->k;
      float *dst = packed + ((g * blocks + m / GEMM_MR) * c->k) * GEMM_MR + m % GEMM_MR;
      for (int64_t k = 0; k < c->k; k++)
        dst[k * GEMM_MR] = src[k];
    }
  free(c->weight);
  c->weight = NULL;
  c->packed = packed;
  return 0;
}

bool plan_env_is(const char *value, const char *want) {
  return value && strcmp(value, want) == 0;
}

static const plan_winograd_path *winograd_path(const cb_plan *plan) {
  return plan->kernels->avx512 ? &plan_winograd_avx512 : &plan_winograd_avx2;
}

/* The output tile of a Winograd convolution, or 0: the cost rule, or CBRICK_WINOGRAD: 0 turns
 * Winograd off, 2, 3 or 4 picks F(2x2), F(3x3) or F(4x4) wherever it applies. On the AVX2
 * kernels, stride 1 undilated ones only. */
static int winograd_tile(const cb_plan *plan, const plan_node *n) {
  const char *env = getenv("CBRICK_WINOGRAD");
  bool (*fits)(const plan_node *, int) = winograd_path(plan)->fits;
  if (plan_env_is(env, "0")) return 0;
  if (plan_env_is(env, "2") || plan_env_is(env, "3") || plan_env_is(env, "4"))
    return fits(n, env[0] - '0') ? env[0] - '0' : 0;
  int tile = plan_winograd_pays(plan, n);
  return tile && fits(n, tile) ? tile : 0;
}

/* Where each im2col row (channel, kernel row, kernel column) starts in the padded copy, at
 * output (0, 0): kernel column kj reads phase (kj * dil_w) % stride_w, at column
 * (kj * dil_w) / stride_w of that phase. */
static int padded_offsets(plan_conv *c, int64_t h, int64_t w, cb_error *err) {
  const cb_conv2d_params *p = &c->p;
  int64_t cols = padded_cols(w, p), plane = (h + 2 * p->pad_h) * cols;
  c->b_off = malloc((size_t)c->k * sizeof *c->b_off);
  if (!c->b_off) return cb_fail(err, "plan: out of memory for %lld offsets", (long long)c->k);
  for (int64_t k = 0; k < c->k; k++) {
    int64_t ch = k / (c->kh * c->kw), ki = k / c->kw % c->kh, x = k % c->kw * p->dil_w;
    c->b_off[k] =
        (ch * p->stride_w + x % p->stride_w) * plane + ki * p->dil_h * cols + x / p->stride_w;
  }
  return 0;
}

/* A 1x1 convolution's GEMM B is its input: row k (input channel k) starts k * cols floats
 * after the first column, and its slabs are read there instead of packed (ResNet-50's 1x1
 * layers on the AVX-512 column kernel ran 2-5% faster, those of depth 64 alike). The AVX2
 * kernels pack: on a Zen 3 they ran most of those layers 20-30% slower in place. */
static int direct_offsets(plan_conv *c, int64_t cols, cb_error *err) {
  c->b_off = malloc((size_t)c->k * sizeof *c->b_off);
  if (!c->b_off) return cb_fail(err, "plan: out of memory for %lld offsets", (long long)c->k);
  for (int64_t k = 0; k < c->k; k++)
    c->b_off[k] = k * cols;
  return 0;
}

/* Whether input rows cols floats apart fall into an eighth or fewer of the cache's sets (a row
 * stride a multiple of 512 bytes): read in place, the rows of a slab would evict each other (on
 * a ResNet-50-D8's 64x128 maps, its 1x1 layers of depth 2048 ran 29% slower). */
static bool rows_alias(int64_t cols) {
  return cols * (int64_t)sizeof(float) % 512 == 0;
}

/* The kernels read whole vectors of 16 columns: a slab of another width is packed (zero
 * padded) rather than read past its end in place. */
static bool slab_in_place(const plan_conv *c, int64_t width) {
  return c->b_off && (width == GEMM_NR || width == GEMM_NR / 2);
}

/* A task per output row (padded_task), all output channels; no shared panel. */
static int tile_padded(cb_plan *plan, plan_node *n, cb_error *err) {
  plan_conv *c = &n->conv;
  const int64_t *in = plan->values[n->in[0]].shape;
  c->shared_panel = false;
  return pack_weights(plan, c, err) || padded_offsets(c, in[2], in[3], err) ? -1 : 0;
}

/* The fewest column tiles, or up to twice as many (of near-equal widths in whole slabs) when
 * that gives every thread the same number of tasks. */
static int64_t balanced_tiles(int64_t tiles, int64_t slabs, int64_t others, int threads) {
  for (int64_t t = tiles; threads > 1 && t <= 2 * tiles && t <= slabs; t++)
    if (t * others % threads == 0) return t;
  return tiles;
}

/* Row tiles of near-equal heights in whole blocks of align rows: the fewest from `tiles`, or
 * up to twice as many when that gives every thread the same number of tasks (`others` tasks
 * per row tile). */
static int64_t balanced_rows(int64_t rows, int64_t tiles, int64_t align, int64_t others,
                             int threads) {
  for (int64_t t = tiles; threads > 1 && t <= 2 * tiles && t * align <= rows; t++) {
    int64_t height = round_up((rows + t - 1) / t, align);
    if ((rows + height - 1) / height * others % threads == 0) return t;
  }
  return tiles;
}

/* Columns [n0, n1) of column tile tn: near-equal runs of whole slabs of align columns. */
static void col_range(const plan_conv *c, int64_t cols, int64_t tn, int64_t *n0, int64_t *n1) {
  int64_t align = c->packed ? GEMM_NR : 16, slabs = (cols + align - 1) / align;
  int64_t a = tn * slabs / c->n_tiles * align, b = (tn + 1) * slabs / c->n_tiles * align;
  *n0 = a < cols ? a : cols;
  *n1 = b < cols ? b : cols;
}

/* Kernel and tiles of one convolution: Winograd (3x3 stride 1 or 2, by its cost rule), the
 * small-map kernel (CBRICK_SMALL=0 turns it off) where it pads less, else the column
 * kernel over packed slabs; OpenBLAS without AVX-512. */
int plan_conv_tile(cb_plan *plan, plan_node *n, cb_error *err) {
  plan_conv *c = &n->conv;
  const int64_t *out = plan->values[n->out].shape;
  int64_t cols = out[2] * out[3], og = c->o / c->p.groups;
  int threads = plan->threads;
  bool fast = plan->kernels != NULL, avx512 = fast && plan->kernels->avx512;
  int64_t align = fast ? GEMM_NR : 16, row_align = fast ? GEMM_MR : 16;
  c->direct = c->kh == 1 && c->kw == 1 && c->p.stride_h == 1 && c->p.stride_w == 1 &&
              c->p.pad_h == 0 && c->p.pad_w == 0;
  int64_t nc = clamp64(PANEL_FLOATS / c->k, MIN_COLS, 4096);
  nc = clamp64(nc, MIN_COLS, clamp64(TILE_FLOATS / og, MIN_COLS, 4096)) / align * align;
  if (threads > 1)
    nc = clamp64(round_up((cols + 2 * threads - 1) / (2 * threads), align), MIN_COLS, nc);
  /* a map of at most a slab per thread (7x7 on two) splits unevenly by columns: by channels */
  if (nc > cols || (threads > 1 && (cols + align - 1) / align <= threads))
    nc = fast ? round_up(cols, align) : cols;
  int64_t n_tiles = (cols + nc - 1) / nc, m_tiles = fast ? (og + 503) / 504 : 1;
  if (threads > 1 && n_tiles * m_tiles * out[0] * c->p.groups < 2 * threads)
    m_tiles =
        clamp64((2 * threads + n_tiles - 1) / n_tiles, m_tiles, (og + row_align - 1) / row_align);
  m_tiles = balanced_rows(og, m_tiles, row_align, n_tiles * out[0] * c->p.groups, threads);
  c->mc = (int)round_up((og + m_tiles - 1) / m_tiles, row_align);
  if (!fast && c->mc > og) c->mc = (int)og;
  int64_t slabs = (cols + align - 1) / align,
          others = (og + c->mc - 1) / c->mc * out[0] * c->p.groups;
  c->n_tiles = (int)balanced_tiles((cols + nc - 1) / nc, slabs, others, threads);
  c->nc = (int)((slabs + c->n_tiles - 1) / c->n_tiles * align);
  if (c->nc > cols) c->nc = (int)(fast ? round_up(cols, align) : cols);
  c->shared_panel = fast && c->p.groups == 1 && (og + c->mc - 1) / c->mc > 1;
  int tile = fast ? winograd_tile(plan, n) : 0;
  if (tile) return winograd_path(plan)->tile(plan, n, tile, err);
  if (avx512 && plan_small_fits(plan, n) && !plan_env_is(getenv("CBRICK_SMALL"), "0"))
    return plan_small_tile(plan, n, err);
  /* With few input channels the per-row work of packing is tiny and locating the padding
   * dominates: such convolutions (the stems) read a padded copy in place instead. */
  c->padded = fast && !c->direct && c->p.groups == 1 && c->cg < 16;
  if (c->padded) return tile_padded(plan, n, err);
  if (avx512 && c->direct && !c->k_side && !rows_alias(cols)) {
    c->shared_panel = false;
    if (direct_offsets(c, cols, err)) return -1;
  }
  return fast ? pack_weights(plan, c, err) : 0;
}

/* The padded copy, and the floats that a row's last slab reads past the end of the copy. */
size_t plan_conv_padded(const cb_plan *plan, const plan_node *n) {
  const int64_t *in = plan->values[n->in[0]].shape;
  return n->conv.padded ? (size_t)(in[0] * padded_image(&n->conv, in[2], in[3]) + GEMM_NR) : 0;
}

size_t plan_conv_shared(const cb_plan *plan, const plan_node *n) {
  const int64_t *out = plan->values[n->out].shape;
  if (n->conv.small) return plan_small_shared(plan, n);
  if (n->conv.winograd) return winograd_path(plan)->shared(n);
  if (!n->conv.shared_panel) return 0;
  return (size_t)(n->conv.k * round_up(out[2] * out[3], GEMM_NR));
}

size_t plan_conv_scratch(const cb_plan *plan, const plan_node *n) {
  if (n->conv.winograd) return winograd_path(plan)->scratch(n);
  if (n->conv.small) return plan_small_scratch(plan, n);
  if (n->conv.shared_panel || n->conv.padded) return 0;
  if (n->conv.packed) return (size_t)(n->conv.k * n->conv.nc);
  return n->conv.direct ? 0 : (size_t)(n->conv.k * n->conv.nc);
}

typedef struct conv_job {
  cb_plan *plan;
  plan_node *node;
  const float *x, *residual;
  float *y;
  int64_t c, h, w, oh, ow, cols, og;
  int n_tiles, m_tiles;
  int image;             /* shared panel: the image being run */
  int64_t images, bands; /* padded copy: images, and bands of rows (one per thread) */
} conv_job;

/* Columns [n0, n1) of row krow (channel, kernel row, kernel column) of one image group's
 * im2col matrix. */
static void im2col_row(const conv_job *j, const float *img, int64_t krow, int64_t n0, int64_t n1,
                       float *dst) {
  const plan_conv *c = &j->node->conv;
  const cb_conv2d_params *p = &c->p;
  int64_t ch = krow / (c->kh * c->kw), ki = krow / c->kw % c->kh, kj = krow % c->kw;
  const float *plane = img + ch * j->h * j->w;
  int64_t dx = kj * p->dil_w - p->pad_w, sw = p->stride_w;
  for (int64_t q = n0; q < n1;) {
    int64_t oh = q / j->ow, ow0 = q % j->ow;
    int64_t len = j->ow - ow0 < n1 - q ? j->ow - ow0 : n1 - q;
    int64_t ih = oh * p->stride_h - p->pad_h + ki * p->dil_h;
    if (ih < 0 || ih >= j->h) {
      memset(dst, 0, (size_t)len * sizeof *dst);
    } else {
      /* valid t: 0 <= (ow0 + t) * sw + dx < w */
      int64_t lo = dx >= 0 ? 0 : clamp64((-dx + sw - 1) / sw - ow0, 0, len);
      int64_t hi = j->w - 1 - dx < 0 ? lo : clamp64((j->w - 1 - dx) / sw - ow0 + 1, lo, len);
      const float *src = plane + ih * j->w + ow0 * sw + dx;
      memset(dst, 0, (size_t)lo * sizeof *dst);
      if (sw == 1)
        memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof *dst);
      else
        for (int64_t t = lo; t < hi; t++)
          dst[t] = src[t * sw];
      memset(dst + hi, 0, (size_t)(len - hi) * sizeof *dst);
    }
    dst += len;
    q += len;
  }
}

/* Columns [n0, n1) of the whole im2col matrix, row-major [k][n1 - n0]. */
static void im2col_cols(const conv_job *j, const float *img, int64_t n0, int64_t n1, float *panel) {
  for (int64_t k = 0; k < j->node->conv.k; k++)
    im2col_row(j, img, k, n0, n1, panel + k * (n1 - n0));
}

/* One output row: y = y + b (+ r), then ReLU; cloned per ISA and chosen at load time. */

CB_VECTOR static void row_bias(float *restrict y, float b, int64_t len, bool relu) {
  if (relu)
    for (int64_t t = 0; t < len; t++)
      y[t] = fmaxf(y[t] + b, 0.0f);
  else
    for (int64_t t = 0; t < len; t++)
      y[t] += b;
}

CB_VECTOR static void row_bias_residual(float *restrict y, const float *restrict r, float b,
                                        int64_t len, bool relu) {
  if (relu)
    for (int64_t t = 0; t < len; t++)
      y[t] = fmaxf(y[t] + b + r[t], 0.0f);
  else
    for (int64_t t = 0; t < len; t++)
      y[t] += b + r[t];
}

static void epilogue(const conv_job *j, const float *bias, int64_t m0, int64_t m1, int64_t n0,
                     int64_t n1, float *y, const float *res) {
  bool relu = j->node->relu;
  for (int64_t m = m0; m < m1; m++) {
    float *row = y + m * j->cols + n0;
    if (res)
      row_bias_residual(row, res + m * j->cols + n0, bias[m], n1 - n0, relu);
    else
      row_bias(row, bias[m], n1 - n0, relu);
  }
}

/* A piece of output columns [c0, c1) within one output row: slab column, length, row and
 * first output column. */
typedef slab_piece out_piece;

static int out_pieces(const conv_job *j, int64_t c0, int64_t c1, out_piece *pieces) {
  int n = 0;
  int64_t oh = c0 / j->ow, ow0 = c0 % j->ow;
  for (int64_t q = c0; q < c1; oh++, ow0 = 0) {
    int64_t len = j->ow - ow0 < c1 - q ? j->ow - ow0 : c1 - q;
    pieces[n++] = (out_piece){(int)(q - c0), (int)len, oh, ow0};
    q += len;
  }
  return n;
}

/* The runs of kernel position (ki, kj) over the pieces; they are the same for every input
 * channel. Returns the number of runs. */
static int slab_runs(const conv_job *j, int64_t ki, int64_t kj, const out_piece *pieces,
                     int n_pieces, slab_run *runs) {
  const cb_conv2d_params *p = &j->node->conv.p;
  int64_t dx = kj * p->dil_w - p->pad_w, sw = p->stride_w;
  /* valid output columns o: first <= o < last, i.e. 0 <= o * sw + dx < w */
  int64_t first = dx >= 0 ? 0 : (-dx + sw - 1) / sw;
  int64_t last = j->w - 1 - dx < 0 ? 0 : (j->w - 1 - dx) / sw + 1;
  int n = 0;
  for (int i = 0; i < n_pieces; i++) {
    const out_piece *q = &pieces[i];
    int64_t ih = q->oh * p->stride_h - p->pad_h + ki * p->dil_h;
    if (ih < 0 || ih >= j->h) continue;
    int64_t lo = clamp64(first - q->ow0, 0, q->len), hi = clamp64(last - q->ow0, lo, q->len);
    if (hi > lo)
      runs[n++] =
          (slab_run){(int)(q->dst + lo), (int)(hi - lo), ih * j->w + (q->ow0 + lo) * sw + dx};
  }
  return n;
}

/* Columns [c0, c1) (at most GEMM_NR) of every im2col row into rows [k][ld] of dst, GEMM_NR
 * floats each, zero-padded. */
static void pack_cols(const conv_job *j, const float *img, int64_t c0, int64_t c1, float *dst,
                      int64_t ld) {
  const plan_conv *c = &j->node->conv;
  slab_run runs[GEMM_NR];
  if (c->direct) {
    runs[0] = (slab_run){0, (int)(c1 - c0), c0};
    j->plan->kernels->pack_rows(dst, ld, img, j->cols, c->k - c->k_side, runs, 1, 1);
    return;
  }
  out_piece pieces[GEMM_NR];
  int n_pieces = out_pieces(j, c0, c1, pieces);
  int64_t taps = c->kh * c->kw;
  for (int64_t ki = 0; ki < c->kh; ki++)
    for (int64_t kj = 0; kj < c->kw; kj++) {
      int n = slab_runs(j, ki, kj, pieces, n_pieces, runs);
      j->plan->kernels->pack_rows(dst + (ki * c->kw + kj) * ld, taps * ld, img, j->h * j->w, c->cg,
                                  runs, n, (int)c->p.stride_w);
    }
}

void plan_conv_pack_side(const cb_plan *plan, const plan_node *n, int64_t ow, int64_t image,
                         int64_t c0, int64_t c1, float *dst, int64_t ld) {
  const plan_value *v = &plan->values[n->in[2]];
  const int64_t *side = v->shape;
  const float *img = v->data + image * side[1] * side[2] * side[3];
  int64_t s = n->conv.side_stride;
  slab_run runs[GEMM_NR];
  int n_runs = 0;
  for (int64_t q = c0; q < c1; n_runs++) {
    int64_t oh = q / ow, ow0 = q % ow, len = ow - ow0 < c1 - q ? ow - ow0 : c1 - q;
    runs[n_runs] = (slab_run){(int)(q - c0), (int)len, (oh * side[3] + ow0) * s};
    q += len;
  }
  plan->kernels->pack_rows(dst, ld, img, side[2] * side[3], n->conv.k_side, runs, n_runs, (int)s);
}

/* Where image img, group g is packed from. */
static const float *pack_source(const conv_job *j, int64_t img, int g) {
  return j->x + (img * j->c + (int64_t)g * j->node->conv.cg) * j->h * j->w;
}

static void pack_slab(const conv_job *j, int64_t img, int g, int64_t c0, int64_t c1, float *slab) {
  const plan_conv *c = &j->node->conv;
  pack_cols(j, pack_source(j, img, g), c0, c1, slab, GEMM_NR);
  if (c->k_side)
    plan_conv_pack_side(j->plan, j->node, j->ow, img, c0, c1, slab + (c->k - c->k_side) * GEMM_NR,
                        GEMM_NR);
}

void plan_conv_im2col(cb_plan *plan, const plan_node *n, const int64_t *in, const int64_t *out,
                      const float *img, int64_t c0, int64_t c1, float *dst, int64_t ld) {
  conv_job j = {.plan = plan,
                .node = (plan_node *)n,
                .c = in[1],
                .h = in[2],
                .w = in[3],
                .oh = out[2],
                .ow = out[3],
                .cols = out[2] * out[3]};
  pack_cols(&j, img, c0, c1, dst, ld);
}

/* One column phase of one channel of the padded copy, zero borders, one band of its rows (a
 * task per phase, so that a three-channel input still splits evenly; a band per thread, the
 * rows its output rows read). */
CB_VECTOR static void pad_task(void *ctx, int task, int thread) {
  (void)thread;
  const conv_job *j = ctx;
  const cb_conv2d_params *p = &j->node->conv.p;
  int64_t rows = j->h + 2 * p->pad_h, cols = padded_cols(j->w, p), sw = p->stride_w;
  int64_t planes = j->c * j->images * sw, band = task / planes, plane = task % planes;
  int64_t ch = plane / sw, ph = plane % sw;
  int64_t r0 = cb_share_start(rows, band, j->bands), r1 = cb_share_start(rows, band + 1, j->bands);
  const float *src = j->x + ch * j->h * j->w;
  float *dst = j->plan->padded + (ch * sw + ph) * rows * cols + r0 * cols;
  for (int64_t r = r0; r < r1; r++, dst += cols) {
    int64_t y = r - p->pad_h;
    if (y < 0 || y >= j->h) {
      memset(dst, 0, (size_t)cols * sizeof(float));
      continue;
    }
    /* columns q0 <= q < q1 read inputs x = q * sw + ph - pad_w inside [0, w) */
    int64_t q0 = clamp64((p->pad_w - ph + sw - 1) / sw, 0, cols), last = j->w - 1 + p->pad_w - ph;
    int64_t q1 = last < 0 ? q0 : clamp64(last / sw + 1, q0, cols), n = q1 - q0;
    memset(dst, 0, (size_t)q0 * sizeof(float));
    memset(dst + q1, 0, (size_t)(cols - q1) * sizeof(float));
    if (n == 0) continue;
    const float *from = src + y * j->w + q0 * sw + ph - p->pad_w;
    if (sw == 1)
      memcpy(dst + q0, from, (size_t)n * sizeof(float));
    else if (sw == 2)
      for (int64_t q = 0; q < n; q++)
        dst[q0 + q] = from[2 * q];
    else
      for (int64_t q = 0; q < n; q++)
        dst[q0 + q] = from[q * sw];
  }
}

/* The residual that the tile kernels add in their epilogue, at out_off; written in place, it
 * is the output itself (each tile reads its part before storing over it). */
static const float *residual_at(const conv_job *j, int64_t out_off) {
  if (!j->residual) return NULL;
  return (j->node->residual_in_place ? j->y : j->residual) + out_off;
}

/* One output row of a convolution read in place from its padded copy: slabs of GEMM_NR
 * columns, the row's last one narrower where the width is not a multiple. */
static void padded_task(void *ctx, int task, int thread) {
  (void)thread;
  const conv_job *j = ctx;
  const plan_node *n = j->node;
  const plan_conv *c = &n->conv;
  int64_t img = task / j->oh, oh = task % j->oh;
  const float *x = j->plan->padded + img * padded_image(c, j->h, j->w) +
                   oh * c->p.stride_h * padded_cols(j->w, &c->p);
  int64_t out_off = img * c->o * j->cols + oh * j->ow;
  const float *res = residual_at(j, out_off);
  for (int64_t ow0 = 0; ow0 < j->ow; ow0 += GEMM_NR)
    for (int64_t m = 0; m < j->og; m += GEMM_MR) {
      gemm_tile t = {.kc = c->k,
                     .a = c->packed + m * c->k,
                     .b = x + ow0,
                     .b_off = c->b_off,
                     .c = j->y + out_off + m * j->cols + ow0,
                     .ldc = j->cols,
                     .mr = (int)(j->og - m < GEMM_MR ? j->og - m : GEMM_MR),
                     .nr = (int)(j->ow - ow0 < GEMM_NR ? j->ow - ow0 : GEMM_NR),
                     .last = true,
                     .bias = c->bias + m,
                     .res = res ? res + m * j->cols + ow0 : NULL,
                     .relu = n->relu};
      j->plan->kernels->tile(&t);
    }
}

/* Columns [n0, n1) of a packed 1x1 convolution's input into slabs, a row at a time: each input
 * row's run of columns is read in order (the AVX2 kernels' 1x1 layers 1.5-4% faster on a Zen 3
 * than slab by slab). */
static void pack_direct_rows(const conv_job *j, const float *src, int64_t n0, int64_t n1,
                             float *panel) {
  int64_t k = j->node->conv.k, full = (n1 - n0) / GEMM_NR, tail = (n1 - n0) % GEMM_NR;
  for (int64_t r = 0; r < k; r++) {
    const float *row = src + r * j->cols + n0;
    float *dst = panel + r * GEMM_NR;
    for (int64_t s = 0; s < full; s++)
      memcpy(dst + s * k * GEMM_NR, row + s * GEMM_NR, GEMM_NR * sizeof(float));
    if (tail) {
      float *d = dst + full * k * GEMM_NR;
      memcpy(d, row + full * GEMM_NR, (size_t)tail * sizeof(float));
      memset(d + tail, 0, (size_t)(GEMM_NR - tail) * sizeof(float));
    }
  }
}

/* A task's columns [n0, n1) of image img, group g, into its own panel: a packed 1x1
 * convolution's a row at a time, others slab by slab, skipping the slabs read in place. */
static void pack_task(const conv_job *j, int img, int g, int64_t n0, int64_t n1, float *panel) {
  const plan_conv *c = &j->node->conv;
  if (c->direct && !c->b_off && !c->k_side) {
    pack_direct_rows(j, pack_source(j, img, g), n0, n1, panel);
    return;
  }
  for (int64_t c0 = n0; c0 < n1; c0 += GEMM_NR) {
    int64_t c1 = c0 + GEMM_NR < n1 ? c0 + GEMM_NR : n1;
    if (!slab_in_place(c, c1 - c0))
      pack_slab(j, img, g, c0, c1, panel + (c0 - n0) / GEMM_NR * c->k * GEMM_NR);
  }
}

static void conv_task_fast(const conv_job *j, int g, int img, int64_t m0, int64_t m1, int64_t n0,
                           int64_t n1, int thread) {
  const plan_node *n = j->node;
  const plan_conv *c = &n->conv;
  int64_t out_off = ((int64_t)img * c->o + (int64_t)g * j->og) * j->cols;
  float *y = j->y + out_off;
  const float *res = residual_at(j, out_off);
  float *panel = c->shared_panel ? j->plan->shared + n0 * c->k
                                 : j->plan->scratch + (size_t)thread * j->plan->scratch_floats;
  int64_t slabs = (n1 - n0 + GEMM_NR - 1) / GEMM_NR, blocks = (j->og + GEMM_MR - 1) / GEMM_MR;
  if (!c->shared_panel) pack_task(j, img, g, n0, n1, panel);
  const float *a_group = c->packed + (int64_t)g * blocks * GEMM_MR * c->k;
  const float *bias = c->bias + (int64_t)g * j->og, *src = pack_source(j, img, g);
  for (int64_t m = m0; m < m1; m += GEMM_MR) {
    for (int64_t s = 0; s < slabs; s++) {
      int64_t c0 = n0 + s * GEMM_NR, c1 = c0 + GEMM_NR < n1 ? c0 + GEMM_NR : n1;
      bool in_place = slab_in_place(c, c1 - c0);
      gemm_tile t = {.kc = c->k,
                     .a = a_group + (m / GEMM_MR) * GEMM_MR * c->k,
                     .b = in_place ? src + c0 : panel + s * c->k * GEMM_NR,
                     .b_off = in_place ? c->b_off : NULL,
                     .c = y + m * j->cols + c0,
                     .ldc = j->cols,
                     .mr = (int)(m1 - m < GEMM_MR ? m1 - m : GEMM_MR),
                     .nr = (int)(n1 - c0 < GEMM_NR ? n1 - c0 : GEMM_NR),
                     .last = true,
                     .bias = bias + m,
                     .res = res ? res + m * j->cols + c0 : NULL,
                     .relu = n->relu};
      j->plan->kernels->tile(&t);
    }
  }
}

static void conv_task(void *ctx, int task, int thread) {
  const conv_job *j = ctx;
  const plan_node *n = j->node;
  const plan_conv *c = &n->conv;
  int groups = c->p.groups;
  /* channel tiles vary fastest: a thread's share of the tasks is a range of columns */
  int tm = task % j->m_tiles, rest = task / j->m_tiles;
  int tn = rest % j->n_tiles;
  rest /= j->n_tiles;
  int g = rest % groups, img = rest / groups;
  int64_t n0, n1, m0 = (int64_t)tm * c->mc, m1 = m0 + c->mc < j->og ? m0 + c->mc : j->og;
  col_range(c, j->cols, tn, &n0, &n1);
  if (m0 >= m1 || n0 >= n1) return;
  if (c->packed) {
    conv_task_fast(j, g, img, m0, m1, n0, n1, thread);
    return;
  }
  const float *x = j->x + ((int64_t)img * j->c + (int64_t)g * c->cg) * j->h * j->w;
  int64_t out_off = ((int64_t)img * c->o + (int64_t)g * j->og) * j->cols;
  float *y = j->y + out_off;
  const float *res = j->residual ? j->residual + out_off : NULL;
  const float *b;
  int64_t ldb;
  if (c->direct) {
    b = x + n0;
    ldb = j->cols;
  } else {
    float *panel = j->plan->scratch + (size_t)thread * j->plan->scratch_floats;
    im2col_cols(j, x, n0, n1, panel);
    b = panel;
    ldb = n1 - n0;
  }
  bool accumulate = res && n->residual_in_place; /* y already holds the residual */
  const float *a = c->weight + ((int64_t)g * j->og + m0) * c->k;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(m1 - m0), (int)(n1 - n0), (int)c->k,
              1.0f, a, (int)c->k, b, (int)ldb, accumulate ? 1.0f : 0.0f, y + m0 * j->cols + n0,
              (int)j->cols);
  epilogue(j, c->bias + (int64_t)g * j->og, m0, m1, n0, n1, y, accumulate ? NULL : res);
}

static void pack_shared_task(void *ctx, int task, int thread) {
  (void)thread;
  const conv_job *j = ctx;
  const plan_conv *c = &j->node->conv;
  int64_t c0 = (int64_t)task * GEMM_NR, c1 = c0 + GEMM_NR < j->cols ? c0 + GEMM_NR : j->cols;
  pack_slab(j, j->image, 0, c0, c1, j->plan->shared + c0 * c->k);
}

static void shared_task(void *ctx, int task, int thread) {
  const conv_job *j = ctx;
  const plan_conv *c = &j->node->conv;
  int tm = task % j->m_tiles, tn = task / j->m_tiles;
  int64_t n0, n1, m0 = (int64_t)tm * c->mc, m1 = m0 + c->mc < j->og ? m0 + c->mc : j->og;
  col_range(c, j->cols, tn, &n0, &n1);
  if (m0 < m1 && n0 < n1) conv_task_fast(j, 0, j->image, m0, m1, n0, n1, thread);
}

/* Input packed once per image (in parallel), then row and column tiles share it. */
static void run_shared(conv_job *j, int64_t images) {
  int slabs = (int)((j->cols + GEMM_NR - 1) / GEMM_NR);
  for (j->image = 0; j->image < images; j->image++) {
    cb_parallel_for(slabs, pack_shared_task, j);
    cb_parallel_for(j->n_tiles * j->m_tiles, shared_task, j);
  }
}

void plan_conv_run(cb_plan *plan, plan_node *n, const float *x, const float *residual, float *y) {
  if (n->conv.winograd) {
    winograd_path(plan)->run(plan, n, x, residual, y);
    return;
  }
  if (n->conv.small) {
    plan_small_run(plan, n, x, residual, y);
    return;
  }
  const int64_t *in = plan->values[n->in[0]].shape, *out = plan->values[n->out].shape;
  conv_job j = {.plan = plan,
                .node = n,
                .x = x,
                .residual = residual,
                .y = y,
                .c = in[1],
                .h = in[2],
                .w = in[3],
                .oh = out[2],
                .ow = out[3],
                .cols = out[2] * out[3],
                .og = n->conv.o / n->conv.p.groups};
  j.n_tiles = n->conv.n_tiles;
  j.m_tiles = (int)((j.og + n->conv.mc - 1) / n->conv.mc);
  if (n->conv.padded) {
    j.images = in[0];
    j.bands = plan->threads < j.h ? plan->threads : 1;
    cb_parallel_for((int)(j.bands * in[0] * in[1] * n->conv.p.stride_w), pad_task, &j);
    cb_parallel_for((int)(in[0] * j.oh), padded_task, &j);
    return;
  }
  if (n->conv.shared_panel) {
    run_shared(&j, in[0]);
    return;
  }
  cb_parallel_for((int)(j.n_tiles * j.m_tiles * n->conv.p.groups * in[0]), conv_task, &j);
}
