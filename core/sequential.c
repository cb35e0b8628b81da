#include "cbrick/module.h"
#include "cbrick/plan.h"

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

/* The children in order; an empty Sequential passes its input through. */
static int sequential_lower(cb_module *m, struct cb_plan_builder *b, int input, int *output,
                            cb_error *err) {
  int cur = input;
  for (int i = 0; i < m->n_children; i++)
    if (cb_plan_lower_child(b, m, m->child_names[i], cur, &cur, err)) return -1;
  *output = cur;
  return 0;
}

static const cb_module_ops sequential_ops = {
    .kind = "Sequential",
    .forward = cb_sequential_forward,
    .lower = sequential_lower,
};

cb_module *cb_sequential_new(cb_error *err) {
  return cb_module_new(&sequential_ops, NULL, err);
}
