#ifndef CBRICK_KERNELS_INTERNAL_H
#define CBRICK_KERNELS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include "cbrick/tensor.h"

/* Output length of a sliding window (PyTorch's rule). Returns -1 when the
 * window does not fit (the effective kernel is larger than the padded input). */
int64_t cb_window_out_size(int64_t in, int k, int stride, int pad, int dil, bool ceil_mode);

/* A float32 NCHW tensor, or an error naming op and what arrived. */
int cb_check_nchw(const char *op, const char *what, const cb_tensor *t, cb_error *err);

/* a * b into *out, false on int64 overflow. */
static inline bool cb_mul_ok(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}

#endif
