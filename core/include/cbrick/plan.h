#ifndef CBRICK_PLAN_H
#define CBRICK_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include "kernels.h"
#include "module.h"

/* A compiled eval-mode forward pass of a module tree: a list of nodes over numbered values
 * (value 0 is the input), convolutions with BatchNorm folded in and ReLU / residual sums in
 * their epilogue, pre-packed weights and one activation arena reused as values die. The tree
 * is only read while compiling; it is never changed, and must outlive the plan only when the
 * plan holds opaque nodes (modules without a lower hook run their reference forward). */
typedef struct cb_plan cb_plan;
typedef struct cb_plan_builder cb_plan_builder;

/* ---- emitting nodes (for lower hooks) ---- */

/* Lowers m on value input: calls m->ops->lower, or emits an opaque node that runs m's
 * reference forward. name is m's dotted path, used by the profile. */
CB_API int cb_plan_lower(cb_plan_builder *b, cb_module *m, const char *name, int input, int *output,
                         cb_error *err);
/* The dotted name of the module being lowered ("" at the root); children append to it. */
CB_API const char *cb_plan_name(const cb_plan_builder *b);
/* cb_plan_lower of m's child called child_name, named "<current>.<child_name>". */
CB_API int cb_plan_lower_child(cb_plan_builder *b, cb_module *m, const char *child_name, int input,
                               int *output, cb_error *err);
/* An opaque node: m's reference forward on value input. */
CB_API int cb_plan_opaque(cb_plan_builder *b, cb_module *m, int input, int *output, cb_error *err);
/* Convolution; weight [O, C/groups, kh, kw] and bias [O] (or NULL) are copied. */
CB_API int cb_plan_conv(cb_plan_builder *b, int input, const cb_tensor *weight,
                        const cb_tensor *bias, const cb_conv2d_params *p, int *output,
                        cb_error *err);
/* y[c] = x[c] * scale[c] + shift[c] over channels (eval BatchNorm); arrays are copied. */
CB_API int cb_plan_affine(cb_plan_builder *b, int input, const float *scale, const float *shift,
                          int channels, int *output, cb_error *err);
CB_API int cb_plan_relu(cb_plan_builder *b, int input, int *output, cb_error *err);
/* a + c, same shapes. */
CB_API int cb_plan_add(cb_plan_builder *b, int a, int c, int *output, cb_error *err);
CB_API int cb_plan_pool(cb_plan_builder *b, int input, bool is_max, const cb_pool2d_params *p,
                        int *output, cb_error *err);
/* Marks value as the next output of the plan. */
CB_API int cb_plan_mark_output(cb_plan_builder *b, int value, cb_error *err);
/* The NCHW shape of a value. */
CB_API const int64_t *cb_plan_shape(const cb_plan_builder *b, int value);

/* ---- compiling and running ---- */

/* Lowers m (which must be in eval mode) for inputs of shape input_shape (NCHW) and compiles
 * the plan for threads threads (0: CBRICK_NUM_THREADS or 1). A root without a lower hook and
 * without single-output forward is refused. */
CB_API cb_plan *cb_plan_compile(cb_module *m, const int64_t *input_shape, int threads,
                                cb_error *err);
CB_API void cb_plan_free(cb_plan *plan);
/* Runs on x (the compiled shape); appends one new tensor per output to outs. */
CB_API int cb_plan_run(cb_plan *plan, const cb_tensor *x, cb_tensor_list *outs, cb_error *err);

typedef struct cb_plan_stats {
  int nodes; /* nodes run */
  int convs, fused_bn, fused_relu, fused_add, opaque;
  int winograd;        /* 3x3 convs run as Winograd F(2x2, 3x3) */
  size_t arena_bytes;  /* the activation arena */
  size_t values_bytes; /* every activation summed, as without reuse */
  size_t weight_bytes; /* packed weights */
  double flops;        /* direct-convolution multiply-adds x 2 per run (also for Winograd) */
  int merged_convs;    /* 1x1 convs run inside another's GEMM (a downsample with its conv3) */
  const char *isa;     /* the convolutions' kernels: "avx512", "avx2" or "portable" (OpenBLAS) */
  int streamed;        /* convs whose output is written with non-temporal stores */
} cb_plan_stats;
CB_API void cb_plan_get_stats(const cb_plan *plan, cb_plan_stats *out);

/* The kernels that a plan compiled now runs its convolutions on: "avx512", "avx2" or
 * "portable"; the best the processor has, capped by the environment variable CBRICK_ISA. */
CB_API const char *cb_kernels_isa(void);

/* Per-node timing, accumulated over the runs since the last reset when enabled. */
CB_API void cb_plan_profile_enable(cb_plan *plan, bool on);
CB_API void cb_plan_profile_reset(cb_plan *plan);
/* One node's profile, averaged over the runs since the last reset. The strings live as long
 * as the plan. */
typedef struct cb_plan_node_profile {
  const char *name;   /* the module's dotted path; "model" for the root */
  const char *kind;   /* "conv+add+relu", "maxpool", "opaque", ... */
  const char *kernel; /* a convolution's kernel ("winograd F(4x4)", "column", ...), else "" */
  int64_t shape[4];   /* the output */
  double ms, flops, idle_ms;
} cb_plan_node_profile;
/* The nodes that a run executes (fused ones excluded), and node i of them: 0, or -1 where i
 * is not in [0, cb_plan_profile_nodes) (out is then left as it was). */
CB_API int cb_plan_profile_nodes(const cb_plan *plan);
CB_API int cb_plan_profile_node(const cb_plan *plan, int i, cb_plan_node_profile *out);
/* Writes one line per node: name, kind, kernel, output shape, ms per run, GFLOP/s, share, and
 * the threads' idle ms per run: in each of the node's parallel loops, every thread's time from
 * running out of tasks to the loop's end, summed over the threads (0 on one thread). */
CB_API void cb_plan_profile_print(const cb_plan *plan, FILE *out);

/* Threads used by kernels outside a plan too (the thread pool and OpenBLAS). */
CB_API void cb_set_num_threads(int threads);
CB_API int cb_get_num_threads(void);

/* Runs fn(ctx, task, thread) for every task in [0, n_tasks) on the library's thread pool
 * (the caller is thread 0; thread < cb_get_num_threads()) and returns when all are done;
 * thread t first runs the t-th of as many contiguous shares of the tasks as there are threads
 * (so that loops split alike keep each thread on the same data), then takes tasks from the end
 * of the others' shares. For plugin layers' own loops. Called from inside a task,
 * it runs the tasks there, one after the other. */
typedef void (*cb_task_fn)(void *ctx, int task, int thread);
CB_API void cb_parallel_for(int n_tasks, cb_task_fn fn, void *ctx);

#endif
