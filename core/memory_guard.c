#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cbrick/guard.h"

/* The probe forward runs on at most PROBE_SIDE x PROBE_SIDE pixels. */
#define PROBE_SIDE 64

struct probe;

/* Stands in for a module's ops during the probe: same ops, but the forward
 * functions record sizes. ops comes first, so m->ops leads back to it. */
typedef struct probe_ops {
  cb_module_ops ops;
  const cb_module_ops *orig;
  struct probe *probe;
} probe_ops;

typedef struct probe {
  int n;
  cb_module **mods;
  probe_ops *ops;
  bool *training;
  int depth;
  double max_step; /* largest input + output bytes of one module call */
  double top_out;  /* bytes the outermost call returned */
} probe;

int64_t cb_memory_physical(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return 0;
  return (int64_t)pages * (int64_t)page;
}

int64_t cb_memory_default_limit(void) {
  int64_t phys = cb_memory_physical();
  return phys > 0 ? phys / 10 * 8 : INT64_MAX;
}

static double unit_of(const char *s, const char **end) {
  static const char units[] = "KMGT";
  double mult = 1;
  const char *u = *s ? strchr(units, toupper((unsigned char)*s)) : NULL;
  if (u) {
    for (const char *k = units; k <= u; k++)
      mult *= 1024;
    s++;
    if (*s == 'i' || *s == 'I') s++;
  }
  if (*s == 'B' || *s == 'b') s++;
  *end = s;
  return mult;
}

int cb_memory_parse_size(const char *text, int64_t *bytes, cb_error *err) {
  if (text && strcasecmp(text, "none") == 0) {
    *bytes = INT64_MAX;
    return 0;
  }
  char *num_end;
  double v = text ? strtod(text, &num_end) : NAN;
  const char *end = NULL;
  double mult = text && num_end != text ? unit_of(num_end, &end) : 0;
  if (!text || num_end == text || *end || !(v > 0) || !isfinite(v) || v * mult > 4e18 ||
      v * mult < 1)
    return cb_fail(err,
                   "memory size '%s': expected a positive size such as 8G, 512M, 1.5GiB, 4096 "
                   "(bytes) or none",
                   text ? text : "");
  *bytes = (int64_t)(v * mult);
  return 0;
}

void cb_memory_format(int64_t bytes, char *buf, size_t cap) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) {
    snprintf(buf, cap, "%lld B", (long long)bytes);
    return;
  }
  double v = (double)bytes / 1024;
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  snprintf(buf, cap, "%.1f %s", v, units[u]);
}

static double tensor_bytes(const cb_tensor *t) {
  double n = (double)cb_dtype_size(t->dtype);
  for (int i = 0; i < t->ndim; i++)
    n *= (double)t->shape[i];
  return n;
}

static void probe_note(probe *p, double step) {
  if (step > p->max_step) p->max_step = step;
}

static cb_tensor *probe_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  probe_ops *po = (probe_ops *)m->ops;
  probe *p = po->probe;
  m->ops = po->orig; /* the module's own code sees its own ops */
  p->depth++;
  cb_tensor *y = po->orig->forward(m, x, err);
  p->depth--;
  m->ops = &po->ops;
  if (y) probe_note(p, tensor_bytes(x) + tensor_bytes(y));
  if (y && p->depth == 0) p->top_out = tensor_bytes(y);
  return y;
}

static int probe_forward_multi(cb_module *m, const cb_tensor *x, cb_tensor_list *outs,
                               cb_error *err) {
  probe_ops *po = (probe_ops *)m->ops;
  probe *p = po->probe;
  int first = outs->n;
  m->ops = po->orig;
  p->depth++;
  int rc = po->orig->forward_multi(m, x, outs, err);
  p->depth--;
  m->ops = &po->ops;
  double out = 0;
  for (int i = first; rc == 0 && i < outs->n; i++)
    out += tensor_bytes(outs->items[i]);
  if (rc == 0) probe_note(p, tensor_bytes(x) + out);
  if (rc == 0 && p->depth == 0) p->top_out = out;
  return rc;
}

static int count_module(const char *name, cb_module *m, void *ud) {
  (void)name, (void)m;
  ++*(int *)ud;
  return 0;
}

static int collect_module(const char *name, cb_module *m, void *ud) {
  (void)name;
  probe *p = ud;
  p->training[p->n] = m->training;
  p->mods[p->n++] = m;
  return 0;
}

static int probe_install(probe *p, cb_module *root, cb_error *err) {
  int n = 0;
  cb_module_visit(root, count_module, &n);
  p->mods = calloc((size_t)n + 1, sizeof *p->mods);
  p->ops = calloc((size_t)n + 1, sizeof *p->ops);
  p->training = calloc((size_t)n + 1, sizeof *p->training);
  if (!p->mods || !p->ops || !p->training) return cb_fail(err, "memory estimate: out of memory");
  p->n = 0;
  cb_module_visit(root, collect_module, p);
  cb_module_train(root, false);
  for (int i = 0; i < p->n; i++) {
    probe_ops *po = &p->ops[i];
    po->orig = p->mods[i]->ops;
    po->ops = *po->orig;
    po->probe = p;
    if (po->orig->forward) po->ops.forward = probe_forward;
    if (po->orig->forward_multi) po->ops.forward_multi = probe_forward_multi;
    p->mods[i]->ops = &po->ops;
  }
  return 0;
}

static void probe_remove(probe *p) {
  for (int i = 0; i < p->n; i++) {
    p->mods[i]->ops = p->ops[i].orig;
    p->mods[i]->training = p->training[i];
  }
  free(p->mods);
  free(p->ops);
  free(p->training);
}

/* Batch 1, the channels as given, every further dimension at most PROBE_SIDE. */
static double probe_shape(int ndim, const int64_t *shape, int64_t *out) {
  double real = 1, small = 1;
  for (int i = 0; i < ndim; i++) {
    int64_t cap = i == 0   ? (ndim >= 2 ? 1 : PROBE_SIDE * PROBE_SIDE)
                  : i == 1 ? shape[i]
                           : PROBE_SIDE;
    out[i] = shape[i] < cap ? shape[i] : cap;
    real *= (double)shape[i];
    small *= (double)out[i];
  }
  return small > 0 ? real / small : 0;
}

static int probe_run(cb_module *m, const cb_tensor *x, cb_error *err) {
  cb_tensor_list outs = {0};
  int rc = cb_module_forward_multi(m, x, &outs, err);
  cb_tensor_list_clear(&outs);
  return rc;
}

/* The probe's error is the forward's own when the probe is the real shape; else it says so. */
static int probe_failed(int ndim, const int64_t *shape, const int64_t *small, cb_error *err) {
  if (memcmp(shape, small, (size_t)ndim * sizeof *shape) == 0) return -1;
  char real_text[256], small_text[256];
  cb_shape_format(ndim, shape, real_text, sizeof real_text);
  cb_shape_format(ndim, small, small_text, sizeof small_text);
  return cb_error_prefix(err, "forward of a %s sample of the input %s (for the memory estimate): ",
                         small_text, real_text);
}

static int add_state_bytes(const char *name, cb_param *param, void *ud) {
  (void)name;
  *(double *)ud += tensor_bytes(param->tensor);
  return 0;
}

int cb_memory_estimate(cb_module *m, int ndim, const int64_t *shape, int64_t *bytes,
                       cb_error *err) {
  if (ndim < 1 || ndim > CB_MAX_DIMS)
    return cb_fail(err, "memory estimate: expected 1..%d input dimensions, found %d", CB_MAX_DIMS,
                   ndim);
  int64_t small[CB_MAX_DIMS];
  double scale = probe_shape(ndim, shape, small);
  cb_tensor *x = cb_tensor_new(CB_F32, ndim, small, err);
  if (!x) return -1;
  probe p = {0};
  int rc = probe_install(&p, m, err);
  if (rc == 0 && probe_run(m, x, err)) rc = probe_failed(ndim, shape, small, err);
  probe_remove(&p);
  double params = 0, input = 4;
  cb_module_visit_state(m, add_state_bytes, &params);
  for (int i = 0; i < ndim; i++)
    input *= (double)shape[i];
  double total = params + input + scale * (2 * p.max_step + p.top_out);
  cb_tensor_free(x);
  if (rc) return -1;
  *bytes = total >= 9e18 ? INT64_MAX : (int64_t)total;
  return 0;
}

int cb_memory_check(int64_t need, int ndim, const int64_t *shape, int64_t limit,
                    const char *limit_name, cb_error *err) {
  if (need <= limit) return 0;
  char need_text[32], limit_text[32], shape_text[256];
  cb_memory_format(need, need_text, sizeof need_text);
  cb_memory_format(limit, limit_text, sizeof limit_text);
  cb_shape_format(ndim, shape, shape_text, sizeof shape_text);
  return cb_fail(err, "estimated memory %s for input %s exceeds the limit %s%s%s%s", need_text,
                 shape_text, limit_text, limit_name ? " (" : "", limit_name ? limit_name : "",
                 limit_name ? ")" : "");
}
