/* Running a compiled plan, and its per-node profile. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "plan_internal.h"
#include "threads.h"

static int64_t numel(const plan_value *v) {
  return v->shape[0] * v->shape[1] * v->shape[2] * v->shape[3];
}

static cb_tensor view_of(const plan_value *v) {
  cb_tensor t = {.dtype = CB_F32, .ndim = 4, .data = v->data};
  memcpy(t.shape, v->shape, sizeof v->shape);
  return t;
}

static void run_affine(const plan_node *n, const plan_value *in, float *y) {
  int64_t plane = in->shape[2] * in->shape[3], c = in->shape[1];
  for (int64_t i = 0; i < in->shape[0] * c; i++) {
    const float *src = in->data + i * plane;
    float *dst = y + i * plane, a = n->scale[i % c], s = n->shift[i % c];
    for (int64_t q = 0; q < plane; q++) {
      float v = src[q] * a + s;
      dst[q] = n->relu && v < 0.0f ? 0.0f : v;
    }
  }
}

static void run_add(const plan_node *n, const float *a, const float *b, float *y, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    float v = a[i] + b[i];
    y[i] = n->relu && v < 0.0f ? 0.0f : v;
  }
}

CB_VECTOR static void run_relu(const float *x, float *y, int64_t count) {
  for (int64_t i = 0; i < count; i++)
    y[i] = fmaxf(x[i], 0.0f);
}

/* Nodes whose kernel returns a new tensor: copied into the arena. */
static int run_allocating(const plan_node *n, const plan_value *in, plan_value *out,
                          cb_error *err) {
  cb_tensor x = view_of(in);
  cb_tensor *y = n->kind == PN_OPAQUE ? cb_module_forward(n->module, &x, err)
                 : n->is_max          ? cb_max_pool2d(&x, &n->pool, err)
                                      : cb_avg_pool2d(&x, &n->pool, err);
  if (!y) return cb_error_prefix(err, "%s: ", n->name[0] ? n->name : "model");
  if (y->ndim != 4 || memcmp(y->shape, out->shape, sizeof out->shape) != 0) {
    cb_tensor_free(y);
    return cb_fail(err, "%s: output shape changed since the plan was compiled", n->name);
  }
  memcpy(out->data, y->data, (size_t)numel(out) * sizeof(float));
  cb_tensor_free(y);
  return 0;
}

static int run_node(cb_plan *plan, plan_node *n, cb_error *err) {
  plan_value *in = &plan->values[n->in[0]], *out = &plan->values[n->out];
  const float *second = n->in[1] >= 0 ? plan->values[n->in[1]].data : NULL;
  switch (n->kind) {
  case PN_CONV:
    plan_conv_run(plan, n, in->data, second, out->data);
    return 0;
  case PN_AFFINE:
    run_affine(n, in, out->data);
    return 0;
  case PN_RELU:
    run_relu(in->data, out->data, numel(out));
    return 0;
  case PN_ADD:
    if (!second) return cb_fail(err, "plan: an add node without its second input");
    run_add(n, in->data, second, out->data, numel(out));
    return 0;
  case PN_POOL:
    if (n->is_max) {
      plan_max_pool_run(plan, n, in, out);
      return 0;
    }
    return run_allocating(n, in, out, err);
  case PN_OPAQUE:
    return run_allocating(n, in, out, err);
  }
  return cb_fail(err, "plan: unknown node kind");
}

typedef struct copy_job {
  const float *src;
  float *dst;
  int64_t planes, plane;   /* plane: floats per channel plane */
  int64_t bands, per_band; /* bands of pixels, tasks per band */
  int64_t group;           /* planes per task */
} copy_job;

#define COPY_FLOATS 16384 /* per task */

/* A band of pixels of a group of planes. */
static void copy_task(void *ctx, int task, int thread) {
  (void)thread;
  const copy_job *c = ctx;
  int64_t band = task / c->per_band, p0 = task % c->per_band * c->group;
  int64_t p1 = p0 + c->group < c->planes ? p0 + c->group : c->planes;
  int64_t x0 = cb_share_start(c->plane, band, c->bands);
  int64_t x1 = cb_share_start(c->plane, band + 1, c->bands);
  for (int64_t p = p0; p < p1; p++)
    memcpy(c->dst + p * c->plane + x0, c->src + p * c->plane + x0,
           (size_t)(x1 - x0) * sizeof(float));
}

/* An output goes to the caller's tensor straight after its producer, while it is in cache; the
 * next layers read the arena's copy (measured faster than reading the caller's memory, which
 * is new to the cache every run: 1.5% of a one-thread ResNet-50). Each thread copies a band
 * of pixels, as the producers split them. */
static void copy_out(const cb_plan *plan, const plan_value *v) {
  copy_job c = {.src = v->data, .dst = v->copy_to, .plane = v->shape[2] * v->shape[3]};
  c.planes = v->shape[0] * v->shape[1];
  c.bands = plan->threads > 1 && c.plane >= 16 * plan->threads ? plan->threads : 1;
  int64_t band_floats = (c.plane + c.bands - 1) / c.bands;
  c.group = COPY_FLOATS / band_floats > 1 ? COPY_FLOATS / band_floats : 1;
  c.per_band = (c.planes + c.group - 1) / c.group;
  cb_parallel_for((int)(c.bands * c.per_band), copy_task, &c);
}

static int run_nodes(cb_plan *plan, cb_error *err) {
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    if (n->dead) continue;
    double t0 = plan->profile ? cb_clock_ms() : 0, idle0 = plan->profile ? cb_threads_idle_ms() : 0;
    if (run_node(plan, n, err)) return -1;
    if (plan->values[n->out].copy_to) copy_out(plan, &plan->values[n->out]);
    if (plan->profile) {
      n->ms_total += cb_clock_ms() - t0;
      n->idle_ms_total += cb_threads_idle_ms() - idle0;
    }
  }
  return 0;
}

static int run_nodes_profiled(cb_plan *plan, cb_error *err) {
  if (!plan->profile) return run_nodes(plan, err);
  cb_threads_count_idle(true);
  int rc = run_nodes(plan, err);
  cb_threads_count_idle(false);
  return rc;
}

/* The first place each output value takes in the caller's list, its tensor made before the
 * run so that its producer copies it there; the input, or a value listed twice, is copied
 * after the run. */
static int first_place(const cb_plan *plan, int i) {
  for (int k = 0; k < i; k++)
    if (plan->outputs[k] == plan->outputs[i]) return k;
  return i;
}

static bool bound_here(const cb_plan *plan, int i) {
  return first_place(plan, i) == i && plan->values[plan->outputs[i]].producer >= 0;
}

static void free_tensors(cb_tensor **t, int n) {
  for (int i = 0; i < n; i++)
    cb_tensor_free(t[i]);
  free(t);
}

static cb_tensor **bind_outputs(cb_plan *plan, cb_error *err) {
  cb_tensor **t = calloc((size_t)plan->n_outputs, sizeof *t);
  if (!t) {
    cb_fail(err, "plan: out of memory for %d outputs", plan->n_outputs);
    return NULL;
  }
  for (int i = 0; i < plan->n_outputs; i++) {
    plan_value *v = &plan->values[plan->outputs[i]];
    if (!bound_here(plan, i)) continue;
    if (!(t[i] = cb_tensor_empty(CB_F32, 4, v->shape, err))) {
      free_tensors(t, plan->n_outputs);
      return NULL;
    }
    if (v->in_caller)
      v->data = t[i]->data;
    else
      v->copy_to = t[i]->data;
  }
  return t;
}

static void unbind_outputs(cb_plan *plan) {
  for (int i = 0; i < plan->n_outputs; i++) {
    plan_value *v = &plan->values[plan->outputs[i]];
    v->copy_to = NULL;
    if (v->in_caller) v->data = NULL;
  }
}

/* Hands the outputs to outs, copying those not written in place; frees them on failure. */
static int hand_outputs(cb_plan *plan, cb_tensor **t, cb_tensor_list *outs, cb_error *err) {
  int rc = 0, base = outs->n;
  for (int i = 0; i < plan->n_outputs && !rc; i++) {
    const plan_value *v = &plan->values[plan->outputs[i]];
    /* a value listed again: from its first tensor (its arena bytes may be reused by now) */
    int first = first_place(plan, i);
    const float *src = first < i ? outs->items[base + first]->data : v->data;
    if (!t[i] && (t[i] = cb_tensor_empty(CB_F32, 4, v->shape, err)))
      memcpy(t[i]->data, src, (size_t)numel(v) * sizeof(float));
    if (!t[i]) {
      rc = -1;
      break;
    }
    rc = cb_tensor_list_push(outs, t[i], err); /* owns or frees t[i] */
    t[i] = NULL;
  }
  free_tensors(t, plan->n_outputs);
  return rc;
}

CB_API int cb_plan_run(cb_plan *plan, const cb_tensor *x, cb_tensor_list *outs, cb_error *err) {
  const plan_value *in = &plan->values[0];
  if (!x || x->dtype != CB_F32 || x->ndim != 4 ||
      memcmp(x->shape, in->shape, sizeof in->shape) != 0) {
    char want[128], got[128] = "none";
    cb_shape_format(4, in->shape, want, sizeof want);
    if (x) cb_shape_format(x->ndim, x->shape, got, sizeof got);
    return cb_fail(err, "plan: expected a float32 input of shape %s, found %s", want, got);
  }
  cb_tensor **made = bind_outputs(plan, err);
  if (!made) return -1;
  plan->values[0].data = x->data;
  int blas_threads = openblas_get_num_threads();
  cb_set_num_threads(plan->threads);
  openblas_set_num_threads(1); /* the pool's threads each run a single-threaded gemm */
  int rc = run_nodes_profiled(plan, err);
  openblas_set_num_threads(blas_threads);
  if (!rc)
    rc = hand_outputs(plan, made, outs, err);
  else
    free_tensors(made, plan->n_outputs);
  plan->values[0].data = NULL;
  unbind_outputs(plan);
  if (rc) return -1;
  plan->runs++;
  return 0;
}

CB_API void cb_plan_profile_enable(cb_plan *plan, bool on) {
  plan->profile = on;
}

CB_API void cb_plan_profile_reset(cb_plan *plan) {
  plan->runs = 0;
  for (int i = 0; i < plan->n_nodes; i++)
    plan->nodes[i].ms_total = plan->nodes[i].idle_ms_total = 0;
}

static const char *kind_name(const plan_node *n) {
  static const char *const names[] = {"conv", "affine", "relu", "add", "pool", "opaque"};
  if (n->kind == PN_CONV && n->in[2] >= 0) return n->relu ? "conv+conv+relu" : "conv+conv";
  if (n->kind == PN_CONV && n->in[1] >= 0) return n->relu ? "conv+add+relu" : "conv+add";
  if (n->kind == PN_CONV && n->relu) return "conv+relu";
  if (n->kind == PN_POOL) return n->is_max ? "maxpool" : "avgpool";
  return names[n->kind];
}

/* Which kernel a convolution runs: Winograd F(m x m, 3x3), the small-map kernel, the column
 * kernel (over a padded copy read in place for the stems), or OpenBLAS on im2col. */
static const char *kernel_name(const cb_plan *plan, const plan_node *n) {
  static const char *const winograd[] = {"", "", "winograd F(2x2)", "winograd F(3x3)",
                                         "winograd F(4x4)"};
  const plan_conv *c = &n->conv;
  if (n->kind != PN_CONV) return "";
  if (!plan->kernels) return "blas";
  if (c->winograd) return winograd[c->winograd];
  if (c->small) return c->stream_out ? "small-map, streamed" : "small-map";
  return c->padded ? "column, padded" : "column";
}

CB_API int cb_plan_profile_nodes(const cb_plan *plan) {
  int live = 0;
  for (int i = 0; i < plan->n_nodes; i++)
    live += !plan->nodes[i].dead;
  return live;
}

static const plan_node *live_node(const cb_plan *plan, int i) {
  for (int k = 0; k < plan->n_nodes; k++)
    if (!plan->nodes[k].dead && i-- == 0) return &plan->nodes[k];
  return NULL;
}

CB_API int cb_plan_profile_node(const cb_plan *plan, int i, cb_plan_node_profile *out) {
  const plan_node *n = i >= 0 ? live_node(plan, i) : NULL;
  if (!n) return -1;
  double runs = plan->runs > 0 ? (double)plan->runs : 1.0;
  *out = (cb_plan_node_profile){.name = n->name[0] ? n->name : "model",
                                .kind = kind_name(n),
                                .kernel = kernel_name(plan, n),
                                .ms = n->ms_total / runs,
                                .flops = n->flops,
                                .idle_ms = n->idle_ms_total / runs};
  memcpy(out->shape, plan->values[n->out].shape, sizeof out->shape);
  return 0;
}

CB_API void cb_plan_profile_print(const cb_plan *plan, FILE *out) {
  int nodes = cb_plan_profile_nodes(plan);
  double total = 0, idle = 0;
  cb_plan_node_profile p;
  for (int i = 0; i < nodes; i++)
    if (!cb_plan_profile_node(plan, i, &p)) {
      total += p.ms;
      idle += p.idle_ms;
    }
  fprintf(out, "%-28s %-14s %-19s %-18s %9s %9s %6s %9s\n", "node", "kind", "kernel", "output",
          "ms", "GFLOP/s", "share", "idle ms");
  for (int i = 0; i < nodes; i++) {
    if (cb_plan_profile_node(plan, i, &p)) continue;
    char shape[64];
    cb_shape_format(4, p.shape, shape, sizeof shape);
    fprintf(out, "%-28s %-14s %-19s %-18s %9.3f %9.1f %5.1f%% %9.3f\n", p.name, p.kind, p.kernel,
            shape, p.ms, p.ms > 0 ? p.flops / p.ms / 1e6 : 0.0,
            total > 0 ? 100.0 * p.ms / total : 0.0, p.idle_ms);
  }
  fprintf(out, "%-28s %-14s %-19s %-18s %9.3f %9s %6s %9.3f\n", "total", "", "", "", total, "", "",
          idle);
}
