#ifndef CBRICK_PLAN_INTERNAL_H
#define CBRICK_PLAN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include "cbrick/plan.h"

/* Element-wise loops compiled for AVX-512, AVX2 and plain x86-64, picked at run time. */
#if defined(__clang__)
#define CB_VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CB_VECTOR __attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
#endif

#define PLAN_INPUTS 3

typedef enum plan_kind { PN_CONV, PN_AFFINE, PN_RELU, PN_ADD, PN_POOL, PN_OPAQUE } plan_kind;

typedef struct plan_conv {
  cb_conv2d_params p;
  int64_t o, cg, kh, kw, k; /* out channels, in channels per group, kernel, gemm depth */
  float *weight;            /* [o][k], BatchNorm folded in */
  float *bias;              /* [o], always present */
  int nc, mc;               /* column and row tile of the threaded gemm */
  bool stream_out;          /* small-map: output written past the caches (plan_small.c) */
  int n_tiles;              /* column kernel: tiles of at most nc columns (col_range) */
  bool direct;              /* 1x1, stride 1, no padding: the input is the gemm's B */
  float *packed;            /* AVX-512 path: per group, blocks of GEMM_MR rows, [k][GEMM_MR] */
  bool shared_panel;        /* row tiles share one packed input (Winograd: V), built first */
  int winograd;             /* 3x3 as F(w x w, 3x3), w = 2 or 4 (2 at stride 2), else 0; packed U */
  bool small;               /* small-map kernel; packed holds [o / SMALL_NO][k][SMALL_NO] */
  bool padded;              /* few input channels: read in place from a padded, phase-split copy */
  int64_t *b_off; /* B read in place: where each GEMM row starts, from the first column (padded:
                   * in the copy, at output (0, 0); direct: in the input) */
  /* A second 1x1 convolution merged into this one's GEMM: the last k_side rows of the depth
   * read the node's side input (in[2]) at stride side_stride, so y = W [x; side] + bias. */
  int64_t k_side;
  int side_stride;
} plan_conv;

typedef struct plan_node {
  plan_kind kind;
  char *name;
  /* values; in[1]: a conv's residual or an add's second operand, in[2]: a conv's side input
   * (plan_conv.k_side), else -1 */
  int in[PLAN_INPUTS];
  int out;
  bool relu; /* ReLU in the epilogue */
  bool dead; /* fused into another node */
  bool residual_in_place;
  plan_conv conv;
  float *scale, *shift; /* affine */
  bool is_max;          /* pool */
  cb_pool2d_params pool;
  cb_module *module; /* opaque */
  double flops;
  double ms_total;
  double idle_ms_total; /* the threads' idle time in the node's loops, summed over threads */
} plan_node;

typedef struct plan_value {
  int64_t shape[4];
  int producer; /* node index, -1 for the input */
  int uses;
  int last_use;
  bool is_output;
  /* An output that no node reads, or a large one, is written straight into the tensor handed
   * to the caller (in_caller); one that later nodes read lives in the arena like any other
   * value and, during a run, is copied into the caller's tensor (copy_to) as soon as its
   * producer has run. */
  bool in_caller;
  float *copy_to;
  size_t offset; /* in the arena */
  float *data;
} plan_value;

struct cb_plan {
  plan_node *nodes;
  int n_nodes, cap_nodes;
  plan_value *values;
  int n_values, cap_values;
  int *outputs;
  int n_outputs;
  int threads;
  const struct plan_kernels
      *kernels; /* the packed path's (plan_gemm.h), chosen at compile; NULL: portable */
  float *arena;
  size_t arena_bytes, values_bytes;
  float *scratch; /* im2col panels, scratch_floats per thread */
  size_t scratch_floats;
  float *shared; /* the packed input of a shared_panel conv */
  size_t shared_floats;
  float *padded; /* the padded input of a padded conv */
  size_t padded_floats;
  char *weights; /* every conv's packed weights, one reserved range on huge pages */
  size_t weights_reserved, weights_used;
  bool profile;
  long runs;
  bool streams; /* non-temporal stores allowed (plan_small.c); not with CBRICK_STREAM=0 */
};

struct cb_plan_builder {
  cb_plan *plan;
  char name[1024];
};

int plan_add_value(cb_plan *plan, const int64_t *shape, int producer, cb_error *err);
/* Appends a node reading in0 (and in1 or -1) with a new output of shape; returns its index. */
int plan_add_node(cb_plan_builder *b, plan_kind kind, int in0, int in1, const int64_t *shape,
                  cb_error *err);
int plan_check_value(const cb_plan_builder *b, int value, cb_error *err);

/* Zeroed, 64-byte aligned memory for the plan's weights and buffers, freed by free(); the
 * whole 2 MiB pages of large blocks on transparent huge pages where the system allows, so
 * that streaming 100 MiB of weights through every run walks few page tables (plan_memory.c). */
void *plan_alloc(size_t bytes);
/* The packed weights' range, reserved for the most that the plan's convs may pack into;
 * without it (the system refused) plan_weights falls back to plan_alloc. */
void plan_weights_reserve(cb_plan *plan);
void *plan_weights(cb_plan *plan, size_t bytes);
void plan_weights_free(cb_plan *plan, void *p);
/* Returns the range past the last huge page written (after packing). */
void plan_weights_trim(cb_plan *plan);
void plan_weights_release(cb_plan *plan);

/* Fusions, weight packing and the arena (plan_compile.c). */
int plan_finish(cb_plan *plan, cb_error *err);
/* Scratch floats per thread of a max pool over rows of w inputs and ow outputs, and the
 * pool itself (plan_maxpool.c). */
size_t pool_row_floats(const cb_pool2d_params *p, int64_t w, int64_t ow);
void plan_max_pool_run(cb_plan *plan, const plan_node *n, const plan_value *in,
                       const plan_value *out);
/* Convolution of one node (plan_conv.c). */
void plan_conv_run(cb_plan *plan, plan_node *n, const float *x, const float *residual, float *y);
int plan_conv_tile(cb_plan *plan, plan_node *n, cb_error *err);
size_t plan_conv_scratch(const cb_plan *plan, const plan_node *n);
size_t plan_conv_shared(const cb_plan *plan, const plan_node *n);
size_t plan_conv_padded(const cb_plan *plan, const plan_node *n);
/* Columns [c0, c1) (at most GEMM_NR) of the im2col matrix of one image group into rows
 * [k][ld] of dst (GEMM_NR floats written per row); in and out are the NCHW shapes. */
void plan_conv_im2col(cb_plan *plan, const plan_node *n, const int64_t *in, const int64_t *out,
                      const float *img, int64_t c0, int64_t c1, float *dst, int64_t ld);
/* Columns [c0, c1) (at most GEMM_NR) of image `image` of the side input of a merged
 * convolution (plan_conv.k_side) into rows [k_side][ld] of dst, for an output ow columns wide. */
void plan_conv_pack_side(const cb_plan *plan, const plan_node *n, int64_t ow, int64_t image,
                         int64_t c0, int64_t c1, float *dst, int64_t ld);
/* Whether an environment switch's value (getenv's, NULL when unset) is `want`. */
bool plan_env_is(const char *value, const char *want);
/* The small-map kernel: output pixels broadcast, output channels in vectors (plan_small.c). */
bool plan_small_fits(const cb_plan *plan, const plan_node *n);
int plan_small_tile(cb_plan *plan, plan_node *n, cb_error *err);
size_t plan_small_scratch(const cb_plan *plan, const plan_node *n);
size_t plan_small_shared(const cb_plan *plan, const plan_node *n);
void plan_small_run(cb_plan *plan, const plan_node *n, const float *x, const float *res, float *y);
/* Whether F(tile x tile, 3x3) applies on the AVX-512 kernels (also the AVX2 rule's start). */
bool plan_winograd_fits(const plan_node *n, int tile);
/* Transformed positions per tile of a Winograd convolution. */
int plan_winograd_positions(const plan_node *n);
/* The output tile (2, 3 or 4) that the cost rule picks, or 0 for none. */
int plan_winograd_pays(const cb_plan *plan, const plan_node *n);
/* A Winograd implementation: F(2x2), F(3x3), F(4x4) at stride 1 and F(2x2) at stride 2 on
 * the AVX-512 kernels (plan_winograd.c), stride 1 undilated on the AVX2 ones
 * (plan_winograd8.c). */
typedef struct plan_winograd_path {
  bool (*fits)(const plan_node *n, int tile);
  int (*tile)(cb_plan *plan, plan_node *n, int tile, cb_error *err);
  size_t (*scratch)(const plan_node *n);
  /* The V shared by the tasks of a convolution split by output channels, or 0. */
  size_t (*shared)(const plan_node *n);
  void (*run)(cb_plan *plan, const plan_node *n, const float *x, const float *res, float *y);
} plan_winograd_path;

extern const plan_winograd_path plan_winograd_avx512, plan_winograd_avx2;

#endif
