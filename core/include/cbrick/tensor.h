#ifndef CBRICK_TENSOR_H
#define CBRICK_TENSOR_H

#include <stdint.h>
#include <stddef.h>
#include "error.h"

#define CB_MAX_DIMS 8

typedef enum cb_dtype { CB_F32 = 0, CB_I64 = 1, CB_U8 = 2, CB_DTYPE_COUNT } cb_dtype;

/* A dense, contiguous, C-order tensor that owns its data (64-byte aligned). */
typedef struct cb_tensor {
  cb_dtype dtype;
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  void *data;
} cb_tensor;

CB_API const char *cb_dtype_name(cb_dtype dtype);
CB_API size_t cb_dtype_size(cb_dtype dtype);

/* Zero-filled. Refuses negative dims, ndim > CB_MAX_DIMS and sizes that overflow. */
CB_API cb_tensor *cb_tensor_new(cb_dtype dtype, int ndim, const int64_t *shape, cb_error *err);
/* Like cb_tensor_new, its contents left uninitialised (for outputs about to be written). */
CB_API cb_tensor *cb_tensor_empty(cb_dtype dtype, int ndim, const int64_t *shape, cb_error *err);
CB_API cb_tensor *cb_tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w, cb_error *err);
CB_API cb_tensor *cb_tensor_clone(const cb_tensor *t, cb_error *err);
CB_API void cb_tensor_free(cb_tensor *t);

CB_API int64_t cb_tensor_numel(const cb_tensor *t);
CB_API size_t cb_tensor_nbytes(const cb_tensor *t);
CB_API int cb_tensor_same_shape(const cb_tensor *a, const cb_tensor *b);
static inline float *cb_f32(const cb_tensor *t) {
  return (float *)t->data;
}
static inline int64_t *cb_i64(const cb_tensor *t) {
  return (int64_t *)t->data;
}

/* "1x3x224x224" both ways. */
CB_API void cb_shape_format(int ndim, const int64_t *shape, char *buf, size_t cap);
CB_API int cb_shape_parse(const char *text, int *ndim, int64_t *shape, cb_error *err);

/* A growable list that owns its tensors. Zero-initialise before use. */
typedef struct cb_tensor_list {
  int n;
  int cap;
  cb_tensor **items;
} cb_tensor_list;

/* Takes ownership of t, also on failure (t is freed then). */
CB_API int cb_tensor_list_push(cb_tensor_list *list, cb_tensor *t, cb_error *err);
CB_API void cb_tensor_list_clear(cb_tensor_list *list);

#endif
