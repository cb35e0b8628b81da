#include "cbrick/module.h"

cb_tensor *cb_sequential_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  if (m->n_children == 0) return cb_tensor_clone(x, err);
  cb_tensor *cur = NULL;
  for (int i = 0; i < m->n_children; i++) {
    cb_tensor *next = cb_module_forward(m->children[i], cur ? cur : x, err);
    cb_tensor_free(cur);
    if (!next) return NULL;
    cur = next;
  }
  return cur;
}

static const cb_module_ops sequential_ops = {
    .kind = "Sequential",
    .forward = cb_sequential_forward,
};

cb_module *cb_sequential_new(cb_error *err) { return cb_module_new(&sequential_ops, NULL, err); }
