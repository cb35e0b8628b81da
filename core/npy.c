#define _FILE_OFFSET_BITS 64
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "cbrick/io.h"

/* .npy: "\x93NUMPY", version major.minor, header length (u16 for 1.0, u32 for
 * 2.0), a Python dict literal {'descr': '<f4', 'fortran_order': False,
 * 'shape': (2, 3), } padded with spaces and a newline, then the raw data. */

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAX_HEADER (1u << 20)

typedef struct npy_header {
  char descr[32];
  int has_descr, has_order, has_shape;
  bool fortran_order;
  int ndim;
  int64_t shape[CB_MAX_DIMS];
} npy_header;

typedef struct npy_parser {
  const char *s;
  const char *path;
  cb_error *err;
} npy_parser;

static void skip_space(npy_parser *p) {
  while (isspace((unsigned char)*p->s))
    p->s++;
}

static int expect(npy_parser *p, char c) {
  skip_space(p);
  if (*p->s != c)
    return cb_fail(p->err, "%s: bad header: expected '%c' at \"%.20s\"", p->path, c, p->s);
  p->s++;
  return 0;
}

static int parse_string(npy_parser *p, char *out, size_t cap) {
  skip_space(p);
  char quote = *p->s;
  if (quote != '\'' && quote != '"')
    return cb_fail(p->err, "%s: bad header: expected a string at \"%.20s\"", p->path, p->s);
  const char *end = strchr(p->s + 1, quote);
  if (!end || (size_t)(end - p->s - 1) >= cap)
    return cb_fail(p->err, "%s: bad header: unterminated or overlong string", p->path);
  memcpy(out, p->s + 1, (size_t)(end - p->s - 1));
  out[end - p->s - 1] = '\0';
  p->s = end + 1;
  return 0;
}

static int parse_bool(npy_parser *p, bool *out) {
  skip_space(p);
  if (strncmp(p->s, "True", 4) == 0 || strncmp(p->s, "False", 5) == 0) {
    *out = *p->s == 'T';
    p->s += *out ? 4 : 5;
    return 0;
  }
  return cb_fail(p->err, "%s: bad header: fortran_order must be True or False, found \"%.10s\"",
                 p->path, p->s);
}

static int parse_shape(npy_parser *p, npy_header *h) {
  if (expect(p, '(')) return -1;
  h->ndim = 0;
  for (;;) {
    skip_space(p);
    if (*p->s == ')') break;
    if (h->ndim == CB_MAX_DIMS)
      return cb_fail(p->err, "%s: shape has more than %d dims", p->path, CB_MAX_DIMS);
    if (!isdigit((unsigned char)*p->s))
      return cb_fail(p->err, "%s: bad header: expected a dimension at \"%.20s\"", p->path, p->s);
    char *end;
    errno = 0;
    long long v = strtoll(p->s, &end, 10);
    if (errno) return cb_fail(p->err, "%s: bad header: dimension too large", p->path);
    h->shape[h->ndim++] = v;
    p->s = end;
    skip_space(p);
    if (*p->s == ',')
      p->s++;
    else if (*p->s != ')')
      return cb_fail(p->err, "%s: bad header: expected ',' or ')' in shape", p->path);
  }
  p->s++;
  return 0;
}

static int parse_entry(npy_parser *p, npy_header *h) {
  char key[32];
  if (parse_string(p, key, sizeof(key)) || expect(p, ':')) return -1;
  if (strcmp(key, "descr") == 0) {
    h->has_descr = 1;
    return parse_string(p, h->descr, sizeof(h->descr));
  }
  if (strcmp(key, "fortran_order") == 0) {
    h->has_order = 1;
    return parse_bool(p, &h->fortran_order);
  }
  if (strcmp(key, "shape") == 0) {
    h->has_shape = 1;
    return parse_shape(p, h);
  }
  return cb_fail(p->err, "%s: bad header: unknown key '%s'", p->path, key);
}

static int header_parse(const char *text, const char *path, npy_header *h, cb_error *err) {
  npy_parser p = {text, path, err};
  memset(h, 0, sizeof(*h));
  if (expect(&p, '{')) return -1;
  for (;;) {
    skip_space(&p);
    if (*p.s == '}') break;
    if (parse_entry(&p, h)) return -1;
    skip_space(&p);
    if (*p.s == ',')
      p.s++;
    else if (*p.s != '}')
      return cb_fail(err, "%s: bad header: expected ',' or '}'", path);
  }
  if (!h->has_descr || !h->has_order || !h->has_shape)
    return cb_fail(err, "%s: header lacks '%s'", path,
                   !h->has_descr   ? "descr"
                   : !h->has_order ? "fortran_order"
                                   : "shape");
  if (strcmp(h->descr, "<f4") != 0)
    return cb_fail(err, "%s: dtype '%s' is not supported (only '<f4', little-endian float32)", path,
                   h->descr);
  if (h->fortran_order)
    return cb_fail(err, "%s: fortran_order is True; only C-order arrays are supported", path);
  return 0;
}

static int preamble_read(FILE *f, const char *path, char **text, cb_error *err) {
  unsigned char pre[12];
  if (fread(pre, 1, 8, f) != 8 || memcmp(pre, NPY_MAGIC, 6) != 0)
    return cb_fail(err, "%s: not a .npy file (bad magic; expected \\x93NUMPY)", path);
  if (pre[6] != 1 && pre[6] != 2)
    return cb_fail(err, "%s: .npy version %d.%d is not supported (1.0 and 2.0 are)", path, pre[6],
                   pre[7]);
  size_t nlen = pre[6] == 1 ? 2 : 4;
  if (fread(pre + 8, 1, nlen, f) != nlen) return cb_fail(err, "%s: truncated header", path);
  uint32_t len = pre[8] | (uint32_t)pre[9] << 8;
  if (nlen == 4) len |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
  if (len > NPY_MAX_HEADER)
    return cb_fail(err, "%s: header length %u is implausibly large", path, len);
  *text = malloc(len + 1);
  if (!*text) return cb_fail(err, "%s: out of memory", path);
  if (fread(*text, 1, len, f) != len) {
    free(*text);
    *text = NULL;
    return cb_fail(err, "%s: truncated header (%u bytes announced)", path, len);
  }
  (*text)[len] = '\0';
  return 0;
}

static cb_tensor *data_read(FILE *f, const char *path, const npy_header *h, cb_error *err) {
  struct stat st;
  long pos = ftell(f);
  if (fstat(fileno(f), &st) != 0 || pos < 0) {
    cb_fail(err, "%s: cannot stat the file", path);
    return NULL;
  }
  uint64_t have = (uint64_t)st.st_size - (uint64_t)pos, need = 4;
  for (int d = 0; d < h->ndim; d++)
    if (__builtin_mul_overflow(need, (uint64_t)h->shape[d], &need)) need = UINT64_MAX;
  char shape[128];
  cb_shape_format(h->ndim, h->shape, shape, sizeof(shape));
  if (have != need) {
    cb_fail(err, "%s: %s data of shape %s needs %llu bytes, the file has %llu", path,
            have < need ? "truncated:" : "extra bytes:", shape, (unsigned long long)need,
            (unsigned long long)have);
    return NULL;
  }
  cb_tensor *t = cb_tensor_new(CB_F32, h->ndim, h->shape, err);
  if (t && need && fread(t->data, 1, need, f) != need) {
    cb_tensor_free(t);
    cb_fail(err, "%s: cannot read the data", path);
    return NULL;
  }
  return t;
}

CB_API cb_tensor *cb_npy_read(const char *path, cb_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    cb_fail(err, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  char *text = NULL;
  npy_header h;
  cb_tensor *t = NULL;
  if (preamble_read(f, path, &text, err) == 0 && text && header_parse(text, path, &h, err) == 0)
    t = data_read(f, path, &h, err);
  free(text);
  fclose(f);
  return t;
}

CB_API int cb_npy_write(const char *path, const cb_tensor *t, cb_error *err) {
  if (t->dtype != CB_F32)
    return cb_fail(err, "%s: only float32 tensors can be written as .npy (found %s)", path,
                   cb_dtype_name(t->dtype));
  char header[512];
  int n = snprintf(header, sizeof(header), "{'descr': '<f4', 'fortran_order': False, 'shape': (");
  for (int d = 0; d < t->ndim; d++)
    n += snprintf(header + n, sizeof(header) - (size_t)n, "%s%lld", d ? ", " : "",
                  (long long)t->shape[d]);
  n += snprintf(header + n, sizeof(header) - (size_t)n, "%s), }", t->ndim == 1 ? "," : "");
  int total = (10 + n + 1 + 63) / 64 * 64;
  while (10 + n + 1 < total)
    header[n++] = ' ';
  header[n++] = '\n';
  unsigned char pre[10] = {
      0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
  FILE *f = fopen(path, "wb");
  if (!f) return cb_fail(err, "%s: cannot create: %s", path, strerror(errno));
  size_t nbytes = cb_tensor_nbytes(t);
  int bad = fwrite(pre, 1, 10, f) != 10 || fwrite(header, 1, (size_t)n, f) != (size_t)n ||
            (nbytes && fwrite(t->data, 1, nbytes, f) != nbytes);
  if (fclose(f) != 0 || bad) {
    remove(path);
    return cb_fail(err, "%s: write failed: %s", path, strerror(errno));
  }
  return 0;
}
