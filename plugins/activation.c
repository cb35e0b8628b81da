#include <stdio.h>
#include <stdlib.h>
#include "cbrick.h"

typedef struct relu_impl {
  bool inplace;
} relu_impl;

static cb_tensor *relu_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  (void)m;
  if (x->dtype != CB_F32) {
    cb_fail(err, "ReLU: expected a float32 input, got %s", cb_dtype_name(x->dtype));
    return NULL;
  }
  cb_tensor *y = cb_tensor_clone(x, err);
  if (y) cb_relu_inplace(y);
  return y;
}

static int relu_lower(cb_module *m, cb_plan_builder *b, int input, int *output, cb_error *err) {
  (void)m;
  return cb_plan_relu(b, input, output, err);
}

static void relu_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const relu_impl *r = m->impl;
  snprintf(buf, cap, "%s", r->inplace ? "inplace=True" : "");
}

static const cb_module_ops relu_ops = {
    .kind = "ReLU", .forward = relu_forward, .extra_repr = relu_extra_repr, .lower = relu_lower};

static cb_module *build_relu(cb_args *args, cb_error *err) {
  relu_impl *r = calloc(1, sizeof *r);
  if (!r) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  cb_module *m = cb_args_bool(args, "inplace", false, &r->inplace, err)
                     ? NULL
                     : cb_module_new(&relu_ops, r, err);
  if (!m) free(r);
  return m;
}

static const cb_plugin_entry entries[] = {{"ACTIVATION_LAYERS", "ReLU", build_relu, "relu"},
                                          {NULL}};

CB_PLUGIN("activation", "Activations (ReLU)", entries);
