/* Convolutions over small maps (7x7, 14x14), and 1x1 convolutions with 64 output channels:
 * the output is computed transposed, SMALL_PR pixels broadcast against SMALL_NO output
 * channels in vectors, so that 49 or 196 pixels split into whole blocks of 7 instead of being
 * padded to a multiple of GEMM_NR, and 64 channels are not padded to a multiple of GEMM_MR.
 * The input is read in place (1x1 stride 1) or from one im2col matrix shared by all tasks;
 * each task owns a chunk of output channels and pixels, accumulates it in a buffer and
 * writes it back transposed with the epilogue. */
#include <stdlib.h>

#include "plan_gemm.h"
#include "plan_internal.h"
#include "threads.h"

#define SMALL_KC 64        /* depth per pass over the buffer: its weights stay in L1 */
#define SMALL_CT 16384     /* outputs per task */
#define SMALL_MAX_COLS 256 /* larger maps need an im2col matrix too large to share */
#define SMALL_SPLIT 16     /* pixel blocks per thread for the pixels to be split by thread */

static int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

/* Chosen when it pads less than the column kernel: rows of GEMM_MR channels and columns of
 * GEMM_NR pixels there, SMALL_NO channels and SMALL_PR pixels here. */
bool plan_small_fits(const cb_plan *plan, const plan_node *n) {
  const plan_conv *c = &n->conv;
  const int64_t *out = plan->values[n->out].shape;
  int64_t cols = out[2] * out[3], og = c->o / c->p.groups;
  if (c->p.groups != 1 || (cols > SMALL_MAX_COLS && !c->direct)) return false;
  double column = (double)(round_up(cols, GEMM_NR) * round_up(og, GEMM_MR));
  double small = (double)(round_up(cols, SMALL_PR) * round_up(og, SMALL_NO));
  /* on large maps the column kernel's panels pay off unless it pads many channels (64 to 72) */
  return small < (cols > SMALL_MAX_COLS ? 0.9 : 0.97) * column;
}

/* Weights as [o / SMALL_NO][k][SMALL_NO], the last block padded with zero channels. */
static int pack_weights(cb_plan *plan, plan_conv *c, cb_error *err) {
  int64_t blocks = (c->o + SMALL_NO - 1) / SMALL_NO;
  float *packed = plan_weights(plan, sizeof(float) * (size_t)(blocks * SMALL_NO * c->k));
  if (!packed) return cb_fail(err, "plan: out of memory packing weights");
  for (int64_t m = 0; m < c->o; m++) {
    float *dst = packed + (m / SMALL_NO) * c->k * SMALL_NO + m % SMALL_NO;
    for (int64_t k = 0; k < c->k; k++)
      dst[k * SMALL_NO] = c->weight[m * c->k + k];
  }
  free(c->weight);
  c->weight = NULL;
  c->packed = packed;
  return 0;
}

/* Pixels per chunk to start from: with several threads and enough pixel blocks for each, one
 * thread's share of them, so that each thread reads the pixels it wrote in the layer before
 * (the pool runs the first share of tasks on the first thread, and so on). A 14x14 map (28
 * blocks) splits by channels instead: ResNet-101 on two threads then took 33.8 ms per run
 * instead of 34.3 where the two cores share no cache, and 27.7 instead of 28.4 where they
 * share one. */
static int64_t first_nc(int64_t cols, int threads) {
  int64_t blocks = (cols + SMALL_PR - 1) / SMALL_PR;
  if (threads > 1 && blocks >= SMALL_SPLIT * threads)
    return (blocks + threads - 1) / threads * SMALL_PR;
  return round_up(cols, SMALL_PR);
}

/* Whether the output is written with non-temporal stores: a bottleneck's last convolution on
 * two or more threads, each task's output one contiguous range (all its pixels). It writes
 * over its residual, which both threads read in the block's first convolution: where the
 * cores share no cache, every store to a line the other core still holds waited for that copy
 * to be invalidated. Non-temporal stores do not wait: ResNet-101's layer3 conv3 on two
 * threads took 0.31 instead of 0.41 ms, and the next layer, which then reads its input from
 * memory, was no slower (ResNet-101 6-7% faster). Where the cores share a cache it costs about
 * 1%. CBRICK_STREAM=0 turns this off. */
static bool streams_out(const cb_plan *plan, const plan_node *n, int64_t cols) {
  return plan->streams && plan->threads > 1 && n->in[1] >= 0 && n->conv.nc >= cols;
}

/* Chunks: mc output channels by nc pixels per task, at most SMALL_CT floats, and at least two
 * tasks per thread when the layer allows. On several threads a layer split by channels alone
 * takes a task per block of SMALL_NO channels: each block reads the same inputs however they
 * are grouped, and a thread that falls behind leaves whole blocks for the others to take. */
int plan_small_tile(cb_plan *plan, plan_node *n, cb_error *err) {
  plan_conv *c = &n->conv;
  const int64_t *out = plan->values[n->out].shape;
  int64_t cols = out[2] * out[3], images = out[0];
  int64_t mc = round_up(c->o, SMALL_NO), nc = first_nc(cols, plan->threads);
  while (mc > SMALL_NO && mc * nc > SMALL_CT)
    mc = round_up(mc / 2, SMALL_NO);
  while (nc > SMALL_PR && mc * nc > SMALL_CT)
    nc = round_up(nc / 2, SMALL_PR);
  int want = plan->threads > 1 ? 2 * plan->threads : 1;
  for (;;) {
    int64_t tasks = images * ((c->o + mc - 1) / mc) * ((cols + nc - 1) / nc);
    if (tasks >= want) break;
    if (mc > SMALL_NO)
      mc = round_up(mc / 2, SMALL_NO);
    else if (nc > SMALL_PR)
      nc = round_up(nc / 2, SMALL_PR);
    else
      break;
  }
  if (plan->threads > 1 && nc >= cols) mc = SMALL_NO;
  c->mc = (int)mc;
  c->nc = (int)nc;
  c->small = true;
  c->shared_panel = false;
  c->stream_out = streams_out(plan, n, cols);
  return pack_weights(plan, c, err);
}

static int64_t im2col_ld(const plan_value *out) {
  return round_up(out->shape[2] * out->shape[3], GEMM_NR);
}

/* Whether tasks read a copy made per image: the input's im2col matrix, or the rows of a
 * merged convolution's side input taken at its stride. */
static bool gathers(const plan_conv *c) {
  return !c->direct || (c->k_side && c->side_stride > 1);
}

size_t plan_small_shared(const cb_plan *plan, const plan_node *n) {
  const plan_conv *c = &n->conv;
  if (!gathers(c)) return 0;
  return (size_t)((c->direct ? c->k_side : c->k) * im2col_ld(&plan->values[n->out]));
}

/* The accumulators of one block of SMALL_NO channels, then, where the output is streamed, the
 * block's output staged for the copy. */
size_t plan_small_scratch(const cb_plan *plan, const plan_node *n) {
  const int64_t *out = plan->values[n->out].shape;
  size_t staged = n->conv.stream_out ? (size_t)round_up(SMALL_NO * out[2] * out[3], 16) : 0;
  return (size_t)SMALL_NO * (size_t)n->conv.nc + staged;
}

typedef struct small_job {
  cb_plan *plan;
  const plan_node *node;
  const int64_t *in, *out;
  const float *x, *res, *side;
  float *y;
  int64_t cols, m_tiles, n_tiles;
  int image; /* im2col: the image being run */
} small_job;

/* y[m][p] = acc + bias (+ residual), then ReLU, for channels [m, m + rows) of the task's
 * pixels, while the accumulators are in L1. */
static void write_back(const small_job *j, float *acc, int64_t m, int rows, int64_t p0, int64_t p1,
                       float *y, const float *res) {
  float *dst = y + m * j->cols;
  /* whole lines only: ResNets' blocks of 32 channels always are */
  bool stream = j->node->conv.stream_out && !((uintptr_t)dst & 63) && rows * j->cols % 16 == 0;
  float *staged = acc + SMALL_NO * j->node->conv.nc;
  small_out o = {.acc = acc,
                 .rows = rows,
                 .pixels = p1 - p0,
                 .ldy = j->cols,
                 .y = stream ? staged : dst + p0,
                 .res = res ? res + m * j->cols + p0 : NULL,
                 .bias = j->node->conv.bias + m,
                 .relu = j->node->relu};
  plan_small_store(&o);
  if (stream) plan_stream_copy(dst, staged, rows * j->cols);
}

/* Row k of the GEMM's A (depth k, every pixel), its stride, and how many rows follow it in
 * the same source: the input or its im2col copy, then a merged side input or its copy. */
static const float *depth_rows(const small_job *j, int64_t img, int64_t k, int64_t *lda,
                               int64_t *rows) {
  const plan_conv *c = &j->node->conv;
  int64_t main_k = c->k - c->k_side, ld = im2col_ld(&j->plan->values[j->node->out]);
  bool copy = k < main_k ? !c->direct : c->side_stride > 1;
  const float *src =
      k < main_k ? j->x + img * main_k * j->cols : j->side + img * c->k_side * j->cols;
  *rows = k < main_k ? main_k - k : c->k - k;
  if (k >= main_k) k -= main_k;
  *lda = copy ? ld : j->cols;
  return copy ? j->plan->shared + k * ld : src + k * j->cols;
}

static void run_chunk(const small_job *j, int64_t img, int64_t tm, int64_t tn, int thread) {
  const plan_node *n = j->node;
  const plan_conv *c = &n->conv;
  int64_t m0 = tm * c->mc, m1 = m0 + c->mc < c->o ? m0 + c->mc : c->o;
  int64_t p0 = tn * c->nc, p1 = p0 + c->nc < j->cols ? p0 + c->nc : j->cols;
  float *acc = j->plan->scratch + (size_t)thread * j->plan->scratch_floats;
  int64_t off = img * c->o * j->cols;
  const float *res = j->res ? j->res + off : NULL;
  if (res && n->residual_in_place) res = j->y + off;
  int64_t blocks = (m1 - m0 + SMALL_NO - 1) / SMALL_NO;
  for (int64_t b = 0; b < blocks; b++) {
    const float *w = c->packed + (m0 / SMALL_NO + b) * c->k * SMALL_NO;
    for (int64_t k0 = 0, kc; k0 < c->k; k0 += kc) {
      int64_t lda, rows;
      const float *a = depth_rows(j, img, k0, &lda, &rows);
      kc = rows < SMALL_KC ? rows : SMALL_KC;
      small_run r = {.n = p1 - p0,
                     .kc = kc,
                     .lda = lda,
                     .a = a + p0,
                     .w = w + k0 * SMALL_NO,
                     .c = acc,
                     .load_c = k0 > 0,
                     .next = w + (k0 + kc) * SMALL_NO,
                     .next_lines = b + 1 < blocks || k0 + kc < c->k ? 2 * SMALL_KC : 0};
      plan_gemm_small_run(&r);
    }
    int64_t m = m0 + b * SMALL_NO;
    write_back(j, acc, m, (int)(m1 - m < SMALL_NO ? m1 - m : SMALL_NO), p0, p1, j->y + off, res);
  }
}

static void chunk_task(void *ctx, int task, int thread) {
  const small_job *j = ctx;
  int64_t per_image = j->m_tiles * j->n_tiles;
  int64_t img = gathers(&j->node->conv) ? j->image : task / per_image, rest = task % per_image;
  /* channel chunks vary fastest: a thread's share of the tasks is a range of pixels */
  run_chunk(j, img, rest % j->m_tiles, rest / j->m_tiles, thread);
}

static void im2col_task(void *ctx, int task, int thread) {
  (void)thread;
  const small_job *j = ctx;
  const plan_node *n = j->node;
  int64_t c0 = (int64_t)task * GEMM_NR, c1 = c0 + GEMM_NR < j->cols ? c0 + GEMM_NR : j->cols;
  const float *img = j->x + (int64_t)j->image * j->in[1] * j->in[2] * j->in[3];
  plan_conv_im2col(j->plan, n, j->in, j->out, img, c0, c1, j->plan->shared + c0,
                   im2col_ld(&j->plan->values[n->out]));
}

static void gather_side_task(void *ctx, int task, int thread) {
  (void)thread;
  const small_job *j = ctx;
  const plan_node *n = j->node;
  int64_t c0 = (int64_t)task * GEMM_NR, c1 = c0 + GEMM_NR < j->cols ? c0 + GEMM_NR : j->cols;
  plan_conv_pack_side(j->plan, n, j->out[3], j->image, c0, c1, j->plan->shared + c0,
                      im2col_ld(&j->plan->values[n->out]));
}

void plan_small_run(cb_plan *plan, const plan_node *n, const float *x, const float *res, float *y) {
  const int64_t *in = plan->values[n->in[0]].shape, *out = plan->values[n->out].shape;
  small_job j = {.plan = plan, .node = n, .in = in, .out = out, .x = x, .res = res, .y = y};
  j.side = n->in[2] >= 0 ? plan->values[n->in[2]].data : NULL;
  j.cols = out[2] * out[3];
  j.m_tiles = (n->conv.o + n->conv.mc - 1) / n->conv.mc;
  j.n_tiles = (j.cols + n->conv.nc - 1) / n->conv.nc;
  int per_image = (int)(j.m_tiles * j.n_tiles);
  if (!gathers(&n->conv)) {
    cb_parallel_for(per_image * (int)in[0], chunk_task, &j);
    return;
  }
  for (j.image = 0; j.image < in[0]; j.image++) {
    cb_parallel_for((int)((j.cols + GEMM_NR - 1) / GEMM_NR),
                    n->conv.direct ? gather_side_task : im2col_task, &j);
    cb_parallel_for(per_image, chunk_task, &j);
  }
}
