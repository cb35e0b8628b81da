#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbrick/module.h"

cb_module *cb_module_new(const cb_module_ops *ops, void *impl, cb_error *err) {
  cb_module *m = calloc(1, sizeof *m);
  if (!m) {
    cb_fail(err, "module %s: out of memory", ops->kind);
    return NULL;
  }
  m->ops = ops;
  m->impl = impl;
  m->training = true;
  return m;
}

void cb_module_free(cb_module *m) {
  if (!m) return;
  for (int i = 0; i < m->n_children; i++) {
    cb_module_free(m->children[i]);
    free(m->child_names[i]);
  }
  free(m->children);
  free(m->child_names);
  for (int i = 0; i < m->n_params; i++) {
    free(m->params[i].name);
    cb_tensor_free(m->params[i].tensor);
  }
  free(m->params);
  free(m->kind_override);
  if (m->ops->destroy)
    m->ops->destroy(m->impl);
  else
    free(m->impl);
  free(m);
}

static bool name_taken(const cb_module *m, const char *name) {
  return cb_module_child(m, name) || cb_module_param(m, name);
}

static int check_new_name(const cb_module *m, const char *name, cb_error *err) {
  if (!name || !*name || strchr(name, '.'))
    return cb_fail(err, "%s: invalid member name '%s' (must be non-empty, without '.')",
                   m->ops->kind, name ? name : "");
  if (name_taken(m, name))
    return cb_fail(err, "%s: the name '%s' is already used in this module", m->ops->kind, name);
  return 0;
}

int cb_module_add_child(cb_module *m, const char *name, cb_module *child, cb_error *err) {
  /* A NULL child is a failed build whose message is already in err. */
  if (!child)
    return err && err->failed ? -1 : cb_fail(err, "%s: child '%s' is missing", m->ops->kind, name);
  if (check_new_name(m, name, err)) {
    cb_module_free(child);
    return -1;
  }
  int n = m->n_children + 1;
  cb_module **children = realloc(m->children, (size_t)n * sizeof *children);
  if (children) m->children = children;
  char **names = realloc(m->child_names, (size_t)n * sizeof *names);
  if (names) m->child_names = names;
  char *copy = strdup(name);
  if (!children || !names || !copy) {
    free(copy);
    cb_module_free(child);
    return cb_fail(err, "%s: out of memory adding child '%s'", m->ops->kind, name);
  }
  m->children[m->n_children] = child;
  m->child_names[m->n_children] = copy;
  m->n_children = n;
  return 0;
}

static cb_tensor *add_state(cb_module *m, const char *name, cb_dtype dtype, int ndim,
                            const int64_t *shape, bool is_buffer, cb_error *err) {
  if (check_new_name(m, name, err)) return NULL;
  cb_param *params = realloc(m->params, (size_t)(m->n_params + 1) * sizeof *params);
  if (!params) {
    cb_fail(err, "%s: out of memory adding '%s'", m->ops->kind, name);
    return NULL;
  }
  m->params = params;
  cb_tensor *t = cb_tensor_new(dtype, ndim, shape, err);
  char *copy = t ? strdup(name) : NULL;
  if (!copy) {
    cb_tensor_free(t);
    if (t) cb_fail(err, "%s: out of memory adding '%s'", m->ops->kind, name);
    return NULL;
  }
  m->params[m->n_params++] = (cb_param){copy, t, is_buffer, !is_buffer};
  return t;
}

cb_tensor *cb_module_add_param(cb_module *m, const char *name, int ndim, const int64_t *shape,
                               cb_error *err) {
  return add_state(m, name, CB_F32, ndim, shape, false, err);
}

cb_tensor *cb_module_add_param_typed(cb_module *m, const char *name, cb_dtype dtype, int ndim,
                                     const int64_t *shape, cb_error *err) {
  return add_state(m, name, dtype, ndim, shape, false, err);
}

cb_tensor *cb_module_add_buffer(cb_module *m, const char *name, cb_dtype dtype, int ndim,
                                const int64_t *shape, cb_error *err) {
  return add_state(m, name, dtype, ndim, shape, true, err);
}

cb_module *cb_module_child(const cb_module *m, const char *name) {
  for (int i = 0; i < m->n_children; i++)
    if (strcmp(m->child_names[i], name) == 0) return m->children[i];
  return NULL;
}

cb_param *cb_module_param(const cb_module *m, const char *name) {
  for (int i = 0; i < m->n_params; i++)
    if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
  return NULL;
}

/* Walks the dotted path; *last is the final component. */
static const cb_module *walk(const cb_module *m, const char *dotted, const char **last) {
  const char *p = dotted;
  const char *dot;
  while ((dot = strchr(p, '.')) != NULL) {
    char part[256];
    size_t len = (size_t)(dot - p);
    if (len >= sizeof part) return NULL;
    memcpy(part, p, len);
    part[len] = '\0';
    m = cb_module_child(m, part);
    if (!m) return NULL;
    p = dot + 1;
  }
  *last = p;
  return m;
}

cb_param *cb_module_find_param(const cb_module *m, const char *dotted) {
  const char *last;
  const cb_module *owner = walk(m, dotted, &last);
  return owner ? cb_module_param(owner, last) : NULL;
}

cb_module *cb_module_find(const cb_module *m, const char *dotted) {
  if (!*dotted) return (cb_module *)m;
  const char *last;
  const cb_module *owner = walk(m, dotted, &last);
  return owner ? cb_module_child(owner, last) : NULL;
}

const char *cb_module_kind(const cb_module *m) {
  return m->kind_override ? m->kind_override : m->ops->kind;
}

int cb_module_set_kind(cb_module *m, const char *kind, cb_error *err) {
  char *copy = strdup(kind);
  if (!copy) return cb_fail(err, "%s: out of memory", m->ops->kind);
  free(m->kind_override);
  m->kind_override = copy;
  return 0;
}

bool cb_module_is(const cb_module *m, const char *kind) {
  if (strcmp(m->ops->kind, kind) == 0) return true;
  if (m->kind_override && strcmp(m->kind_override, kind) == 0) return true;
  for (const char *const *b = m->ops->bases; b && *b; b++)
    if (strcmp(*b, kind) == 0) return true;
  return false;
}

cb_tensor *cb_module_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  if (m->ops->forward) return m->ops->forward(m, x, err);
  cb_fail(err, "%s has several outputs; use cb_module_forward_multi", m->ops->kind);
  return NULL;
}

int cb_module_forward_multi(cb_module *m, const cb_tensor *x, cb_tensor_list *outs, cb_error *err) {
  if (m->ops->forward_multi) return m->ops->forward_multi(m, x, outs, err);
  if (!m->ops->forward) return cb_fail(err, "%s has no forward", m->ops->kind);
  cb_tensor *y = m->ops->forward(m, x, err);
  return y ? cb_tensor_list_push(outs, y, err) : -1;
}

void cb_module_train_default(cb_module *m, bool mode) {
  m->training = mode;
  for (int i = 0; i < m->n_children; i++)
    cb_module_train(m->children[i], mode);
}

void cb_module_train(cb_module *m, bool mode) {
  if (m->ops->train)
    m->ops->train(m, mode);
  else
    cb_module_train_default(m, mode);
}

void cb_module_set_requires_grad(cb_module *m, bool requires_grad) {
  for (int i = 0; i < m->n_params; i++)
    if (!m->params[i].is_buffer) m->params[i].requires_grad = requires_grad;
  for (int i = 0; i < m->n_children; i++)
    cb_module_set_requires_grad(m->children[i], requires_grad);
}

static void join_name(char *out, size_t cap, const char *prefix, const char *name) {
  snprintf(out, cap, *prefix ? "%s.%s" : "%s%s", prefix, name);
}

static int visit_state(cb_module *m, const char *prefix, cb_state_fn fn, void *ud) {
  char name[1024];
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < m->n_params; i++) {
      if (m->params[i].is_buffer != (pass == 1)) continue;
      join_name(name, sizeof name, prefix, m->params[i].name);
      int rc = fn(name, &m->params[i], ud);
      if (rc) return rc;
    }
  for (int i = 0; i < m->n_children; i++) {
    join_name(name, sizeof name, prefix, m->child_names[i]);
    int rc = visit_state(m->children[i], name, fn, ud);
    if (rc) return rc;
  }
  return 0;
}

int cb_module_visit_state(cb_module *m, cb_state_fn fn, void *ud) {
  return visit_state(m, "", fn, ud);
}

static int visit_modules(cb_module *m, const char *prefix, cb_module_fn fn, void *ud) {
  int rc = fn(prefix, m, ud);
  if (rc) return rc;
  char name[1024];
  for (int i = 0; i < m->n_children; i++) {
    join_name(name, sizeof name, prefix, m->child_names[i]);
    rc = visit_modules(m->children[i], name, fn, ud);
    if (rc) return rc;
  }
  return 0;
}

int cb_module_visit(cb_module *m, cb_module_fn fn, void *ud) {
  return visit_modules(m, "", fn, ud);
}

int64_t cb_module_count_params(const cb_module *m) {
  int64_t n = 0;
  for (int i = 0; i < m->n_params; i++)
    if (!m->params[i].is_buffer) n += cb_tensor_numel(m->params[i].tensor);
  for (int i = 0; i < m->n_children; i++)
    n += cb_module_count_params(m->children[i]);
  return n;
}

static void print_tree(const cb_module *m, FILE *out, int indent) {
  char extra[512] = "";
  if (m->ops->extra_repr) m->ops->extra_repr(m, extra, sizeof extra);
  if (m->n_children == 0) {
    fprintf(out, "%s(%s)", cb_module_kind(m), extra);
    return;
  }
  fprintf(out, "%s(\n", cb_module_kind(m));
  if (*extra) fprintf(out, "%*s%s\n", indent + 2, "", extra);
  for (int i = 0; i < m->n_children; i++) {
    fprintf(out, "%*s(%s): ", indent + 2, "", m->child_names[i]);
    print_tree(m->children[i], out, indent + 2);
    fputc('\n', out);
  }
  fprintf(out, "%*s)", indent, "");
}

void cb_module_print(const cb_module *m, FILE *out) {
  print_tree(m, out, 0);
  fputc('\n', out);
}

size_t cb_repr_append(char *buf, size_t cap, size_t len, const char *fmt, ...) {
  if (len >= cap) return len;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + len, cap - len, fmt, ap);
  va_end(ap);
  return n < 0 ? len : len + (size_t)n;
}
