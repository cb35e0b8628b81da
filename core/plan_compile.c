/* Compiling a plan: BatchNorm folded into convolutions, ReLU and residual sums moved into
 * their epilogue, then liveness and a first-fit activation arena. */
#include <stdlib.h>
#include <string.h>

#include "plan_gemm.h"
#include "plan_internal.h"
#include "threads.h"

#define ARENA_ALIGN 64
/* Outputs up to this size that later nodes read stay in the arena (and are copied out), where
 * the cache still holds them for those readers; larger ones would not stay in cache anyway. */
#define COPY_OUT_BYTES ((size_t)8 << 20)

static size_t value_bytes(const plan_value *v) {
  return (size_t)(v->shape[0] * v->shape[1] * v->shape[2] * v->shape[3]) * sizeof(float);
}

static void count_uses(cb_plan *plan) {
  for (int i = 0; i < plan->n_values; i++)
    plan->values[i].uses = 0;
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < PLAN_INPUTS; k++)
      if (n->in[k] >= 0) plan->values[n->in[k]].uses++;
  }
}

/* The live conv producing value v that may take one more epilogue step, or NULL. */
static plan_node *fusable_producer(cb_plan *plan, int v, bool want_conv) {
  plan_value *val = &plan->values[v];
  if (val->producer < 0 || val->uses != 1 || val->is_output) return NULL;
  plan_node *p = &plan->nodes[val->producer];
  if (p->dead || p->relu) return NULL;
  if (want_conv && (p->kind != PN_CONV || p->in[1] >= 0)) return NULL;
  return p;
}

/* The fused node now writes what n wrote. */
static void absorb(cb_plan *plan, plan_node *into, plan_node *n) {
  plan->values[n->in[0]].uses--;
  into->out = n->out;
  plan->values[n->out].producer = (int)(into - plan->nodes);
  n->dead = true;
}

static bool fold_affine(cb_plan *plan, plan_node *n) {
  plan_node *c = fusable_producer(plan, n->in[0], true);
  if (!c) return false;
  for (int64_t o = 0; o < c->conv.o; o++) {
    float *w = c->conv.weight + o * c->conv.k;
    for (int64_t k = 0; k < c->conv.k; k++)
      w[k] *= n->scale[o];
    c->conv.bias[o] = c->conv.bias[o] * n->scale[o] + n->shift[o];
  }
  absorb(plan, c, n);
  return true;
}

/* out = conv(...) + other: the sum moves into the conv when other exists before it. */
static bool fuse_add(cb_plan *plan, plan_node *n) {
  for (int k = 1; k >= 0; k--) {
    plan_node *c = fusable_producer(plan, n->in[k], true);
    int other = n->in[1 - k];
    if (!c || other == n->in[k] || plan->values[other].producer >= (int)(c - plan->nodes)) continue;
    c->in[1] = other;
    plan->values[n->in[k]].uses--;
    c->out = n->out;
    plan->values[n->out].producer = (int)(c - plan->nodes);
    n->dead = true;
    return true;
  }
  return false;
}

static bool fuse_relu(cb_plan *plan, plan_node *n) {
  plan_node *p = fusable_producer(plan, n->in[0], false);
  if (!p || (p->kind != PN_CONV && p->kind != PN_AFFINE && p->kind != PN_ADD)) return false;
  p->relu = true;
  absorb(plan, p, n);
  return true;
}

/* A live 1x1 convolution without padding, dilation or groups, of equal strides. */
static bool plain_pointwise(const plan_node *n) {
  const plan_conv *c = &n->conv;
  const cb_conv2d_params *p = &c->p;
  return n->kind == PN_CONV && !n->dead && c->kh == 1 && c->kw == 1 && p->groups == 1 &&
         p->pad_h == 0 && p->pad_w == 0 && p->dil_h == 1 && p->dil_w == 1 &&
         p->stride_h == p->stride_w && n->in[2] < 0;
}

/* "layer1.0.conv3" and "layer1.0.downsample.0" give "layer1.0.conv3+downsample.0". */
static char *merged_name(const char *a, const char *b) {
  size_t common = 0;
  for (size_t i = 0; a[i] && a[i] == b[i]; i++)
    if (a[i] == '.') common = i + 1;
  size_t len = strlen(a) + strlen(b + common) + 2;
  char *name = malloc(len);
  if (name) snprintf(name, len, "%s+%s", a, b + common);
  return name;
}

/* [main | side] per output channel: the side's depth follows the main's. */
static float *concat_weights(const plan_conv *main, const plan_conv *side) {
  int64_t k = main->k + side->k;
  float *w = malloc((size_t)(main->o * k) * sizeof *w);
  if (!w) return NULL;
  for (int64_t o = 0; o < main->o; o++) {
    memcpy(w + o * k, main->weight + o * main->k, (size_t)main->k * sizeof *w);
    memcpy(w + o * k + main->k, side->weight + o * side->k, (size_t)side->k * sizeof *w);
  }
  return w;
}

/* n = conv_b(b) + r with r = conv_a(a) read by n alone, both 1x1 (a bottleneck's conv3 and
 * its downsample): one GEMM over the depth of both, in n's place, with the stride-1 one's
 * input as the main input and the other's as the side input. */
static int merge_pointwise(cb_plan *plan, plan_node *n, cb_error *err) {
  if (!plain_pointwise(n) || n->in[1] < 0) return 0;
  const plan_value *r = &plan->values[n->in[1]];
  if (r->producer < 0 || r->uses != 1 || r->is_output) return 0;
  plan_node *a = &plan->nodes[r->producer];
  if (!plain_pointwise(a) || a->in[1] >= 0 || a->relu || a->conv.o != n->conv.o) return 0;
  plan_node *main = a->conv.p.stride_h == 1 ? a : n, *side = main == a ? n : a;
  if (main->conv.p.stride_h != 1) return 0;
  float *w = concat_weights(&main->conv, &side->conv);
  char *name = merged_name(a->name, n->name);
  if (!w || !name) {
    free(w);
    free(name);
    return cb_fail(err, "plan: out of memory merging %s into %s", a->name, n->name);
  }
  for (int64_t o = 0; o < n->conv.o; o++)
    n->conv.bias[o] += a->conv.bias[o];
  int main_in = main->in[0], side_in = side->in[0];
  plan_conv merged = main->conv;
  merged.weight = w;
  merged.bias = n->conv.bias;
  merged.k = main->conv.k + side->conv.k;
  merged.k_side = side->conv.k;
  merged.side_stride = side->conv.p.stride_h;
  free(a->conv.weight);
  free(a->conv.bias);
  a->conv = (plan_conv){.o = a->conv.o};
  free(n->conv.weight);
  n->conv = merged;
  n->in[0] = main_in;
  n->in[1] = -1;
  n->in[2] = side_in;
  free(n->name);
  n->name = name;
  n->flops += a->flops;
  a->flops = 0;
  a->dead = true;
  return 0;
}

static int fuse(cb_plan *plan, cb_error *err) {
  count_uses(plan);
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    if (n->kind == PN_AFFINE)
      fold_affine(plan, n);
    else if (n->kind == PN_ADD)
      fuse_add(plan, n);
    else if (n->kind == PN_RELU)
      fuse_relu(plan, n);
  }
  count_uses(plan);
  /* The merged GEMM packs both inputs into one panel: the packed path only. */
  for (int i = 0; plan->kernels && i < plan->n_nodes; i++)
    if (merge_pointwise(plan, &plan->nodes[i], err)) return -1;
  count_uses(plan);
  return 0;
}

/* ---- the arena: blocks sorted by offset, first fit ---- */

typedef struct arena_block {
  size_t offset, size;
  int value;
} arena_block;

typedef struct arena {
  arena_block *blocks;
  int n;
  size_t peak;
} arena;

static int arena_place(arena *a, int value, size_t size, size_t *offset) {
  size = (size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
  size_t at = 0;
  int i = 0;
  for (; i < a->n; i++) {
    if (a->blocks[i].offset >= at + size) break;
    at = a->blocks[i].offset + a->blocks[i].size;
  }
  arena_block *b = realloc(a->blocks, (size_t)(a->n + 1) * sizeof *b);
  if (!b) return -1;
  a->blocks = b;
  memmove(b + i + 1, b + i, (size_t)(a->n - i) * sizeof *b);
  b[i] = (arena_block){at, size, value};
  a->n++;
  if (at + size > a->peak) a->peak = at + size;
  *offset = at;
  return 0;
}

static void arena_release(arena *a, int value) {
  for (int i = 0; i < a->n; i++)
    if (a->blocks[i].value == value) {
      memmove(a->blocks + i, a->blocks + i + 1, (size_t)(a->n - i - 1) * sizeof *a->blocks);
      a->n--;
      return;
    }
}

/* Hands a dying input's block to the output when the node may write over its input. */
static bool arena_hand_over(arena *a, int from, int to) {
  for (int i = 0; i < a->n; i++)
    if (a->blocks[i].value == from) {
      a->blocks[i].value = to;
      return true;
    }
  return false;
}

static void find_last_uses(cb_plan *plan) {
  for (int i = 0; i < plan->n_values; i++)
    plan->values[i].last_use = -1;
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < PLAN_INPUTS; k++)
      if (n->in[k] >= 0 && plan->values[n->in[k]].last_use < i) plan->values[n->in[k]].last_use = i;
  }
}

/* The input a node may overwrite with its output (elementwise, same size), or -1. */
static int in_place_input(const cb_plan *plan, const plan_node *n, int index) {
  int cand = n->kind == PN_CONV                                                ? n->in[1]
             : n->kind == PN_RELU || n->kind == PN_AFFINE || n->kind == PN_ADD ? n->in[0]
                                                                               : -1;
  if (cand <= 0) return -1; /* never the caller's input */
  const plan_value *v = &plan->values[cand];
  if (v->last_use != index || v->in_caller) return -1;
  if (n->kind == PN_CONV && cand == n->in[0]) return -1;
  return cand;
}

static int plan_arena(cb_plan *plan, cb_error *err) {
  arena a = {0};
  find_last_uses(plan);
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    if (n->dead) continue;
    plan_value *out = &plan->values[n->out];
    plan->values_bytes += value_bytes(out);
    out->in_caller =
        out->is_output && (out->last_use < 0 || value_bytes(out) > COPY_OUT_BYTES); /* no arena */
    int inplace = out->in_caller ? -1 : in_place_input(plan, n, i);
    if (inplace >= 0 && arena_hand_over(&a, inplace, n->out)) {
      out->offset = plan->values[inplace].offset;
      n->residual_in_place = n->kind == PN_CONV;
    } else if (!out->in_caller && arena_place(&a, n->out, value_bytes(out), &out->offset)) {
      free(a.blocks);
      return cb_fail(err, "plan: out of memory");
    }
    for (int k = 0; k < PLAN_INPUTS; k++)
      if (n->in[k] > 0 && n->in[k] != inplace && plan->values[n->in[k]].last_use == i)
        arena_release(&a, n->in[k]);
    if (out->last_use < 0) arena_release(&a, n->out); /* never read */
  }
  free(a.blocks);
  plan->arena_bytes = a.peak;
  plan->arena = a.peak ? plan_alloc(a.peak) : NULL;
  if (a.peak && !plan->arena)
    return cb_fail(err, "plan: out of memory for a %zu-byte activation arena", a.peak);
  for (int i = 1; i < plan->n_values; i++)
    plan->values[i].data = plan->arena && !plan->values[i].in_caller
                               ? (float *)plan->arena + plan->values[i].offset / sizeof(float)
                               : NULL;
  return 0;
}

static int plan_scratch(cb_plan *plan, cb_error *err) {
  size_t most = 0, shared = 0;
  plan_weights_reserve(plan);
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    if (!n->dead && n->kind == PN_POOL && n->is_max) {
      size_t row =
          pool_row_floats(&n->pool, plan->values[n->in[0]].shape[3], plan->values[n->out].shape[3]);
      most = row > most ? row : most;
    }
    if (n->dead || n->kind != PN_CONV) continue;
    if (plan_conv_tile(plan, n, err)) return -1;
    size_t s = plan_conv_scratch(plan, n);
    if (s > most) most = s;
    if (plan_conv_shared(plan, n) > shared) shared = plan_conv_shared(plan, n);
    if (plan_conv_padded(plan, n) > plan->padded_floats)
      plan->padded_floats = plan_conv_padded(plan, n);
  }
  plan_weights_trim(plan);
  if (plan->padded_floats && !(plan->padded = plan_alloc(plan->padded_floats * sizeof(float))))
    return cb_fail(err, "plan: out of memory for padded inputs");
  plan->shared_floats = shared;
  if (shared && !(plan->shared = plan_alloc(shared * sizeof(float))))
    return cb_fail(err, "plan: out of memory for packed inputs");
  plan->scratch_floats = (most + 15) / 16 * 16; /* im2col panels, or a max pool's row */
  if (!most) return 0;
  plan->scratch = plan_alloc(plan->scratch_floats * sizeof(float) * (size_t)plan->threads);
  return plan->scratch ? 0 : cb_fail(err, "plan: out of memory for im2col panels");
}

int plan_finish(cb_plan *plan, cb_error *err) {
  return fuse(plan, err) || plan_arena(plan, err) || plan_scratch(plan, err) ? -1 : 0;
}

static int check_eval(const char *name, cb_module *m, void *ud) {
  cb_error *err = ud;
  if (!m->training) return 0;
  cb_fail(err,
          "plan: module '%s' (%s) is in training mode; plans run eval mode only (train mode "
          "uses the reference forward)",
          name[0] ? name : "model", cb_module_kind(m));
  return 1;
}

CB_API void cb_plan_free(cb_plan *plan) {
  if (!plan) return;
  for (int i = 0; i < plan->n_nodes; i++) {
    plan_node *n = &plan->nodes[i];
    free(n->name);
    free(n->conv.weight);
    free(n->conv.bias);
    plan_weights_free(plan, n->conv.packed);
    free(n->conv.b_off);
    free(n->scale);
    free(n->shift);
  }
  free(plan->nodes);
  free(plan->values);
  free(plan->outputs);
  free(plan->arena);
  free(plan->scratch);
  free(plan->shared);
  free(plan->padded);
  plan_weights_release(plan);
  free(plan);
}

CB_API cb_plan *cb_plan_compile(cb_module *m, const int64_t *input_shape, int threads,
                                cb_error *err) {
  if (!m || !input_shape) {
    cb_fail(err, "plan: no model or no input shape");
    return NULL;
  }
  for (int i = 0; i < 4; i++)
    if (input_shape[i] < 1) {
      cb_fail(err, "plan: the input shape must be N x C x H x W with positive sizes");
      return NULL;
    }
  if (cb_module_visit(m, check_eval, err)) return NULL;
  cb_plan *plan = calloc(1, sizeof *plan);
  cb_plan_builder *b = calloc(1, sizeof *b);
  if (!plan || !b) {
    free(plan);
    free(b);
    cb_fail(err, "plan: out of memory");
    return NULL;
  }
  plan->threads = threads > 0 ? threads : cb_threads_default();
  plan->kernels = plan_kernels_best();
  plan->streams = !plan_env_is(getenv("CBRICK_STREAM"), "0");
  b->plan = plan;
  int out = -1;
  int rc = plan_add_value(plan, input_shape, -1, err) < 0 ? -1 : 0;
  if (!rc && !m->ops->lower && !m->ops->forward)
    rc = cb_fail(err, "plan: %s has neither a lower hook nor a single-output forward",
                 cb_module_kind(m));
  if (!rc) rc = cb_plan_lower(b, m, "", 0, &out, err);
  if (!rc && plan->n_outputs == 0) rc = cb_plan_mark_output(b, out, err);
  free(b);
  if (rc || plan_finish(plan, err)) {
    cb_plan_free(plan);
    return NULL;
  }
  return plan;
}

CB_API void cb_plan_get_stats(const cb_plan *plan, cb_plan_stats *s) {
  *s = (cb_plan_stats){.arena_bytes = plan->arena_bytes,
                       .values_bytes = plan->values_bytes,
                       .isa = plan->kernels ? plan->kernels->isa : "portable"};
  for (int i = 0; i < plan->n_nodes; i++) {
    const plan_node *n = &plan->nodes[i];
    if (n->kind == PN_CONV) s->convs++;
    if (n->kind == PN_CONV && !n->dead) {
      s->flops += n->flops;
      int64_t og = n->conv.o / n->conv.p.groups;
      bool by32 = n->conv.small || (n->conv.winograd && plan->kernels && plan->kernels->avx512);
      int64_t rows = by32             ? (n->conv.o + 31) / 32 * 32
                     : n->conv.packed ? n->conv.p.groups * ((og + 11) / 12 * 12)
                                      : n->conv.o;
      int64_t depth = n->conv.winograd ? plan_winograd_positions(n) * n->conv.cg : n->conv.k;
      s->weight_bytes += (size_t)(rows * depth + n->conv.o) * sizeof(float);
      s->winograd += n->conv.winograd > 0;
      s->streamed += n->conv.stream_out;
    }
    if (n->dead) {
      s->fused_bn += n->kind == PN_AFFINE;
      s->fused_relu += n->kind == PN_RELU;
      s->fused_add += n->kind == PN_ADD;
      s->merged_convs += n->kind == PN_CONV;
      continue;
    }
    s->nodes++;
    s->opaque += n->kind == PN_OPAQUE;
  }
}
