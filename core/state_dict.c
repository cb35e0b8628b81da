#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick/io.h"
#include "prefix.h"

/* load_state_dict in two passes: the first only checks (so a strict failure
 * leaves the module untouched), the second copies. */

typedef struct load_state {
  const cb_weights *w;
  const char *prefix;
  bool *used; /* per file key: matched by a module entry */
  FILE *report;
  bool copy;
  int missing, mismatched;
  char first[512];
  cb_error *err;
} load_state;

static void note(load_state *s, const char *fmt, ...) CB_PRINTF(2, 3);
static void note(load_state *s, const char *fmt, ...) {
  char line[sizeof(s->first)];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (!s->first[0]) snprintf(s->first, sizeof(s->first), "%s", line);
  if (s->report) fprintf(s->report, "%s\n", line);
}

/* A report line that is not a problem (it never becomes the error's "first"). */
static void inform(load_state *s, const char *fmt, ...) CB_PRINTF(2, 3);
static void inform(load_state *s, const char *fmt, ...) {
  va_list ap;
  if (!s->report) return;
  va_start(ap, fmt);
  vfprintf(s->report, fmt, ap);
  va_end(ap);
  fputc('\n', s->report);
}

static bool is_num_batches_tracked(const char *name) {
  const char *dot = strrchr(name, '.');
  return strcmp(dot ? dot + 1 : name, "num_batches_tracked") == 0;
}

static int same_shape(const cb_tensor *a, const cb_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

static double element(const cb_tensor *t, int64_t i) {
  switch (t->dtype) {
  case CB_F32:
    return cb_f32(t)[i];
  case CB_I64:
    return (double)cb_i64(t)[i];
  default:
    return ((const unsigned char *)t->data)[i];
  }
}

static void tensor_assign(cb_tensor *dst, const cb_tensor *src) {
  int64_t n = cb_tensor_numel(dst);
  if (dst->dtype == src->dtype) {
    memcpy(dst->data, src->data, cb_tensor_nbytes(dst));
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    double v = element(src, i);
    if (dst->dtype == CB_F32)
      cb_f32(dst)[i] = (float)v;
    else if (dst->dtype == CB_I64)
      cb_i64(dst)[i] = (int64_t)v;
    else
      ((unsigned char *)dst->data)[i] = (unsigned char)v;
  }
}

static int load_one(const char *name, cb_param *p, void *ud) {
  load_state *s = ud;
  size_t plen = strlen(s->prefix);
  char *key = malloc(plen + strlen(name) + 1);
  if (!key) return cb_fail(s->err, "out of memory");
  memcpy(key, s->prefix, plen);
  strcpy(key + plen, name);
  int i = cb_weights_find(s->w, key);
  free(key);
  if (i < 0) {
    if (!s->copy && !is_num_batches_tracked(name)) {
      s->missing++;
      note(s, "missing key: %s", name);
    }
    return 0;
  }
  s->used[i] = true;
  const cb_tensor *t = cb_weights_tensor(s->w, i);
  if (!same_shape(t, p->tensor)) {
    if (!s->copy) {
      char a[128], b[128];
      cb_shape_format(t->ndim, t->shape, a, sizeof(a));
      cb_shape_format(p->tensor->ndim, p->tensor->shape, b, sizeof(b));
      s->mismatched++;
      note(s, "shape mismatch for %s: checkpoint %s, model %s", name, a, b);
    }
    return 0;
  }
  if (!s->copy && t->dtype != p->tensor->dtype)
    inform(s, "converted %s: %s -> %s", name, cb_dtype_name(t->dtype),
           cb_dtype_name(p->tensor->dtype));
  if (s->copy) tensor_assign(p->tensor, t);
  return 0;
}

static int count_unexpected(load_state *s, int *with_prefix) {
  size_t plen = strlen(s->prefix);
  int n = 0;
  *with_prefix = 0;
  for (int i = 0; i < cb_weights_count(s->w); i++) {
    const char *key = cb_weights_name(s->w, i);
    if (strncmp(key, s->prefix, plen) != 0) continue;
    (*with_prefix)++;
    if (s->used[i]) continue;
    n++;
    note(s, "unexpected key: %s", key + plen);
  }
  return n;
}

CB_API int cb_module_load_weights(cb_module *m, const cb_weights *w, const char *prefix,
                                  bool strict, FILE *report, cb_error *err) {
  char dotted[512];
  cb_prefix_with_dot(prefix, dotted, sizeof dotted);
  load_state s = {.w = w, .prefix = dotted, .report = report, .err = err};
  s.used = calloc((size_t)cb_weights_count(w) + 1, sizeof(bool));
  if (!s.used) return cb_fail(err, "out of memory");
  int with_prefix = 0, unexpected = 0;
  int rc = cb_module_visit_state(m, load_one, &s);
  if (rc == 0) unexpected = count_unexpected(&s, &with_prefix);
  if (rc == 0 && s.prefix[0] && with_prefix == 0)
    rc = cb_fail(err, "no key of the weights starts with the prefix '%s' (first key: '%s')",
                 s.prefix, cb_weights_count(w) ? cb_weights_name(w, 0) : "none, the file is empty");
  bool bad = s.missing || unexpected || s.mismatched;
  if (rc == 0 && strict && bad)
    rc = cb_fail(err, "%d missing, %d unexpected, %d shape mismatch%s (first: %s)", s.missing,
                 unexpected, s.mismatched, s.mismatched == 1 ? "" : "es", s.first);
  if (rc == 0) {
    s.copy = true;
    rc = cb_module_visit_state(m, load_one, &s);
  }
  free(s.used);
  return rc ? -1 : 0;
}

static int add_copy(const char *name, cb_param *p, void *ud) {
  void **args = ud;
  cb_error *err = args[1];
  cb_tensor *t = cb_tensor_clone(p->tensor, err);
  if (!t) return -1;
  return cb_weights_add(args[0], name, t, err);
}

CB_API cb_weights *cb_module_state_dict(cb_module *m, cb_error *err) {
  cb_weights *w = cb_weights_new(err);
  void *args[2] = {w, err};
  if (w && cb_module_visit_state(m, add_copy, args) != 0) {
    cb_weights_free(w);
    return NULL;
  }
  return w;
}
