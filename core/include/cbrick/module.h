#ifndef CBRICK_MODULE_H
#define CBRICK_MODULE_H

#include <stdbool.h>
#include <stdio.h>
#include "tensor.h"

/* The description of a model: a tree of modules with named children,
 * parameters and buffers whose dotted names are PyTorch's state-dict keys.
 * Execution (a planned forward pass) is built from this tree, never the reverse. */
typedef struct cb_module cb_module;
struct cb_rng;
struct cb_plan_builder;

typedef struct cb_module_ops {
  /* PyTorch class name, used by repr and by init_cfg's `layer` matching
   * ("Conv2d", "BatchNorm2d", "GroupNorm", "Bottleneck", "ResNet"). */
  const char *kind;
  /* Kinds this one also answers to for init_cfg `layer` (its base classes),
   * NULL-terminated; may be NULL. "_BatchNorm" for BatchNorm2d, say. */
  const char *const *bases;
  /* One input, one new output tensor. NULL if the module has only forward_multi. */
  cb_tensor *(*forward)(cb_module *m, const cb_tensor *x, cb_error *err);
  /* One input, several outputs (backbones). NULL for single-output modules. */
  int (*forward_multi)(cb_module *m, const cb_tensor *x, cb_tensor_list *outs, cb_error *err);
  /* Overrides train(mode); NULL means cb_module_train_default. */
  void (*train)(cb_module *m, bool mode);
  /* Text inside the parentheses of the repr line, as PyTorch's extra_repr. May be NULL. */
  void (*extra_repr)(const cb_module *m, char *buf, size_t cap);
  /* mmcv's init_weights: initialises this subtree (its init_cfg, then its
   * children). NULL means: recurse into the children. rng is a cb_rng. */
  int (*init_weights)(cb_module *m, struct cb_rng *rng, cb_error *err);
  /* Frees impl. May be NULL (then impl is free()d if non-NULL). */
  void (*destroy)(void *impl);
  /* Emits this module's eval-mode computation into a plan (cbrick/plan.h) on value input and
   * sets *output to its result value. NULL: the plan runs forward as an opaque node. */
  int (*lower)(cb_module *m, struct cb_plan_builder *b, int input, int *output, cb_error *err);
} cb_module_ops;

typedef struct cb_param {
  char *name;
  cb_tensor *tensor;
  bool is_buffer;
  bool requires_grad; /* meaningful for parameters only */
} cb_param;

struct cb_module {
  const cb_module_ops *ops;
  void *impl;
  bool training;
  int n_children;
  char **child_names;
  cb_module **children;
  int n_params;
  cb_param *params;    /* parameters and buffers, in registration order */
  char *kind_override; /* set by cb_module_set_kind; NULL uses ops->kind */
};

/* New module in training mode (as PyTorch's), owning impl. */
CB_API cb_module *cb_module_new(const cb_module_ops *ops, void *impl, cb_error *err);
CB_API void cb_module_free(cb_module *m);

/* Takes ownership of child, also on failure. A repeated name is an error. */
CB_API int cb_module_add_child(cb_module *m, const char *name, cb_module *child, cb_error *err);
/* Float32 zero-filled parameter with requires_grad true; returns the tensor owned by m. */
CB_API cb_tensor *cb_module_add_param(cb_module *m, const char *name, int ndim,
                                      const int64_t *shape, cb_error *err);
/* A parameter of another dtype (uint8 maps, say); requires_grad true. */
CB_API cb_tensor *cb_module_add_param_typed(cb_module *m, const char *name, cb_dtype dtype,
                                            int ndim, const int64_t *shape, cb_error *err);
CB_API cb_tensor *cb_module_add_buffer(cb_module *m, const char *name, cb_dtype dtype, int ndim,
                                       const int64_t *shape, cb_error *err);

CB_API cb_module *cb_module_child(const cb_module *m, const char *name);
/* Direct parameter or buffer of m by name, or NULL. */
CB_API cb_param *cb_module_param(const cb_module *m, const char *name);
/* Tensor by dotted path from m ("layer1.0.bn1.running_mean"), or NULL. */
CB_API cb_param *cb_module_find_param(const cb_module *m, const char *dotted);
CB_API cb_module *cb_module_find(const cb_module *m, const char *dotted);
CB_API const char *cb_module_kind(const cb_module *m);
/* Names this instance's kind (a variant built by another entry: "ResNetV1c" over
 * "ResNet"); cb_module_is still answers to ops->kind and its bases. */
CB_API int cb_module_set_kind(cb_module *m, const char *kind, cb_error *err);
/* True when m's kind or one of its bases equals kind. */
CB_API bool cb_module_is(const cb_module *m, const char *kind);

CB_API cb_tensor *cb_module_forward(cb_module *m, const cb_tensor *x, cb_error *err);
CB_API int cb_module_forward_multi(cb_module *m, const cb_tensor *x, cb_tensor_list *outs,
                                   cb_error *err);

/* train(mode) as in PyTorch: calls ops->train when set, else the default,
 * which sets m->training and recurses with cb_module_train on every child. */
CB_API void cb_module_train(cb_module *m, bool mode);
CB_API void cb_module_train_default(cb_module *m, bool mode);
CB_API void cb_module_set_requires_grad(cb_module *m, bool requires_grad);

/* Visits parameters then buffers of each module, depth first, in PyTorch's
 * state_dict order, with the full dotted name. A non-zero return stops the walk
 * and is returned. */
typedef int (*cb_state_fn)(const char *name, cb_param *p, void *ud);
CB_API int cb_module_visit_state(cb_module *m, cb_state_fn fn, void *ud);
/* Visits m ("" name) and every descendant with its dotted name, parents first. */
typedef int (*cb_module_fn)(const char *name, cb_module *m, void *ud);
CB_API int cb_module_visit(cb_module *m, cb_module_fn fn, void *ud);

CB_API int64_t cb_module_count_params(const cb_module *m);
/* PyTorch-style repr of the tree. */
CB_API void cb_module_print(const cb_module *m, FILE *out);
/* For extra_repr: formats onto the first len characters of buf (capacity cap), truncating;
 * returns the new length (len unchanged once buf is full). */
CB_API size_t cb_repr_append(char *buf, size_t cap, size_t len, const char *fmt, ...)
    CB_PRINTF(4, 5);

/* A container whose forward runs its children in order ("0", "1", ... or named). */
CB_API cb_module *cb_sequential_new(cb_error *err);
/* Sequential's forward, for containers of another kind (ResLayer, say). */
CB_API cb_tensor *cb_sequential_forward(cb_module *m, const cb_tensor *x, cb_error *err);

#endif
