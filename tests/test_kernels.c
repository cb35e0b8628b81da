#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define LAYERS_FIXTURE "tests/fixtures/layers.safetensors"
#define TOL 1e-4

static cb_weights *fx;

static void load_fixture(void) {
  cb_error err = {0};
  fx = cb_safetensors_read(LAYERS_FIXTURE, &err);
  cr_assert_not_null(fx, "%s", err.msg);
}

static void free_fixture(void) {
  cb_weights_free(fx);
  fx = NULL;
}

TestSuite(kernels, .init = load_fixture, .fini = free_fixture);

static const cb_tensor *get(const char *name_case, const char *part) {
  char name[128];
  snprintf(name, sizeof name, "%s.%s", name_case, part);
  return fixture_tensor(fx, name);
}

static void expect_close(const char *name, const cb_tensor *got, const cb_tensor *want) {
  cr_assert_not_null(got);
  char a[128], b[128];
  cb_shape_format(got->ndim, got->shape, a, sizeof a);
  cb_shape_format(want->ndim, want->shape, b, sizeof b);
  cr_assert(cb_tensor_same_shape(got, want), "%s: shape %s, expected %s", name, a, b);
  double e = rel_l2(cb_f32(got), cb_f32(want), (long)cb_tensor_numel(want));
  cr_log_info("%s: rel_l2 %.3g", name, e);
  cr_assert(e <= TOL, "%s: relative L2 error %g > %g", name, e, TOL);
}

typedef struct conv_case {
  const char *name;
  cb_conv2d_params p;
  bool bias;
} conv_case;

/* The same cases as CONV_CASES in tools/fixtures/layers.py. */
static const conv_case conv_cases[] = {
    {"conv_plain", {1, 1, 0, 0, 1, 1, 1}, true},  {"conv_s2p1", {2, 2, 1, 1, 1, 1, 1}, true},
    {"conv_dil2", {1, 1, 2, 2, 2, 2, 1}, false},  {"conv_g2", {1, 1, 1, 1, 1, 1, 2}, true},
    {"conv_1x1", {1, 1, 0, 0, 1, 1, 1}, true},    {"conv_1x1s2", {2, 2, 0, 0, 1, 1, 1}, false},
    {"conv_7x7s2", {2, 2, 3, 3, 1, 1, 1}, false}, {"conv_rect", {1, 2, 1, 2, 1, 1, 1}, true},
};

Test(kernels, conv2d_matches_pytorch) {
  for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++) {
    const conv_case *c = &conv_cases[i];
    cb_error err = {0};
    cb_tensor *y = cb_conv2d(get(c->name, "x"), get(c->name, "weight"),
                             c->bias ? get(c->name, "bias") : NULL, &c->p, &err);
    cr_assert_not_null(y, "%s: %s", c->name, err.msg);
    expect_close(c->name, y, get(c->name, "y"));
    cb_tensor_free(y);
  }
}

/* Direct loops, for checking the banded im2col path on a larger input. */
static void naive_conv(const cb_tensor *x, const cb_tensor *w, const cb_conv2d_params *p,
                       cb_tensor *y) {
  int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t OH = y->shape[2], OW = y->shape[3];
  for (int64_t o = 0; o < O; o++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double s = 0;
        for (int64_t c = 0; c < C; c++)
          for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
              int64_t ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
              int64_t iw = ow * p->stride_w - p->pad_w + j * p->dil_w;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              s += (double)cb_f32(x)[(c * H + ih) * W + iw] *
                   cb_f32(w)[((o * C + c) * kh + i) * kw + j];
            }
        cb_f32(y)[(o * OH + oh) * OW + ow] = (float)s;
      }
}

static void fill_random(cb_tensor *t, unsigned seed) {
  srand(seed);
  for (int64_t i = 0; i < cb_tensor_numel(t); i++)
    cb_f32(t)[i] = (float)rand() / RAND_MAX - 0.5f;
}

Test(kernels, conv2d_large_input_in_bands) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 64, 130, 130, &err);
  cb_tensor *w = cb_tensor_new4(4, 64, 3, 3, &err);
  cb_tensor *want = cb_tensor_new4(1, 4, 130, 130, &err);
  fill_random(x, 1);
  fill_random(w, 2);
  const cb_conv2d_params p = {1, 1, 1, 1, 1, 1, 1};
  naive_conv(x, w, &p, want);
  cb_tensor *y = cb_conv2d(x, w, NULL, &p, &err);
  cr_assert_not_null(y, "%s", err.msg);
  expect_close("conv_banded", y, want);
  cb_tensor_free(x), cb_tensor_free(w), cb_tensor_free(want), cb_tensor_free(y);
}

static void expect_conv_error(const int64_t *xs, const int64_t *ws, const cb_conv2d_params *p,
                              const char *needle) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(xs[0], xs[1], xs[2], xs[3], &err);
  cb_tensor *w = cb_tensor_new4(ws[0], ws[1], ws[2], ws[3], &err);
  cb_tensor *y = cb_conv2d(x, w, NULL, p, &err);
  cr_assert_null(y);
  cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
  cb_tensor_free(x), cb_tensor_free(w);
}

Test(kernels, conv2d_refuses_bad_shapes) {
  const cb_conv2d_params p = {2, 2, 1, 1, 1, 1, 1};
  expect_conv_error((int64_t[]){1, 3, 3, 3}, (int64_t[]){8, 3, 7, 7}, &p,
                    "conv2d: kernel 7x7 (dilated) is larger than the padded input 5x5");
  expect_conv_error((int64_t[]){1, 4, 9, 9}, (int64_t[]){8, 3, 3, 3}, &p,
                    "input has 4 channels but weight expects 3");
  const cb_conv2d_params g3 = {1, 1, 0, 0, 1, 1, 3};
  expect_conv_error((int64_t[]){1, 6, 9, 9}, (int64_t[]){8, 2, 3, 3}, &g3,
                    "8 output channels are not divisible by groups=3");
  const cb_conv2d_params s0 = {0, 1, 0, 0, 1, 1, 1};
  expect_conv_error((int64_t[]){1, 3, 9, 9}, (int64_t[]){8, 3, 3, 3}, &s0, "stride must be >= 1");
  const cb_conv2d_params d2 = {1, 1, 0, 0, 3, 3, 1};
  expect_conv_error((int64_t[]){1, 3, 6, 6}, (int64_t[]){8, 3, 3, 3}, &d2,
                    "kernel 7x7 (dilated) is larger than the padded input 6x6");
}

Test(kernels, conv2d_refuses_bad_bias_and_rank) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 3, 8, 8, &err);
  cb_tensor *w = cb_tensor_new4(4, 3, 3, 3, &err);
  cb_tensor *b = cb_tensor_new(CB_F32, 1, (int64_t[]){5}, &err);
  const cb_conv2d_params p = {1, 1, 0, 0, 1, 1, 1};
  cr_assert_null(cb_conv2d(x, w, b, &p, &err));
  cr_assert(strstr(err.msg, "bias must be float32 of shape 4"), "%s", err.msg);
  cb_tensor *x3 = cb_tensor_new(CB_F32, 3, (int64_t[]){3, 8, 8}, &err);
  cr_assert_null(cb_conv2d(x3, w, NULL, &p, &err));
  cr_assert(strstr(err.msg, "input must be 4-D"), "%s", err.msg);
  cb_tensor_free(x), cb_tensor_free(w), cb_tensor_free(b), cb_tensor_free(x3);
}

Test(kernels, gemm_with_transposes) {
  /* A = [[1, 2, 3], [4, 5, 6]] (2x3), B = A^T (3x2): A A^T = [[14, 32], [32, 77]]. */
  const float a[6] = {1, 2, 3, 4, 5, 6};
  float c[4] = {1, 1, 1, 1};
  cb_gemm(false, true, 2, 2, 3, 1.0f, a, 3, a, 3, 0.0f, c, 2);
  cr_assert(c[0] == 14 && c[1] == 32 && c[2] == 32 && c[3] == 77);
  /* A^T A (3x3), alpha 2, beta 1 on a ones matrix. */
  float d[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  cb_gemm(true, false, 3, 3, 2, 2.0f, a, 3, a, 3, 1.0f, d, 3);
  cr_assert(d[0] == 35 && d[1] == 45 && d[4] == 59 && d[8] == 91, "%g %g %g %g", d[0], d[1], d[4],
            d[8]);
}

/* op(A) op(B) in double, row-major, with leading dimensions. */
static double reference_dot(bool ta, bool tb, int i, int j, int k, const float *a, int lda,
                            const float *b, int ldb) {
  double s = 0;
  for (int p = 0; p < k; p++)
    s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
  return s;
}

/* Products large enough for the packed path (where the processor has one), with every
 * transpose, alpha, beta 0 / 1 / other, sizes that leave partial blocks and panels, and
 * leading dimensions wider than the rows; on the kernels that CBRICK_ISA caps to `isa`. */
static void gemm_large_matches_reference(const char *isa) {
  use_kernels_or_skip(isa);
  const int m = 75, n = 133, k = 301, ld = 320;
  float *a = malloc(sizeof(float) * ld * ld), *b = malloc(sizeof(float) * ld * ld);
  float *c = malloc(sizeof(float) * m * ld), *c0 = malloc(sizeof(float) * m * ld);
  for (int i = 0; i < ld * ld; i++) {
    a[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    b[i] = (float)((i * 53 % 97) - 48) / 48.0f;
  }
  const float betas[3] = {0.0f, 1.0f, 0.5f};
  for (int v = 0; v < 12; v++) {
    bool ta = v & 1, tb = v >> 1 & 1;
    float beta = betas[v / 4];
    for (int i = 0; i < m * ld; i++)
      c[i] = c0[i] = beta == 0.0f ? NAN : (float)(i % 7) - 3.0f;
    cb_gemm(ta, tb, m, n, k, 1.5f, a, ld, b, ld, beta, c, ld);
    double err = 0, norm = 0;
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double want = 1.5 * reference_dot(ta, tb, i, j, k, a, ld, b, ld) +
                      (beta == 0.0f ? 0.0 : beta * (double)c0[i * ld + j]);
        err += (c[i * ld + j] - want) * (c[i * ld + j] - want);
        norm += want * want;
      }
    cr_assert_lt(sqrt(err / norm), 1e-6, "trans %d %d beta %g: relative L2 %g", ta, tb, beta,
                 sqrt(err / norm));
    for (int i = 0; i < m; i++)
      for (int j = n; j < ld; j++)
        cr_assert(memcmp(&c[i * ld + j], &c0[i * ld + j], sizeof(float)) == 0 ||
                      (isnan(c[i * ld + j]) && isnan(c0[i * ld + j])),
                  "column %d past n written", j);
  }
  free(a), free(b), free(c), free(c0);
}
Test(kernels, gemm_large_avx512) {
  gemm_large_matches_reference("avx512");
}
Test(kernels, gemm_large_avx2) {
  gemm_large_matches_reference("avx2");
}
Test(kernels, gemm_large_portable) {
  gemm_large_matches_reference("portable");
}

typedef struct pool_case {
  const char *name;
  bool is_max;
  cb_pool2d_params p;
} pool_case;

/* MAX_POOL_CASES and AVG_POOL_CASES of tools/fixtures/layers.py. */
static const pool_case pool_cases[] = {
    {"maxpool_k3s2p1", true, {3, 3, 2, 2, 1, 1, 1, 1, false, false}},
    {"maxpool_ceil", true, {3, 3, 2, 2, 0, 0, 1, 1, true, false}},
    {"avgpool_ceil_excl", false, {3, 3, 2, 2, 1, 1, 1, 1, true, false}},
    {"avgpool_ceil_incl", false, {3, 3, 2, 2, 1, 1, 1, 1, true, true}},
    {"avgpool_k2_ceil_excl", false, {2, 2, 2, 2, 0, 0, 1, 1, true, false}},
    {"avgpool_ceil_drop", false, {2, 2, 2, 2, 1, 1, 1, 1, true, true}},
};

Test(kernels, pooling_matches_pytorch) {
  for (size_t i = 0; i < sizeof pool_cases / sizeof *pool_cases; i++) {
    const pool_case *c = &pool_cases[i];
    cb_error err = {0};
    cb_tensor *y = c->is_max ? cb_max_pool2d(get(c->name, "x"), &c->p, &err)
                             : cb_avg_pool2d(get(c->name, "x"), &c->p, &err);
    cr_assert_not_null(y, "%s: %s", c->name, err.msg);
    expect_close(c->name, y, get(c->name, "y"));
    cb_tensor_free(y);
  }
}

Test(kernels, pooling_refuses_bad_params) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 2, 4, 4, &err);
  const cb_pool2d_params big_pad = {3, 3, 2, 2, 2, 2, 1, 1, false, true};
  cr_assert_null(cb_max_pool2d(x, &big_pad, &err));
  cr_assert(strstr(err.msg, "at most half the kernel size"), "%s", err.msg);
  const cb_pool2d_params big_kernel = {7, 7, 1, 1, 1, 1, 1, 1, false, true};
  cr_assert_null(cb_avg_pool2d(x, &big_kernel, &err));
  cr_assert(strstr(err.msg, "avg_pool2d: kernel 7x7 is larger than the padded input 6x6"), "%s",
            err.msg);
  const cb_pool2d_params zero = {0, 3, 1, 1, 0, 0, 1, 1, false, true};
  cr_assert_null(cb_max_pool2d(x, &zero, &err));
  cr_assert(strstr(err.msg, "kernel_size must be >= 1"), "%s", err.msg);
  cb_tensor_free(x);
}

Test(kernels, max_pool_ignores_padding_and_keeps_nan) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 1, 2, 2, &err);
  const float v[4] = {-3, -2, NAN, -4};
  memcpy(x->data, v, sizeof v);
  const cb_pool2d_params p = {2, 2, 1, 1, 1, 1, 1, 1, false, false};
  cb_tensor *y = cb_max_pool2d(x, &p, &err);
  cr_assert_not_null(y, "%s", err.msg);
  cr_assert_eq(y->shape[2], 3);
  cr_assert_float_eq(cb_f32(y)[0], -3.0f, 0); /* padding is never the maximum */
  cr_assert_float_eq(cb_f32(y)[1], -2.0f, 0);
  cr_assert(isnan(cb_f32(y)[3]));
  cb_tensor_free(x), cb_tensor_free(y);
}

Test(kernels, relu_and_add) {
  cb_error err = {0};
  cb_tensor *a = cb_tensor_new4(1, 1, 1, 4, &err);
  cb_tensor *b = cb_tensor_new4(1, 1, 1, 4, &err);
  const float va[4] = {-1, 2, -0.5f, 3}, vb[4] = {1, 1, 1, 1};
  memcpy(a->data, va, sizeof va);
  memcpy(b->data, vb, sizeof vb);
  cb_relu_inplace(a);
  cr_assert(cb_f32(a)[0] == 0 && cb_f32(a)[1] == 2 && cb_f32(a)[2] == 0 && cb_f32(a)[3] == 3);
  cr_assert_eq(cb_add_inplace(a, b, &err), 0);
  cr_assert(cb_f32(a)[0] == 1 && cb_f32(a)[3] == 4);
  cb_tensor *c = cb_tensor_new4(1, 1, 2, 2, &err);
  cr_assert_eq(cb_add_inplace(a, c, &err), -1);
  cr_assert(strstr(err.msg, "add: shapes differ: 1x1x1x4 and 1x1x2x2"), "%s", err.msg);
  cb_tensor_free(a), cb_tensor_free(b), cb_tensor_free(c);
}

Test(kernels, python_float_repr) {
  const struct {
    double v;
    const char *text;
  } cases[] = {{1e-5, "1e-05"},      {0.1, "0.1"},
               {1.0, "1.0"},         {1e-3, "0.001"},
               {1e-4, "0.0001"},     {1e16, "1e+16"},
               {123.456, "123.456"}, {2.5e-7, "2.5e-07"},
               {-0.03, "-0.03"},     {1e15, "1000000000000000.0"}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char buf[64];
    cb_format_pyfloat(cases[i].v, buf, sizeof buf);
    cr_assert_str_eq(buf, cases[i].text);
  }
}

Test(kernels, softmax_rows_is_stable_and_normalised) {
  float v[6] = {1000.0f, 1001.0f, 1002.0f, -3.0f, 0.0f, 3.0f};
  cb_softmax_rows(v, 2, 3);
  for (int r = 0; r < 2; r++) {
    float sum = v[3 * r] + v[3 * r + 1] + v[3 * r + 2];
    cr_assert_float_eq(sum, 1.0f, 1e-6, "row %d sums to %g", r, sum);
  }
  /* softmax([0, 1, 2]) = [0.0900306, 0.2447285, 0.6652410] whatever the offset;
   * softmax([-3, 0, 3])[2] = 0.9503302. */
  cr_assert_float_eq(v[0], 0.0900306f, 1e-6);
  cr_assert_float_eq(v[2], 0.6652410f, 1e-6);
  cr_assert_float_eq(v[5], 0.9503302f, 1e-6);
}
