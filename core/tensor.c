#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbrick/tensor.h"

#define CB_ALIGN 64
/* Refuse single tensors above 64 GiB: larger requests are corrupt shapes. */
#define CB_MAX_TENSOR_BYTES ((int64_t)1 << 36)

static const char *const dtype_names[CB_DTYPE_COUNT] = {"float32", "int64", "uint8"};
static const size_t dtype_sizes[CB_DTYPE_COUNT] = {4, 8, 1};

const char *cb_dtype_name(cb_dtype dtype) {
  return (unsigned)dtype < CB_DTYPE_COUNT ? dtype_names[dtype] : "unknown";
}

size_t cb_dtype_size(cb_dtype dtype) {
  return (unsigned)dtype < CB_DTYPE_COUNT ? dtype_sizes[dtype] : 0;
}

static int check_shape(cb_dtype dtype, int ndim, const int64_t *shape, int64_t *bytes,
                       cb_error *err) {
  if ((unsigned)dtype >= CB_DTYPE_COUNT) return cb_fail(err, "tensor: unknown dtype %d", dtype);
  if (ndim < 0 || ndim > CB_MAX_DIMS)
    return cb_fail(err, "tensor: expected 0..%d dimensions, found %d", CB_MAX_DIMS, ndim);
  int64_t total = (int64_t)cb_dtype_size(dtype);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return cb_fail(err, "tensor: dimension %d is negative (%lld)", i, (long long)shape[i]);
    if (shape[i] > 0 && total > CB_MAX_TENSOR_BYTES / shape[i]) {
      char text[256];
      double need = (double)cb_dtype_size(dtype);
      for (int k = 0; k < ndim; k++)
        need *= (double)shape[k];
      cb_shape_format(ndim, shape, text, sizeof text);
      return cb_fail(err,
                     "tensor: shape %s is too large: %.4g GiB, above the %lld GiB one tensor "
                     "may hold",
                     text, need / (1 << 30), (long long)(CB_MAX_TENSOR_BYTES >> 30));
    }
    total *= shape[i];
  }
  *bytes = total;
  return 0;
}

cb_tensor *cb_tensor_empty(cb_dtype dtype, int ndim, const int64_t *shape, cb_error *err) {
  int64_t bytes = 0;
  if (check_shape(dtype, ndim, shape, &bytes, err)) return NULL;
  cb_tensor *t = calloc(1, sizeof *t);
  size_t padded = ((size_t)bytes + CB_ALIGN - 1) / CB_ALIGN * CB_ALIGN;
  void *data = NULL;
  if (!t || posix_memalign(&data, CB_ALIGN, padded ? padded : CB_ALIGN)) {
    free(t);
    cb_fail(err, "tensor: out of memory allocating %lld bytes", (long long)bytes);
    return NULL;
  }
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    t->shape[i] = shape[i];
  t->data = data;
  return t;
}

cb_tensor *cb_tensor_new(cb_dtype dtype, int ndim, const int64_t *shape, cb_error *err) {
  cb_tensor *t = cb_tensor_empty(dtype, ndim, shape, err);
  if (t) memset(t->data, 0, (cb_tensor_nbytes(t) + CB_ALIGN - 1) / CB_ALIGN * CB_ALIGN);
  return t;
}

cb_tensor *cb_tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w, cb_error *err) {
  const int64_t shape[4] = {n, c, h, w};
  return cb_tensor_new(CB_F32, 4, shape, err);
}

cb_tensor *cb_tensor_clone(const cb_tensor *t, cb_error *err) {
  cb_tensor *c = cb_tensor_new(t->dtype, t->ndim, t->shape, err);
  if (c) memcpy(c->data, t->data, cb_tensor_nbytes(t));
  return c;
}

void cb_tensor_free(cb_tensor *t) {
  if (!t) return;
  free(t->data);
  free(t);
}

int64_t cb_tensor_numel(const cb_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}

size_t cb_tensor_nbytes(const cb_tensor *t) {
  return (size_t)cb_tensor_numel(t) * cb_dtype_size(t->dtype);
}

int cb_tensor_same_shape(const cb_tensor *a, const cb_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

void cb_shape_format(int ndim, const int64_t *shape, char *buf, size_t cap) {
  if (cap == 0) return;
  buf[0] = '\0';
  if (ndim == 0) {
    snprintf(buf, cap, "scalar");
    return;
  }
  size_t used = 0;
  for (int i = 0; i < ndim && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, i ? "x%lld" : "%lld", (long long)shape[i]);
}

int cb_shape_parse(const char *text, int *ndim, int64_t *shape, cb_error *err) {
  const char *p = text;
  int n = 0;
  while (*p) {
    if (n == CB_MAX_DIMS)
      return cb_fail(err, "shape '%s': more than %d dimensions", text, CB_MAX_DIMS);
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || v <= 0 || errno)
      return cb_fail(err, "shape '%s': expected positive integers joined by 'x' (1x3x224x224)",
                     text);
    shape[n++] = v;
    p = end;
    if (*p == 'x' || *p == 'X' || *p == ',') {
      p++;
      if (!*p) return cb_fail(err, "shape '%s': ends with a separator", text);
    } else if (*p) {
      return cb_fail(err, "shape '%s': unexpected character '%c'", text, *p);
    }
  }
  if (n == 0) return cb_fail(err, "shape '%s': empty", text);
  *ndim = n;
  return 0;
}

int cb_tensor_list_push(cb_tensor_list *list, cb_tensor *t, cb_error *err) {
  if (list->n == list->cap) {
    int cap = list->cap ? list->cap * 2 : 4;
    cb_tensor **items = realloc(list->items, (size_t)cap * sizeof *items);
    if (!items) {
      cb_tensor_free(t);
      return cb_fail(err, "tensor list: out of memory");
    }
    list->items = items;
    list->cap = cap;
  }
  list->items[list->n++] = t;
  return 0;
}

void cb_tensor_list_clear(cb_tensor_list *list) {
  for (int i = 0; i < list->n; i++)
    cb_tensor_free(list->items[i]);
  free(list->items);
  list->items = NULL;
  list->n = list->cap = 0;
}
