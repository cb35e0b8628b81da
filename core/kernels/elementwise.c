#include <math.h>

#include "cbrick/kernels.h"

CB_API void cb_relu_inplace(cb_tensor *x) {
  if (!x || x->dtype != CB_F32) return;
  float *d = cb_f32(x);
  int64_t n = cb_tensor_numel(x);
  for (int64_t i = 0; i < n; i++)
    if (d[i] < 0.0f) d[i] = 0.0f;
}

CB_API int cb_add_inplace(cb_tensor *y, const cb_tensor *x, cb_error *err) {
  if (!y || !x) return cb_fail(err, "add: a tensor is missing");
  if (y->dtype != CB_F32 || x->dtype != CB_F32)
    return cb_fail(err, "add: expected float32 tensors, got %s and %s", cb_dtype_name(y->dtype),
                   cb_dtype_name(x->dtype));
  if (!cb_tensor_same_shape(y, x)) {
    char a[128], b[128];
    cb_shape_format(y->ndim, y->shape, a, sizeof a);
    cb_shape_format(x->ndim, x->shape, b, sizeof b);
    return cb_fail(err, "add: shapes differ: %s and %s", a, b);
  }
  float *d = cb_f32(y);
  const float *s = cb_f32(x);
  int64_t n = cb_tensor_numel(y);
  for (int64_t i = 0; i < n; i++)
    d[i] += s[i];
  return 0;
}

CB_API void cb_softmax_rows(float *v, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++, v += cols) {
    float max = v[0];
    for (int64_t i = 1; i < cols; i++)
      max = v[i] > max ? v[i] : max;
    double sum = 0;
    for (int64_t i = 0; i < cols; i++)
      sum += (v[i] = expf(v[i] - max));
    for (int64_t i = 0; i < cols; i++)
      v[i] = (float)(v[i] / sum);
  }
}
