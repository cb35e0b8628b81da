#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbrick.h>

/* ---- test files ---- */

static char *tmp_path(const char *suffix) {
  static int counter;
  char *p = malloc(256);
  snprintf(p, 256, "/tmp/cbrick-test-io-%d-%d%s", (int)getpid(), counter++, suffix);
  return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(*n + 1);
  cr_assert_eq(fread(buf, 1, *n, f), *n);
  fclose(f);
  return buf;
}

/* A safetensors file from a header text (length prefix added) and raw data. */
static char *st_file(const char *header, const void *data, size_t ndata) {
  char *path = tmp_path(".safetensors");
  size_t hlen = strlen(header);
  unsigned char *buf = malloc(8 + hlen + ndata + 1);
  for (int i = 0; i < 8; i++)
    buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  memcpy(buf + 8, header, hlen);
  if (ndata) memcpy(buf + 8 + hlen, data, ndata);
  write_bytes(path, buf, 8 + hlen + ndata);
  free(buf);
  return path;
}

static void expect_read_error(const char *path, const char *needle) {
  cb_error err = {0};
  cb_weights *w = cb_safetensors_read(path, &err);
  cr_assert_null(w, "%s: read should fail with '%s'", path, needle);
  cr_assert(err.failed);
  cr_assert(strstr(err.msg, path), "message does not name the file: %s", err.msg);
  cr_assert(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
}

static void expect_header_error(const char *header, size_t ndata, const char *needle) {
  unsigned char *data = calloc(ndata + 1, 1);
  char *path = st_file(header, data, ndata);
  expect_read_error(path, needle);
  unlink(path);
  free(path);
  free(data);
}

static cb_tensor *tensor(cb_dtype dtype, int ndim, const int64_t *shape) {
  cb_error err = {0};
  cb_tensor *t = cb_tensor_new(dtype, ndim, shape, &err);
  cr_assert_not_null(t, "%s", err.msg);
  return t;
}

static cb_tensor *f32(int ndim, const int64_t *shape, float start) {
  cb_tensor *t = tensor(CB_F32, ndim, shape);
  for (int64_t i = 0; i < cb_tensor_numel(t); i++)
    cb_f32(t)[i] = start + (float)i * 0.25f;
  return t;
}

static void add(cb_weights *w, const char *name, cb_tensor *t) {
  cb_error err = {0};
  cr_assert_eq(cb_weights_add(w, name, t, &err), 0, "%s", err.msg);
}

/* ---- cb_weights ---- */

Test(weights, keeps_order_and_finds_names) {
  cb_error err = {0};
  cb_weights *w = cb_weights_new(&err);
  const int64_t s[1] = {2};
  char name[32];
  for (int i = 0; i < 200; i++) {
    snprintf(name, sizeof(name), "k%03d", 199 - i);
    add(w, name, f32(1, s, (float)i));
  }
  cr_assert_eq(cb_weights_count(w), 200);
  cr_assert_str_eq(cb_weights_name(w, 0), "k199");
  cr_assert_str_eq(cb_weights_name(w, 199), "k000");
  cr_assert_eq(cb_weights_find(w, "k000"), 199);
  cr_assert_eq(cb_f32(cb_weights_get(w, "k150"))[0], 49.0f);
  cr_assert_null(cb_weights_get(w, "nope"));
  cr_assert_null(cb_weights_name(w, 200));
  cr_assert_eq(cb_weights_add(w, "k010", f32(1, s, 0), &err), -1);
  cr_assert(strstr(err.msg, "duplicate key 'k010'"), "%s", err.msg);
  cr_assert_eq(cb_weights_count(w), 200);
  cb_weights_free(w);
}

/* ---- safetensors ---- */

Test(safetensors, round_trip_is_bit_exact) {
  cb_error err = {0};
  cb_weights *w = cb_weights_new(&err);
  const int64_t s34[2] = {3, 4}, s03[2] = {0, 3}, s5[1] = {5};
  cb_tensor *a = f32(2, s34, -1.0f);
  uint32_t nan_bits = 0x7fc01234u, negzero = 0x80000000u;
  memcpy(&cb_f32(a)[0], &nan_bits, 4);
  memcpy(&cb_f32(a)[1], &negzero, 4);
  cb_f32(a)[2] = INFINITY;
  add(w, "z.last_name_first", a);
  cb_tensor *scalar = tensor(CB_I64, 0, NULL);
  cb_i64(scalar)[0] = -1234567890123LL;
  add(w, "a.num_batches_tracked", scalar);
  add(w, "empty", tensor(CB_F32, 2, s03));
  cb_tensor *bytes = tensor(CB_U8, 1, s5);
  for (int i = 0; i < 5; i++)
    ((unsigned char *)bytes->data)[i] = (unsigned char)(250 + i);
  add(w, "m.mask", bytes);
  json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "note", "round trip");
  char *path = tmp_path(".safetensors"), *path2 = tmp_path(".safetensors");
  cr_assert_eq(cb_safetensors_write(path, w, meta, &err), 0, "%s", err.msg);

  cb_weights *r = cb_safetensors_read(path, &err);
  cr_assert_not_null(r, "%s", err.msg);
  cr_assert_eq(cb_weights_count(r), 4);
  for (int i = 0; i < 4; i++) {
    const cb_tensor *x = cb_weights_tensor(w, i), *y = cb_weights_tensor(r, i);
    cr_assert_str_eq(cb_weights_name(r, i), cb_weights_name(w, i));
    cr_assert_eq(x->dtype, y->dtype);
    cr_assert_eq(x->ndim, y->ndim);
    cr_assert(cb_tensor_same_shape(x, y));
    cr_assert_eq(memcmp(x->data, y->data, cb_tensor_nbytes(x)), 0, "%s differs",
                 cb_weights_name(w, i));
  }
  json_t *rmeta = cb_weights_metadata(r);
  cr_assert(json_equal(rmeta, meta));

  /* Written again from what was read: the same bytes. */
  cr_assert_eq(cb_safetensors_write(path2, r, NULL, &err), 0, "%s", err.msg);
  size_t n1, n2;
  unsigned char *b1 = read_bytes(path, &n1), *b2 = read_bytes(path2, &n2);
  cr_assert_eq(n1, n2);
  cr_assert_eq(memcmp(b1, b2, n1), 0);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | b1[i];
  cr_assert_eq(hlen % 8, 0, "header length %llu is not padded to 8", (unsigned long long)hlen);
  cr_assert_eq(b1[8], '{');
  cr_assert(memmem(b1 + 8, hlen, "\"__metadata__\"", 14));
  cr_assert_eq(n1, 8 + hlen + 12 * 4 + 8 + 5);

  free(b1);
  free(b2);
  unlink(path);
  unlink(path2);
  free(path);
  free(path2);
  json_decref(meta);
  cb_weights_free(r);
  cb_weights_free(w);
}

Test(safetensors, converts_f16_bf16_f64_to_float32) {
  /* F16: 1, -2, 65504, smallest subnormal, -0, inf; BF16: 1, -3.140625; F64: 0.1; I64 stays. */
  const uint16_t half[6] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00};
  const uint16_t bf[2] = {0x3f80, 0xc049};
  const double d = 0.1;
  const int64_t i64[2] = {7, -9};
  unsigned char data[12 + 4 + 8 + 16];
  memcpy(data, half, 12);
  memcpy(data + 12, bf, 4);
  memcpy(data + 16, &d, 8);
  memcpy(data + 24, i64, 16);
  char *path = st_file("{\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[12,16]},"
                       "\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[16,24]},"
                       "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]}}",
                       data, sizeof(data));
  cb_error err = {0};
  cb_weights *w = cb_safetensors_read(path, &err);
  cr_assert_not_null(w, "%s", err.msg);
  const cb_tensor *h = cb_weights_get(w, "h");
  cr_assert_eq(h->dtype, CB_F32);
  cr_assert_eq(h->ndim, 2);
  const float *hv = cb_f32(h);
  cr_assert_eq(hv[0], 1.0f);
  cr_assert_eq(hv[1], -2.0f);
  cr_assert_eq(hv[2], 65504.0f);
  cr_assert_eq(hv[3], ldexpf(1.0f, -24));
  cr_assert(hv[4] == 0.0f && signbit(hv[4]));
  cr_assert(isinf(hv[5]) && hv[5] > 0);
  const cb_tensor *b = cb_weights_get(w, "b");
  cr_assert_eq(b->dtype, CB_F32);
  cr_assert_eq(cb_f32(b)[0], 1.0f);
  cr_assert_eq(cb_f32(b)[1], -3.140625f);
  const cb_tensor *dt = cb_weights_get(w, "d");
  cr_assert_eq(dt->ndim, 0);
  cr_assert_eq(cb_f32(dt)[0], 0.1f);
  const cb_tensor *it = cb_weights_get(w, "i");
  cr_assert_eq(it->dtype, CB_I64);
  cr_assert_eq(cb_i64(it)[1], -9);
  cb_weights_free(w);
  unlink(path);
  free(path);
}

Test(safetensors, unsupported_dtype_names_key_and_dtype) {
  expect_header_error("{\"layer.w\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                      "tensor 'layer.w' has dtype I32");
  expect_header_error("{\"w\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                      "unknown dtype 'F99'");
}

Test(safetensors, rejects_bad_lengths) {
  char *path = tmp_path(".safetensors");
  write_bytes(path, "\x10\0\0", 3);
  expect_read_error(path, "too short");
  unsigned char big[16] = {0x00, 0xe2, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100,000,256 */
  write_bytes(path, big, sizeof(big));
  expect_read_error(path, "100 MB");
  unsigned char past[12] = {0x40, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
  write_bytes(path, past, sizeof(past));
  expect_read_error(path, "runs past the end");
  unlink(path);
  free(path);
  expect_read_error("tests/data/io/does-not-exist.safetensors", "cannot open");
}

Test(safetensors, rejects_bad_json) {
  expect_header_error("{\"a\": ", 0, "not valid JSON");
  expect_header_error("[1, 2]  ", 0, "must be a JSON object, found a list");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8, "duplicate");
  expect_header_error("{\"a\": 3}", 0, "tensor 'a': expected an object, found an integer");
}

Test(safetensors, rejects_bad_entries) {
  expect_header_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "tensor 'a': missing 'dtype'");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                      "tensor 'a': missing 'shape'");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                      "tensor 'a': missing 'data_offsets'");
  expect_header_error("{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "dtype must be a string, found an integer");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
                      "shape must be a list of integers, found a string");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
                      "shape[0] must be an integer");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,4]}}", 4,
                      "shape[1] is negative");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                      "\"data_offsets\":[0,4]}}",
                      4, "too large");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"b\":0}}}", 4,
                      "data_offsets must be [begin, end]");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
                      "not 0 <= begin <= end");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                      "hold 4 bytes, but F32 shape needs 8");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2,1,1,1,1,1,1,1],"
                      "\"data_offsets\":[0,8]}}",
                      8, "at most 8");
}

Test(safetensors, rejects_bad_layout) {
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "tensor 'b' (bytes 4..12) overlaps tensor 'a'");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                      12, "hole: bytes 4..8");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                      "hole: bytes 0..4");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6,
                      "file is");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                      "file is");
}

Test(safetensors, accepts_empty_and_scalar_tensors_anywhere) {
  cb_error err = {0};
  const float one = 1.0f;
  char *path = st_file("{\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                       "\"e2\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[4,4]}}",
                       &one, 4);
  cb_weights *w = cb_safetensors_read(path, &err);
  cr_assert_not_null(w, "%s", err.msg);
  cr_assert_eq(cb_weights_count(w), 3);
  cr_assert_eq(cb_f32(cb_weights_get(w, "s"))[0], 1.0f);
  cr_assert_eq(cb_tensor_numel(cb_weights_get(w, "e2")), 0);
  cb_weights_free(w);
  unlink(path);
  free(path);
  cr_assert_null(cb_safetensors_read("tests/data/io/empty_header.safetensors", &err));
}

Test(safetensors, checks_metadata) {
  expect_header_error("{\"__metadata__\":{\"epoch\":3}}", 0,
                      "__metadata__['epoch'] must be a string, found an integer");
  expect_header_error("{\"__metadata__\":[\"x\"]}", 0, "__metadata__ must be an object");
  cb_error err = {0};
  cb_weights *w = cb_weights_new(&err);
  json_t *bad = json_pack("{s:i}", "epoch", 3);
  char *path = tmp_path(".safetensors");
  cr_assert_eq(cb_safetensors_write(path, w, bad, &err), -1);
  cr_assert(strstr(err.msg, "epoch"), "%s", err.msg);
  json_decref(bad);
  cb_weights_free(w);
  free(path);
}

Test(safetensors, hand_made_bad_files) {
  expect_read_error("tests/data/io/truncated.safetensors", "too short");
  expect_read_error("tests/data/io/not_object.safetensors", "must be a JSON object");
  expect_read_error("tests/data/io/past_eof.safetensors", "runs past the end");
  expect_read_error("tests/data/io/empty_header.safetensors", "not valid JSON");
}

/* ---- npy ---- */

static void npy_round_trip(int ndim, const int64_t *shape) {
  cb_error err = {0};
  cb_tensor *t = f32(ndim, shape, -3.0f);
  char *path = tmp_path(".npy");
  cr_assert_eq(cb_npy_write(path, t, &err), 0, "%s", err.msg);
  cb_tensor *r = cb_npy_read(path, &err);
  cr_assert_not_null(r, "%s", err.msg);
  cr_assert_eq(r->ndim, ndim);
  cr_assert(cb_tensor_same_shape(t, r));
  cr_assert_eq(memcmp(t->data, r->data, cb_tensor_nbytes(t)), 0);
  size_t n;
  unsigned char *b = read_bytes(path, &n);
  cr_assert_eq(memcmp(b, "\x93NUMPY\x01\x00", 8), 0);
  size_t hlen = b[8] | (size_t)b[9] << 8;
  cr_assert_eq((10 + hlen) % 64, 0, "header not aligned to 64");
  cr_assert_eq(b[10 + hlen - 1], '\n');
  cr_assert_eq(n, 10 + hlen + cb_tensor_nbytes(t));
  free(b);
  unlink(path);
  free(path);
  cb_tensor_free(r);
  cb_tensor_free(t);
}

Test(npy, round_trips) {
  const int64_t s4[4] = {1, 3, 5, 7}, s1[1] = {6}, s0[2] = {0, 4};
  npy_round_trip(4, s4);
  npy_round_trip(1, s1);
  npy_round_trip(0, NULL);
  npy_round_trip(2, s0);
}

static char *npy_file(int major, const char *header, size_t ndata) {
  char *path = tmp_path(".npy");
  size_t hlen = strlen(header), pre = major == 1 ? 10 : 12;
  unsigned char *buf = calloc(pre + hlen + ndata + 1, 1);
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)major;
  buf[8] = (unsigned char)(hlen & 0xff);
  buf[9] = (unsigned char)(hlen >> 8);
  memcpy(buf + pre, header, hlen);
  for (size_t i = 0; i < ndata / 4; i++) {
    float v = (float)i;
    memcpy(buf + pre + hlen + 4 * i, &v, 4);
  }
  write_bytes(path, buf, pre + hlen + ndata);
  free(buf);
  return path;
}

static void expect_npy_error(char *path, const char *needle) {
  cb_error err = {0};
  cr_assert_null(cb_npy_read(path, &err), "%s should fail", path);
  cr_assert(strstr(err.msg, path), "message does not name the file: %s", err.msg);
  cr_assert(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
}

Test(npy, reads_version_2_and_double_quotes) {
  char *path =
      npy_file(2, "{\"descr\": \"<f4\", \"shape\": (2, 2), \"fortran_order\": False}\n", 16);
  cb_error err = {0};
  cb_tensor *t = cb_npy_read(path, &err);
  cr_assert_not_null(t, "%s", err.msg);
  cr_assert_eq(t->ndim, 2);
  cr_assert_eq(cb_f32(t)[3], 3.0f);
  cb_tensor_free(t);
  unlink(path);
  free(path);
}

Test(npy, rejects_what_it_cannot_read) {
  struct {
    int major;
    const char *header;
    size_t ndata;
    const char *needle;
  } cases[] = {
      {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", 16, "fortran_order"},
      {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16, "dtype '<f8'"},
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 20, "truncated"},
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 12, "extra bytes"},
      {1, "{'descr': '<f4', 'shape': (2,), }\n", 8, "lacks 'fortran_order'"},
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }\n", 8, "bad header"},
      {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 8, "version 3.0"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *path = npy_file(cases[i].major, cases[i].header, cases[i].ndata);
    expect_npy_error(path, cases[i].needle);
    unlink(path);
    free(path);
  }
  expect_npy_error("tests/data/io/bad_magic.npy", "bad magic");
  expect_npy_error("tests/data/io/fortran.npy", "fortran_order is True");
  cb_error err = {0};
  const int64_t s[1] = {2};
  cb_tensor *t = tensor(CB_I64, 1, s);
  cr_assert_eq(cb_npy_write("/tmp/cbrick-never-written.npy", t, &err), -1);
  cr_assert(strstr(err.msg, "float32"), "%s", err.msg);
  cb_tensor_free(t);
}

/* ---- load_weights / state_dict ---- */

static const cb_module_ops plain_ops = {.kind = "Plain"};

/* net: weight [2,3]; bn: weight [2], running_mean [2], num_batches_tracked (I64 scalar). */
static cb_module *small_net(void) {
  cb_error err = {0};
  const int64_t s23[2] = {2, 3}, s2[1] = {2};
  cb_module *net = cb_module_new(&plain_ops, NULL, &err);
  cb_module *bn = cb_module_new(&plain_ops, NULL, &err);
  cr_assert_not_null(cb_module_add_param(net, "weight", 2, s23, &err));
  cr_assert_not_null(cb_module_add_param(bn, "weight", 1, s2, &err));
  cr_assert_not_null(cb_module_add_buffer(bn, "running_mean", CB_F32, 1, s2, &err));
  cr_assert_not_null(cb_module_add_buffer(bn, "num_batches_tracked", CB_I64, 0, NULL, &err));
  cr_assert_eq(cb_module_add_child(net, "bn", bn, &err), 0, "%s", err.msg);
  return net;
}

/* Weights matching small_net under prefix, values from 1.0 on. */
static cb_weights *matching(const char *prefix) {
  cb_error err = {0};
  const int64_t s23[2] = {2, 3}, s2[1] = {2};
  cb_weights *w = cb_weights_new(&err);
  char key[64];
  snprintf(key, sizeof(key), "%sweight", prefix);
  add(w, key, f32(2, s23, 1.0f));
  snprintf(key, sizeof(key), "%sbn.weight", prefix);
  add(w, key, f32(1, s2, 5.0f));
  snprintf(key, sizeof(key), "%sbn.running_mean", prefix);
  add(w, key, f32(1, s2, 7.0f));
  return w;
}

typedef struct report {
  char *text;
  size_t len;
  FILE *f;
} report;

static void report_open(report *r) {
  r->text = NULL;
  r->f = open_memstream(&r->text, &r->len);
}

static const char *report_close(report *r) {
  fclose(r->f);
  return r->text;
}

static float net_value(cb_module *m, const char *name, int i) {
  return cb_f32(cb_module_find_param(m, name)->tensor)[i];
}

Test(load_weights, strict_match_loads_all_without_num_batches_tracked) {
  cb_module *m = small_net();
  cb_weights *w = matching("");
  cb_error err = {0};
  report r;
  report_open(&r);
  cr_assert_eq(cb_module_load_weights(m, w, NULL, true, r.f, &err), 0, "%s", err.msg);
  cr_assert_str_eq(report_close(&r), "");
  cr_assert_eq(net_value(m, "weight", 5), 1.0f + 5 * 0.25f);
  cr_assert_eq(net_value(m, "bn.weight", 1), 5.25f);
  cr_assert_eq(net_value(m, "bn.running_mean", 0), 7.0f);
  free(r.text);
  cb_weights_free(w);
  cb_module_free(m);
}

Test(load_weights, strict_refuses_and_leaves_module_untouched) {
  cb_module *m = small_net();
  cb_weights *w = cb_weights_new(&(cb_error){0});
  const int64_t s24[2] = {2, 4}, s2[1] = {2};
  add(w, "weight", f32(2, s24, 1.0f));
  add(w, "bn.running_mean", f32(1, s2, 7.0f));
  add(w, "fc.weight", f32(1, s2, 0.0f));
  cb_error err = {0};
  report r;
  report_open(&r);
  cr_assert_eq(cb_module_load_weights(m, w, "", true, r.f, &err), -1);
  cr_assert_str_eq(report_close(&r), "shape mismatch for weight: checkpoint 2x4, model 2x3\n"
                                     "missing key: bn.weight\n"
                                     "unexpected key: fc.weight\n");
  cr_assert_str_eq(err.msg, "1 missing, 1 unexpected, 1 shape mismatch (first: shape mismatch "
                            "for weight: checkpoint 2x4, model 2x3)");
  cr_assert_eq(net_value(m, "bn.running_mean", 0), 0.0f);
  free(r.text);

  /* Non-strict: the matching entry loads, the rest is reported and skipped. */
  report_open(&r);
  cr_assert_eq(cb_module_load_weights(m, w, "", false, r.f, &err), 0, "%s", err.msg);
  cr_assert(strstr(report_close(&r), "missing key: bn.weight\n"));
  cr_assert_eq(net_value(m, "bn.running_mean", 1), 7.25f);
  cr_assert_eq(net_value(m, "weight", 0), 0.0f);
  free(r.text);
  cb_weights_free(w);
  cb_module_free(m);
}

Test(load_weights, strict_summary_counts_plural) {
  cb_module *m = small_net();
  cb_weights *w = cb_weights_new(&(cb_error){0});
  cb_error err = {0};
  cr_assert_eq(cb_module_load_weights(m, w, NULL, true, NULL, &err), -1);
  cr_assert_str_eq(err.msg, "3 missing, 0 unexpected, 0 shape mismatches (first: missing key: "
                            "weight)");
  cb_weights_free(w);
  cb_module_free(m);
}

Test(load_weights, prefix_selects_and_strips_keys) {
  cb_module *m = small_net();
  cb_weights *w = matching("backbone.");
  const int64_t s2[1] = {2};
  add(w, "decode_head.conv.weight", f32(1, s2, 0.0f));
  cb_error err = {0};
  report r;
  report_open(&r);
  cr_assert_eq(cb_module_load_weights(m, w, "backbone.", true, r.f, &err), 0, "%s", err.msg);
  cr_assert_str_eq(report_close(&r), "");
  cr_assert_eq(net_value(m, "bn.weight", 0), 5.0f);
  free(r.text);
  cr_assert_eq(cb_module_load_weights(m, w, "model.", false, NULL, &err), -1);
  cr_assert(strstr(err.msg, "prefix 'model.'"), "%s", err.msg);
  cr_assert(strstr(err.msg, "backbone.weight"), "%s", err.msg);
  cb_weights_free(w);
  cb_module_free(m);
}

Test(load_weights, converts_between_int64_and_float32) {
  cb_module *m = small_net();
  cb_weights *w = matching("");
  const int64_t s2[1] = {2};
  cb_tensor *mean = tensor(CB_I64, 1, s2);
  cb_i64(mean)[0] = 3;
  cb_i64(mean)[1] = -4;
  cb_error err = {0};
  cr_assert_eq(cb_weights_find(w, "bn.running_mean"), 2);
  /* Replace the F32 running_mean by an I64 one, and give num_batches_tracked as F32. */
  cb_weights *w2 = cb_weights_new(&err);
  add(w2, "weight", cb_tensor_clone(cb_weights_get(w, "weight"), &err));
  add(w2, "bn.weight", cb_tensor_clone(cb_weights_get(w, "bn.weight"), &err));
  add(w2, "bn.running_mean", mean);
  cb_tensor *nbt = tensor(CB_F32, 0, NULL);
  cb_f32(nbt)[0] = 42.0f;
  add(w2, "bn.num_batches_tracked", nbt);
  cr_assert_eq(cb_module_load_weights(m, w2, NULL, true, NULL, &err), 0, "%s", err.msg);
  cr_assert_eq(net_value(m, "bn.running_mean", 1), -4.0f);
  cr_assert_eq(cb_i64(cb_module_find_param(m, "bn.num_batches_tracked")->tensor)[0], 42);
  cb_weights_free(w2);
  cb_weights_free(w);
  cb_module_free(m);
}

Test(state_dict, copies_in_state_order_and_round_trips) {
  cb_module *m = small_net();
  cb_weights *w = matching("");
  cb_error err = {0};
  cr_assert_eq(cb_module_load_weights(m, w, NULL, true, NULL, &err), 0, "%s", err.msg);
  cb_weights *sd = cb_module_state_dict(m, &err);
  cr_assert_not_null(sd, "%s", err.msg);
  cr_assert_eq(cb_weights_count(sd), 4);
  cr_assert_str_eq(cb_weights_name(sd, 0), "weight");
  cr_assert_str_eq(cb_weights_name(sd, 3), "bn.num_batches_tracked");
  cr_assert_eq(cb_weights_tensor(sd, 3)->dtype, CB_I64);
  cb_f32(cb_weights_tensor(sd, 0))[0] = 99.0f;
  cr_assert_eq(net_value(m, "weight", 0), 1.0f, "state_dict must copy");

  /* Saved and loaded into a fresh module: equal state. */
  char *path = tmp_path(".safetensors");
  cr_assert_eq(cb_safetensors_write(path, sd, NULL, &err), 0, "%s", err.msg);
  cb_weights *back = cb_safetensors_read(path, &err);
  cr_assert_not_null(back, "%s", err.msg);
  cb_module *fresh = small_net();
  cr_assert_eq(cb_module_load_weights(fresh, back, NULL, true, NULL, &err), 0, "%s", err.msg);
  cr_assert_eq(net_value(fresh, "weight", 0), 99.0f);
  cr_assert_eq(net_value(fresh, "bn.running_mean", 1), 7.25f);
  unlink(path);
  free(path);
  cb_module_free(fresh);
  cb_weights_free(back);
  cb_weights_free(sd);
  cb_weights_free(w);
  cb_module_free(m);
}

/* ---- reading by mapping ---- */

/* Whether p lies in a mapping of the file at path, per /proc/self/maps. */
static bool in_file_mapping(const void *p, const char *path) {
  char real[4096], line[8192];
  cr_assert_not_null(realpath(path, real), "%s", path);
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    int at = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &at) != 2 || !at) continue;
    line[strcspn(line, "\n")] = '\0';
    found = (uintptr_t)p >= lo && (uintptr_t)p < hi && strcmp(line + at, real) == 0;
  }
  fclose(f);
  return found;
}

static bool file_is_mapped(const char *path) {
  char real[4096], line[8192];
  cr_assert_not_null(realpath(path, real), "%s", path);
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  bool found = false;
  while (!found && fgets(line, sizeof line, f))
    found = strstr(line, real) != NULL;
  fclose(f);
  return found;
}

Test(safetensors, maps_aligned_f32_without_copy) {
  cb_error err = {0};
  cb_weights *w = cb_weights_new(&err);
  const int64_t s34[2] = {3, 4}, s3[1] = {3}, s0[1] = {0};
  add(w, "conv.weight", f32(2, s34, -2.0f));
  cb_tensor *nbt = tensor(CB_I64, 0, NULL);
  cb_i64(nbt)[0] = 7;
  add(w, "bn.num_batches_tracked", nbt);
  add(w, "bn.bias", f32(1, s3, 0.5f));
  add(w, "empty", tensor(CB_F32, 1, s0));
  char *path = tmp_path(".safetensors");
  cr_assert_eq(cb_safetensors_write(path, w, NULL, &err), 0, "%s", err.msg);

  size_t nfile;
  unsigned char *bytes = read_bytes(path, &nfile);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | bytes[i];
  cb_weights *r = cb_safetensors_read(path, &err);
  cr_assert_not_null(r, "%s", err.msg);
  const cb_tensor *conv = cb_weights_get(r, "conv.weight"), *bias = cb_weights_get(r, "bn.bias");
  cr_assert(cb_weights_is_mapped(r, 0));
  cr_assert(cb_weights_is_mapped(r, 2));
  cr_assert_not(cb_weights_is_mapped(r, 1), "int64 is copied");
  cr_assert_not(cb_weights_is_mapped(r, 3), "an empty tensor has nothing to map");
  cr_assert_not(cb_weights_is_mapped(r, 4));
  cr_assert_not(cb_weights_is_mapped(w, 0), "built in memory");
  cr_assert(in_file_mapping(conv->data, path), "conv.weight's data is not in the file mapping");
  cr_assert(in_file_mapping(bias->data, path));
  cr_assert_not(in_file_mapping(cb_weights_get(r, "bn.num_batches_tracked")->data, path));
  /* The data are the file's bytes, at the header's offsets: conv at 0, nbt at 48, bias at 56. */
  cr_assert_eq(memcmp(conv->data, bytes + 8 + hlen, 48), 0);
  cr_assert_eq(memcmp(bias->data, bytes + 8 + hlen + 56, 12), 0);
  cr_assert_eq(cb_f32(conv)[11], -2.0f + 11 * 0.25f);
  cr_assert_eq(cb_f32(bias)[2], 1.0f);
  cr_assert_eq(cb_i64(cb_weights_get(r, "bn.num_batches_tracked"))[0], 7);

  /* A clone is an ordinary tensor that outlives the weights. */
  cb_tensor *kept = cb_tensor_clone(conv, &err);
  cb_weights_free(r);
  cr_assert_not(file_is_mapped(path), "cb_weights_free must unmap the file");
  cr_assert_eq(cb_f32(kept)[1], -1.75f);
  cb_tensor_free(kept);
  unlink(path);
  free(path);
  free(bytes);
  cb_weights_free(w);
}

Test(safetensors, copies_misaligned_f32_and_converted_dtypes) {
  /* One U8 byte first, so the F32 data of "b" starts at 8 + header + 1: misaligned. */
  const unsigned char data[1 + 8 + 2] = {9, 0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0x00, 0x3c};
  char header[256];
  snprintf(header, sizeof header,
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
           "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[9,11]}}");
  size_t hlen = strlen(header);
  /* Pad the header with spaces until the data of "b" is misaligned. */
  while ((8 + hlen + 1) % 4 == 0)
    header[hlen++] = ' ', header[hlen] = '\0';
  char *path = st_file(header, data, sizeof data);
  cb_error err = {0};
  cb_weights *w = cb_safetensors_read(path, &err);
  cr_assert_not_null(w, "%s", err.msg);
  const cb_tensor *b = cb_weights_get(w, "b");
  cr_assert_not(cb_weights_is_mapped(w, 1), "misaligned F32 data must be copied");
  cr_assert_eq((uintptr_t)b->data % 4, 0);
  cr_assert_eq(cb_f32(b)[0], 1.0f);
  cr_assert_eq(cb_f32(b)[1], -2.0f);
  cr_assert_not(cb_weights_is_mapped(w, 2), "F16 is converted");
  cr_assert_eq(cb_f32(cb_weights_get(w, "h"))[0], 1.0f);
  cr_assert_not(file_is_mapped(path), "nothing points into the file, so it is not kept mapped");
  cb_weights_free(w);
  unlink(path);
  free(path);
}

Test(safetensors, writes_over_the_file_it_mapped) {
  cb_error err = {0};
  cb_weights *w = cb_weights_new(&err);
  const int64_t s64[1] = {4096};
  add(w, "big", f32(1, s64, 3.0f));
  char *path = tmp_path(".safetensors");
  cr_assert_eq(cb_safetensors_write(path, w, NULL, &err), 0, "%s", err.msg);
  cb_weights *r = cb_safetensors_read(path, &err);
  cr_assert_not_null(r, "%s", err.msg);
  cr_assert(cb_weights_is_mapped(r, 0));
  /* Rewriting the same path while r maps it: r still reads the old data. */
  cr_assert_eq(cb_safetensors_write(path, r, NULL, &err), 0, "%s", err.msg);
  cr_assert_eq(cb_f32(cb_weights_tensor(r, 0))[4095], 3.0f + 4095 * 0.25f);
  cb_weights *again = cb_safetensors_read(path, &err);
  cr_assert_not_null(again, "%s", err.msg);
  cr_assert_eq(memcmp(cb_weights_tensor(again, 0)->data, cb_weights_tensor(w, 0)->data,
                      4096 * sizeof(float)),
               0);
  cb_weights_free(again);
  cb_weights_free(r);
  cb_weights_free(w);
  unlink(path);
  free(path);
  expect_read_error("/tmp", "not a regular file");
}

/* ---- revise_keys ---- */

/* Weights with the given keys (one-element tensors holding their index). */
static cb_weights *keyed(const char *const *keys, int n) {
  cb_error err = {0};
  cb_weights *w = cb_weights_new(&err);
  const int64_t s1[1] = {1};
  for (int i = 0; i < n; i++)
    add(w, keys[i], f32(1, s1, (float)i));
  return w;
}

static void expect_revised(const char *pattern, const char *repl, const char *key,
                           const char *want) {
  cb_weights *w = keyed(&key, 1);
  cb_key_rule rule = {pattern, repl};
  cb_error err = {0};
  cb_weights *r = cb_weights_revise_keys(w, &rule, 1, &err);
  cr_assert_not_null(r, "%s", err.msg);
  cr_assert_str_eq(cb_weights_name(r, 0), want, "re.sub('%s', '%s', '%s')", pattern, repl, key);
  cb_weights_free(r);
  cb_weights_free(w);
}

Test(revise_keys, matches_python_re_sub) {
  /* Expected values are Python's re.sub(pattern, repl, key). */
  expect_revised("^module\\.", "", "module.conv1.weight", "conv1.weight");
  expect_revised("^module\\.", "", "backbone.module.x", "backbone.module.x");
  expect_revised("^layer(\\d+)\\.(\\d+)\\.", "stage\\1.block\\2.", "layer3.10.conv1.weight",
                 "stage3.block10.conv1.weight");
  expect_revised("\\.", "_", "a.b.c", "a_b_c");
  expect_revised("x*", "-", "abxd", "-a-b--d-");
  expect_revised("", "-", "ab", "-a-b-");
  expect_revised("(b)(c)?", "[\\g<1>\\2\\\\]", "abd", "a[b\\]d");
  expect_revised("[\\d.]+", "#", "x12.3y", "x#y");
  expect_revised("\\w+$", "W", "a.bc_9", "a.W");
  expect_revised("\\s", "", "a b", "ab");
  /* The dialect's documented difference: POSIX takes the longest alternative. */
  expect_revised("a|ab", "X", "abc", "Xc");
}

Test(revise_keys, applies_rules_in_order_to_a_copy) {
  const char *keys[] = {"module.backbone.conv1.weight", "module.decode_head.conv.bias",
                        "backbone.bn1.weight"};
  cb_weights *w = keyed(keys, 3);
  cb_key_rule rules[] = {{"^module\\.", ""}, {"^backbone\\.", ""}};
  cb_error err = {0};
  cb_weights *r = cb_weights_revise_keys(w, rules, 2, &err);
  cr_assert_not_null(r, "%s", err.msg);
  cb_weights_free(w);
  cr_assert_eq(cb_weights_count(r), 3);
  cr_assert_str_eq(cb_weights_name(r, 0), "conv1.weight");
  cr_assert_str_eq(cb_weights_name(r, 1), "decode_head.conv.bias");
  cr_assert_str_eq(cb_weights_name(r, 2), "bn1.weight");
  cr_assert_eq(cb_f32(cb_weights_get(r, "bn1.weight"))[0], 2.0f, "the copy outlives the source");
  cb_weights_free(r);
}

static void expect_revise_error(const cb_key_rule *rules, int n, const char *needle) {
  const char *keys[] = {"module.a", "a"};
  cb_weights *w = keyed(keys, 2);
  cb_error err = {0};
  cr_assert_null(cb_weights_revise_keys(w, rules, n, &err), "expected '%s'", needle);
  cr_assert(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
  cb_weights_free(w);
}

Test(revise_keys, errors_name_the_rule) {
  cb_key_rule bad_regex[] = {{"^x", ""}, {"(", ""}};
  expect_revise_error(bad_regex, 2, "revise_keys[1][0]: invalid regular expression '(': ");
  cb_key_rule lazy[] = {{"a.*?b", ""}};
  expect_revise_error(lazy, 1, "revise_keys[0][0]: invalid regular expression 'a.*?b': lazy");
  cb_key_rule noncapturing[] = {{"(?:a)", ""}};
  expect_revise_error(noncapturing, 1, "(?...) groups");
  cb_key_rule negated[] = {{"[\\D]", ""}};
  expect_revise_error(negated, 1, "negated class escapes");
  cb_key_rule group[] = {{"a(b)", "\\2"}};
  expect_revise_error(group, 1,
                      "revise_keys[0][1]: invalid replacement '\\2': invalid group reference 2 "
                      "(the pattern has 1 group)");
  cb_key_rule escape[] = {{"a", "\\q"}};
  expect_revise_error(escape, 1, "revise_keys[0][1]: invalid replacement '\\q': bad escape");
  cb_key_rule collide[] = {{"^module\\.", ""}};
  expect_revise_error(collide, 1, "revise_keys: keys 'module.a' and 'a' both become 'a'");
}

Test(load_weights, reports_dtype_conversions) {
  cb_module *m = small_net();
  cb_error err = {0};
  cb_weights *w = matching("");
  cb_tensor *nbt = tensor(CB_F32, 0, NULL);
  cb_f32(nbt)[0] = 12.0f;
  add(w, "bn.num_batches_tracked", nbt);
  report r;
  report_open(&r);
  cr_assert_eq(cb_module_load_weights(m, w, NULL, true, r.f, &err), 0, "%s", err.msg);
  cr_assert_str_eq(report_close(&r), "converted bn.num_batches_tracked: float32 -> int64\n");
  cr_assert_eq(cb_i64(cb_module_find_param(m, "bn.num_batches_tracked")->tensor)[0], 12);
  free(r.text);

  /* A conversion is no problem: a strict failure names the real one first. */
  cb_weights *w2 = cb_weights_new(&err);
  cb_tensor *mean = tensor(CB_I64, 1, (const int64_t[]){2});
  add(w2, "bn.running_mean", mean);
  report_open(&r);
  cr_assert_eq(cb_module_load_weights(m, w2, NULL, true, r.f, &err), -1);
  cr_assert_str_eq(report_close(&r), "missing key: weight\n"
                                     "missing key: bn.weight\n"
                                     "converted bn.running_mean: int64 -> float32\n");
  cr_assert(strstr(err.msg, "(first: missing key: weight)"), "%s", err.msg);
  free(r.text);
  cb_weights_free(w2);
  cb_weights_free(w);
  cb_module_free(m);
}
