#ifndef CBRICK_KERNELS_H
#define CBRICK_KERNELS_H

#include <stdbool.h>
#include "tensor.h"

/* Compute kernels on float32 NCHW tensors, for the core and for plugins.
 * Each returns a new tensor (NULL with *err on a shape error) or works in place. */

typedef struct cb_conv2d_params {
  int stride_h, stride_w;
  int pad_h, pad_w;
  int dil_h, dil_w;
  int groups;
} cb_conv2d_params;

/* weight [out, in/groups, kh, kw]; bias [out] or NULL. */
CB_API cb_tensor *cb_conv2d(const cb_tensor *x, const cb_tensor *weight, const cb_tensor *bias,
                            const cb_conv2d_params *p, cb_error *err);

/* C[m x n] = alpha * op(A) op(B) + beta * C, row-major. */
CB_API void cb_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                    int lda, const float *b, int ldb, float beta, float *c, int ldc);

typedef struct cb_pool2d_params {
  int kernel_h, kernel_w;
  int stride_h, stride_w;
  int pad_h, pad_w;
  int dil_h, dil_w; /* max pooling only */
  bool ceil_mode;
  bool count_include_pad; /* average pooling only */
} cb_pool2d_params;

CB_API cb_tensor *cb_max_pool2d(const cb_tensor *x, const cb_pool2d_params *p, cb_error *err);
CB_API cb_tensor *cb_avg_pool2d(const cb_tensor *x, const cb_pool2d_params *p, cb_error *err);

CB_API void cb_relu_inplace(cb_tensor *x);
/* Softmax over each of rows contiguous rows of cols values, in place (max-subtracted). */
CB_API void cb_softmax_rows(float *v, int64_t rows, int64_t cols);
/* y += x; shapes must match. */
CB_API int cb_add_inplace(cb_tensor *y, const cb_tensor *x, cb_error *err);

/* Python's repr of a float ("1e-05", "0.1", "2.0"), as PyTorch's extra_repr prints it. */
CB_API void cb_format_pyfloat(double v, char *buf, size_t cap);

#endif
