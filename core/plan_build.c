/* Building a plan: the node-emitting functions the lower hooks call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels_internal.h"
#include "plan_internal.h"

int plan_add_value(cb_plan *plan, const int64_t *shape, int producer, cb_error *err) {
  /* shape may point into plan->values, which the realloc below can move. */
  int64_t copy[sizeof plan->values[0].shape / sizeof(int64_t)];
  memcpy(copy, shape, sizeof copy);
  if (plan->n_values == plan->cap_values) {
    int cap = plan->cap_values ? plan->cap_values * 2 : 64;
    plan_value *v = realloc(plan->values, (size_t)cap * sizeof *v);
    if (!v) return cb_fail(err, "plan: out of memory");
    plan->values = v;
    plan->cap_values = cap;
  }
  plan_value *v = &plan->values[plan->n_values];
  *v = (plan_value){.producer = producer, .last_use = -1};
  memcpy(v->shape, copy, sizeof v->shape);
  return plan->n_values++;
}

int plan_check_value(const cb_plan_builder *b, int value, cb_error *err) {
  if (value < 0 || value >= b->plan->n_values)
    return cb_fail(err, "%s: plan: no value %d", b->name[0] ? b->name : "model", value);
  return 0;
}

int plan_add_node(cb_plan_builder *b, plan_kind kind, int in0, int in1, const int64_t *shape,
                  cb_error *err) {
  cb_plan *plan = b->plan;
  if (plan_check_value(b, in0, err) || (in1 >= 0 && plan_check_value(b, in1, err))) return -1;
  if (plan->n_nodes == plan->cap_nodes) {
    int cap = plan->cap_nodes ? plan->cap_nodes * 2 : 64;
    plan_node *n = realloc(plan->nodes, (size_t)cap * sizeof *n);
    if (!n) return cb_fail(err, "plan: out of memory");
    plan->nodes = n;
    plan->cap_nodes = cap;
  }
  int index = plan->n_nodes;
  int out = plan_add_value(plan, shape, index, err);
  if (out < 0) return -1;
  plan_node *n = &plan->nodes[index];
  *n = (plan_node){.kind = kind, .in = {in0, in1, -1}, .out = out, .name = strdup(b->name)};
  if (!n->name) return cb_fail(err, "plan: out of memory");
  plan->n_nodes++;
  return index;
}

CB_API const int64_t *cb_plan_shape(const cb_plan_builder *b, int value) {
  return value >= 0 && value < b->plan->n_values ? b->plan->values[value].shape : NULL;
}

CB_API const char *cb_plan_name(const cb_plan_builder *b) {
  return b->name;
}

CB_API int cb_plan_lower(cb_plan_builder *b, cb_module *m, const char *name, int input, int *output,
                         cb_error *err) {
  char saved[sizeof b->name];
  memcpy(saved, b->name, sizeof saved);
  snprintf(b->name, sizeof b->name, "%s", name);
  int rc = m->ops->lower ? m->ops->lower(m, b, input, output, err)
                         : cb_plan_opaque(b, m, input, output, err);
  memcpy(b->name, saved, sizeof saved);
  return rc;
}

CB_API int cb_plan_lower_child(cb_plan_builder *b, cb_module *m, const char *child_name, int input,
                               int *output, cb_error *err) {
  cb_module *child = cb_module_child(m, child_name);
  if (!child) return cb_fail(err, "%s: plan: no child '%s'", b->name, child_name);
  char name[sizeof b->name];
  int len = snprintf(name, sizeof name, "%s%s%s", b->name, b->name[0] ? "." : "", child_name);
  if (len < 0 || (size_t)len >= sizeof name)
    return cb_fail(err, "%s: plan: module path too long", b->name);
  return cb_plan_lower(b, child, name, input, output, err);
}

/* The output shape of an opaque module: its reference forward on zeros. */
CB_API int cb_plan_opaque(cb_plan_builder *b, cb_module *m, int input, int *output, cb_error *err) {
  if (plan_check_value(b, input, err)) return -1;
  if (!m->ops->forward)
    return cb_fail(err, "%s: plan: %s has no single-output forward to run", b->name,
                   cb_module_kind(m));
  cb_tensor *x = cb_tensor_new(CB_F32, 4, b->plan->values[input].shape, err);
  cb_tensor *y = x ? cb_module_forward(m, x, err) : NULL;
  cb_tensor_free(x);
  if (!y) return cb_error_prefix(err, "%s: plan: ", b->name);
  if (y->dtype != CB_F32 || y->ndim != 4) {
    cb_tensor_free(y);
    return cb_fail(err, "%s: plan: %s returns a tensor that is not float32 NCHW", b->name,
                   cb_module_kind(m));
  }
  int node = plan_add_node(b, PN_OPAQUE, input, -1, y->shape, err);
  cb_tensor_free(y);
  if (node < 0) return -1;
  b->plan->nodes[node].module = m;
  *output = b->plan->nodes[node].out;
  return 0;
}

static int conv_out_shape(const cb_plan_builder *b, const int64_t *in, const cb_tensor *w,
                          const cb_conv2d_params *p, int64_t *out, cb_error *err) {
  if (w->dtype != CB_F32 || w->ndim != 4 || p->groups < 1 || w->shape[1] * p->groups != in[1] ||
      w->shape[0] % p->groups)
    return cb_fail(err, "%s: plan: conv weight does not match a %lld-channel input", b->name,
                   (long long)in[1]);
  out[0] = in[0];
  out[1] = w->shape[0];
  out[2] = cb_window_out_size(in[2], (int)w->shape[2], p->stride_h, p->pad_h, p->dil_h, false);
  out[3] = cb_window_out_size(in[3], (int)w->shape[3], p->stride_w, p->pad_w, p->dil_w, false);
  if (out[2] < 1 || out[3] < 1)
    return cb_fail(err, "%s: plan: kernel larger than the padded %lldx%lld input", b->name,
                   (long long)in[2], (long long)in[3]);
  return 0;
}

CB_API int cb_plan_conv(cb_plan_builder *b, int input, const cb_tensor *weight,
                        const cb_tensor *bias, const cb_conv2d_params *p, int *output,
                        cb_error *err) {
  int64_t shape[4] = {0, 0, 0, 0};
  if (plan_check_value(b, input, err) ||
      conv_out_shape(b, b->plan->values[input].shape, weight, p, shape, err))
    return -1;
  int64_t o = weight->shape[0], k = weight->shape[1] * weight->shape[2] * weight->shape[3];
  if (bias && (bias->dtype != CB_F32 || cb_tensor_numel(bias) != o))
    return cb_fail(err, "%s: plan: conv bias must have %lld values", b->name, (long long)o);
  int node = plan_add_node(b, PN_CONV, input, -1, shape, err);
  if (node < 0) return -1;
  plan_node *n = &b->plan->nodes[node];
  plan_conv *c = &n->conv;
  *c = (plan_conv){.p = *p,
                   .o = o,
                   .cg = weight->shape[1],
                   .kh = weight->shape[2],
                   .kw = weight->shape[3],
                   .k = k};
  c->weight = malloc((size_t)(o * k) * sizeof(float));
  c->bias = calloc((size_t)o, sizeof(float));
  if (!c->weight || !c->bias) return cb_fail(err, "%s: plan: out of memory", b->name);
  memcpy(c->weight, weight->data, (size_t)(o * k) * sizeof(float));
  if (bias) memcpy(c->bias, bias->data, (size_t)o * sizeof(float));
  n->flops = 2.0 * (double)o * (double)k * (double)(shape[0] * shape[2] * shape[3]);
  *output = n->out;
  return 0;
}

CB_API int cb_plan_affine(cb_plan_builder *b, int input, const float *scale, const float *shift,
                          int channels, int *output, cb_error *err) {
  if (plan_check_value(b, input, err)) return -1;
  const int64_t *shape = b->plan->values[input].shape;
  if (shape[1] != channels)
    return cb_fail(err, "%s: plan: expected %d channels, found %lld", b->name, channels,
                   (long long)shape[1]);
  int node = plan_add_node(b, PN_AFFINE, input, -1, shape, err);
  if (node < 0) return -1;
  plan_node *n = &b->plan->nodes[node];
  n->scale = malloc((size_t)channels * sizeof(float));
  n->shift = malloc((size_t)channels * sizeof(float));
  if (!n->scale || !n->shift) return cb_fail(err, "%s: plan: out of memory", b->name);
  memcpy(n->scale, scale, (size_t)channels * sizeof(float));
  memcpy(n->shift, shift, (size_t)channels * sizeof(float));
  *output = n->out;
  return 0;
}

CB_API int cb_plan_relu(cb_plan_builder *b, int input, int *output, cb_error *err) {
  if (plan_check_value(b, input, err)) return -1;
  int node = plan_add_node(b, PN_RELU, input, -1, b->plan->values[input].shape, err);
  if (node < 0) return -1;
  *output = b->plan->nodes[node].out;
  return 0;
}

CB_API int cb_plan_add(cb_plan_builder *b, int a, int c, int *output, cb_error *err) {
  if (plan_check_value(b, a, err) || plan_check_value(b, c, err)) return -1;
  if (memcmp(b->plan->values[a].shape, b->plan->values[c].shape, sizeof(int64_t) * 4) != 0)
    return cb_fail(err, "%s: plan: the two operands of a sum differ in shape", b->name);
  int node = plan_add_node(b, PN_ADD, a, c, b->plan->values[a].shape, err);
  if (node < 0) return -1;
  *output = b->plan->nodes[node].out;
  return 0;
}

CB_API int cb_plan_pool(cb_plan_builder *b, int input, bool is_max, const cb_pool2d_params *p,
                        int *output, cb_error *err) {
  if (plan_check_value(b, input, err)) return -1;
  const int64_t *in = b->plan->values[input].shape;
  int dh = is_max ? p->dil_h : 1, dw = is_max ? p->dil_w : 1;
  int64_t shape[4] = {
      in[0], in[1], cb_window_out_size(in[2], p->kernel_h, p->stride_h, p->pad_h, dh, p->ceil_mode),
      cb_window_out_size(in[3], p->kernel_w, p->stride_w, p->pad_w, dw, p->ceil_mode)};
  if (shape[2] < 1 || shape[3] < 1)
    return cb_fail(err, "%s: plan: pooling window larger than the padded %lldx%lld input", b->name,
                   (long long)in[2], (long long)in[3]);
  int node = plan_add_node(b, PN_POOL, input, -1, shape, err);
  if (node < 0) return -1;
  b->plan->nodes[node].is_max = is_max;
  b->plan->nodes[node].pool = *p;
  *output = b->plan->nodes[node].out;
  return 0;
}

CB_API int cb_plan_mark_output(cb_plan_builder *b, int value, cb_error *err) {
  cb_plan *plan = b->plan;
  if (plan_check_value(b, value, err)) return -1;
  int *o = realloc(plan->outputs, (size_t)(plan->n_outputs + 1) * sizeof *o);
  if (!o) return cb_fail(err, "plan: out of memory");
  plan->outputs = o;
  o[plan->n_outputs++] = value;
  plan->values[value].is_output = true;
  return 0;
}
