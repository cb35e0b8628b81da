#include "kernels_internal.h"

int64_t cb_window_out_size(int64_t in, int k, int stride, int pad, int dil, bool ceil_mode) {
  int64_t span = in + 2 * (int64_t)pad - (int64_t)dil * (k - 1) - 1;
  if (span < 0) return -1;
  int64_t out = (ceil_mode ? span + stride - 1 : span) / stride + 1;
  /* In ceil mode the last window must start inside the input or the left padding. */
  if (ceil_mode && (out - 1) * stride >= in + pad) out--;
  return out;
}

int cb_check_nchw(const char *op, const char *what, const cb_tensor *t, cb_error *err) {
  if (!t) return cb_fail(err, "%s: %s is missing", op, what);
  if (t->dtype != CB_F32)
    return cb_fail(err, "%s: %s must be float32, got %s", op, what, cb_dtype_name(t->dtype));
  if (t->ndim != 4) {
    char shape[128];
    cb_shape_format(t->ndim, t->shape, shape, sizeof shape);
    return cb_fail(err, "%s: %s must be 4-D (N, C, H, W), got shape %s", op, what, shape);
  }
  return 0;
}
