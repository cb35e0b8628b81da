#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cbrick/args.h"
#include "float16.h"
#include "weights_internal.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; cbrick reads it on little-endian hosts only"
#endif

/* safetensors: u64 N, N bytes of JSON header, then the data block that
 * every entry's data_offsets [begin, end) points into. */

/* The file, mapped read-only. */
typedef struct st_file {
  const char *path;
  const unsigned char *map;
  uint64_t size, header_len;
} st_file;

#define ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct st_dtype {
  const char *name;
  size_t size;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 4}, {"F16", 2},     {"BF16", 2},    {"F64", 8},     {"I64", 8}, {"U8", 1},
    {"I8", 1},  {"BOOL", 1},    {"I16", 2},     {"U16", 2},     {"I32", 4}, {"U32", 4},
    {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
};

typedef struct st_entry {
  const char *key;
  const st_dtype *dtype;
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  uint64_t begin, end;
} st_entry;

static const st_dtype *st_dtype_find(const char *name) {
  for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
    if (strcmp(st_dtypes[i].name, name) == 0) return &st_dtypes[i];
  return NULL;
}

static int entry_shape(const char *path, st_entry *e, json_t *shape, cb_error *err) {
  if (!json_is_array(shape))
    return cb_fail(err, "%s: tensor '%s': shape must be a list of integers, found %s", path, e->key,
                   cb_json_kind(shape));
  if (json_array_size(shape) > CB_MAX_DIMS)
    return cb_fail(err, "%s: tensor '%s': shape has %zu dims, at most %d are supported", path,
                   e->key, json_array_size(shape), CB_MAX_DIMS);
  e->ndim = (int)json_array_size(shape);
  for (int d = 0; d < e->ndim; d++) {
    json_t *dim = json_array_get(shape, (size_t)d);
    if (!json_is_integer(dim))
      return cb_fail(err, "%s: tensor '%s': shape[%d] must be an integer, found %s", path, e->key,
                     d, cb_json_kind(dim));
    if (json_integer_value(dim) < 0)
      return cb_fail(err, "%s: tensor '%s': shape[%d] is negative (%lld)", path, e->key, d,
                     (long long)json_integer_value(dim));
    e->shape[d] = json_integer_value(dim);
  }
  return 0;
}

static int entry_offsets(const char *path, st_entry *e, json_t *offsets, cb_error *err) {
  json_t *b = json_array_get(offsets, 0), *end = json_array_get(offsets, 1);
  if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_is_integer(b) ||
      !json_is_integer(end))
    return cb_fail(err, "%s: tensor '%s': data_offsets must be [begin, end] integers, found %s",
                   path, e->key, cb_json_kind(offsets));
  if (json_integer_value(b) < 0 || json_integer_value(end) < json_integer_value(b))
    return cb_fail(err, "%s: tensor '%s': data_offsets [%lld, %lld] are not 0 <= begin <= end",
                   path, e->key, (long long)json_integer_value(b),
                   (long long)json_integer_value(end));
  e->begin = (uint64_t)json_integer_value(b);
  e->end = (uint64_t)json_integer_value(end);
  return 0;
}

static int entry_nbytes(const st_entry *e, uint64_t *out) {
  uint64_t n = e->dtype->size;
  for (int d = 0; d < e->ndim; d++)
    if (__builtin_mul_overflow(n, (uint64_t)e->shape[d], &n)) return -1;
  *out = n;
  return n > INT64_MAX ? -1 : 0;
}

static int entry_parse(const char *path, const char *key, json_t *v, st_entry *e, cb_error *err) {
  const char *known[] = {"dtype", "shape", "data_offsets"};
  e->key = key;
  if (!json_is_object(v))
    return cb_fail(err, "%s: tensor '%s': expected an object, found %s", path, key,
                   cb_json_kind(v));
  for (int i = 0; i < 3; i++)
    if (!json_object_get(v, known[i]))
      return cb_fail(err, "%s: tensor '%s': missing '%s'", path, key, known[i]);
  json_t *dtype = json_object_get(v, "dtype");
  if (!json_is_string(dtype))
    return cb_fail(err, "%s: tensor '%s': dtype must be a string, found %s", path, key,
                   cb_json_kind(dtype));
  e->dtype = st_dtype_find(json_string_value(dtype));
  if (!e->dtype) {
    cb_fail(err, "%s: tensor '%s': unknown dtype '%s'", path, key, json_string_value(dtype));
    return -1;
  }
  if (entry_shape(path, e, json_object_get(v, "shape"), err) ||
      entry_offsets(path, e, json_object_get(v, "data_offsets"), err))
    return -1;
  uint64_t nbytes;
  if (entry_nbytes(e, &nbytes))
    return cb_fail(err, "%s: tensor '%s': shape is too large (size overflows)", path, key);
  if (e->end - e->begin != nbytes)
    return cb_fail(err,
                   "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but %s shape "
                   "needs %llu",
                   path, key, (unsigned long long)e->begin, (unsigned long long)e->end,
                   (unsigned long long)(e->end - e->begin), e->dtype->name,
                   (unsigned long long)nbytes);
  return 0;
}

static int metadata_check(const char *path, json_t *meta, cb_error *err) {
  const char *key;
  json_t *value;
  if (!json_is_object(meta))
    return cb_fail(err, "%s: __metadata__ must be an object of strings, found %s", path,
                   cb_json_kind(meta));
  json_object_foreach(meta, key, value) {
    if (!json_is_string(value))
      return cb_fail(err, "%s: __metadata__['%s'] must be a string, found %s", path, key,
                     cb_json_kind(value));
  }
  return 0;
}

static int by_offset(const void *a, const void *b) {
  const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* Offsets sorted by begin must tile [0, total) exactly. */
static int offsets_check(const char *path, st_entry *entries, int n, uint64_t *total,
                         cb_error *err) {
  st_entry **sorted = malloc((size_t)(n ? n : 1) * sizeof(*sorted));
  if (!sorted) return cb_fail(err, "%s: out of memory", path);
  for (int i = 0; i < n; i++)
    sorted[i] = &entries[i];
  qsort(sorted, (size_t)n, sizeof(*sorted), by_offset);
  uint64_t at = 0;
  const char *prev = NULL;
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    st_entry *e = sorted[i];
    if (e->begin < at) {
      rc = cb_fail(err, "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (ending at %llu)",
                   path, e->key, (unsigned long long)e->begin, (unsigned long long)e->end, prev,
                   (unsigned long long)at);
    } else if (e->begin > at) {
      rc = cb_fail(err, "%s: data has a hole: bytes %llu..%llu belong to no tensor (before '%s')",
                   path, (unsigned long long)at, (unsigned long long)e->begin, e->key);
    } else {
      at = e->end;
      prev = e->key;
    }
  }
  free(sorted);
  *total = at;
  return rc;
}

static int header_read(st_file *f, json_t **out, cb_error *err) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = (n << 8) | f->map[i];
  if (n > ST_MAX_HEADER)
    return cb_fail(err, "%s: header length %llu is larger than the 100 MB limit", f->path,
                   (unsigned long long)n);
  if (n > f->size - 8)
    return cb_fail(err, "%s: header length %llu runs past the end of the file (%llu bytes)",
                   f->path, (unsigned long long)n, (unsigned long long)f->size);
  json_error_t jerr;
  *out = json_loadb((const char *)f->map + 8, n, JSON_REJECT_DUPLICATES, &jerr);
  if (!*out)
    return cb_fail(err, "%s: header is not valid JSON (line %d, column %d): %s", f->path, jerr.line,
                   jerr.column, jerr.text);
  if (!json_is_object(*out)) {
    cb_fail(err, "%s: header must be a JSON object, found %s", f->path, cb_json_kind(*out));
    json_decref(*out);
    *out = NULL;
    return -1;
  }
  f->header_len = n;
  return 0;
}

static void convert_to_f32(const st_dtype *dt, const void *src, float *dst, int64_t n) {
  const unsigned char *p = src;
  if (strcmp(dt->name, "F64") == 0) {
    for (int64_t i = 0; i < n; i++) {
      double d;
      memcpy(&d, p + 8 * i, 8);
      dst[i] = (float)d;
    }
    return;
  }
  bool bf16 = strcmp(dt->name, "BF16") == 0;
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    uint32_t bits = (uint32_t)h << 16;
    if (bf16)
      memcpy(&dst[i], &bits, 4);
    else
      dst[i] = cb_half_to_float(h);
  }
}

static cb_dtype target_dtype(const st_dtype *dt, bool *convert) {
  *convert = false;
  if (strcmp(dt->name, "F32") == 0) return CB_F32;
  if (strcmp(dt->name, "I64") == 0) return CB_I64;
  if (strcmp(dt->name, "U8") == 0) return CB_U8;
  *convert =
      strcmp(dt->name, "F16") == 0 || strcmp(dt->name, "BF16") == 0 || strcmp(dt->name, "F64") == 0;
  return *convert ? CB_F32 : CB_DTYPE_COUNT;
}

/* Adds entry e to w: aligned F32 data as a view of the mapping, anything else as a copy. */
static int entry_load(const st_file *f, const st_entry *e, cb_weights *w, bool *mapped,
                      cb_error *err) {
  bool convert;
  cb_dtype dtype = target_dtype(e->dtype, &convert);
  if (dtype == CB_DTYPE_COUNT)
    return cb_fail(err,
                   "%s: tensor '%s' has dtype %s, which cbrick does not read (F32, F16, BF16, "
                   "F64, I64, U8 are supported)",
                   f->path, e->key, e->dtype->name);
  const unsigned char *src = f->map + 8 + f->header_len + e->begin;
  size_t nbytes = (size_t)(e->end - e->begin);
  if (dtype == CB_F32 && !convert && nbytes && (uintptr_t)src % sizeof(float) == 0) {
    cb_tensor view = {.dtype = CB_F32, .ndim = e->ndim, .data = (void *)src};
    memcpy(view.shape, e->shape, sizeof(view.shape));
    *mapped = true;
    return cb_weights_add_borrowed(w, e->key, &view, err);
  }
  cb_tensor *t = cb_tensor_new(dtype, e->ndim, e->shape, err);
  if (!t) return cb_error_prefix(err, "%s: tensor '%s': ", f->path, e->key);
  if (convert)
    convert_to_f32(e->dtype, src, cb_f32(t), cb_tensor_numel(t));
  else if (nbytes)
    memcpy(t->data, src, nbytes);
  return cb_weights_add(w, e->key, t, err);
}

static int entries_parse(const char *path, json_t *header, st_entry *entries, int *n, json_t **meta,
                         cb_error *err) {
  const char *key;
  json_t *value;
  *n = 0;
  json_object_foreach(header, key, value) {
    if (strcmp(key, "__metadata__") == 0) {
      if (metadata_check(path, value, err)) return -1;
      *meta = value;
      continue;
    }
    if (entry_parse(path, key, value, &entries[*n], err) || !entries[*n].dtype) return -1;
    (*n)++;
  }
  return 0;
}

/* Takes the mapping: w unmaps it when freed, or now when no tensor points into it. */
static cb_weights *weights_load(const st_file *f, json_t *header, cb_error *err) {
  size_t cap = json_object_size(header);
  st_entry *entries = calloc(cap ? cap : 1, sizeof(*entries));
  cb_weights *w = entries ? cb_weights_new(err) : NULL;
  json_t *meta = NULL;
  int n = 0;
  uint64_t total = 0;
  bool mapped = false;
  if (!entries) cb_fail(err, "%s: out of memory", f->path);
  if (!w) {
    munmap((void *)f->map, f->size);
    goto fail;
  }
  cb_weights_keep_mapping(w, (void *)f->map, f->size);
  if (entries_parse(f->path, header, entries, &n, &meta, err) ||
      offsets_check(f->path, entries, n, &total, err))
    goto fail;
  uint64_t expected = 8 + f->header_len + total;
  if (f->size != expected) {
    cb_fail(err, "%s: file is %llu bytes, but the header says %llu (8 + %llu header + %llu data)",
            f->path, (unsigned long long)f->size, (unsigned long long)expected,
            (unsigned long long)f->header_len, (unsigned long long)total);
    goto fail;
  }
  if (meta && cb_weights_set_metadata(w, meta, err)) goto fail;
  for (int i = 0; i < n; i++)
    if (entry_load(f, &entries[i], w, &mapped, err)) goto fail;
  if (!mapped) {
    cb_weights_keep_mapping(w, NULL, 0);
    munmap((void *)f->map, f->size);
  }
  free(entries);
  return w;
fail:
  free(entries);
  cb_weights_free(w);
  return NULL;
}

static int file_map(st_file *f, cb_error *err) {
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cb_fail(err, "%s: cannot open: %s", f->path, strerror(errno));
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) != 0)
    rc = cb_fail(err, "%s: cannot stat the file: %s", f->path, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    rc = cb_fail(err, "%s: not a regular file", f->path);
  else if ((uint64_t)st.st_size < 8)
    rc = cb_fail(err, "%s: file is %llu bytes, too short for a safetensors header", f->path,
                 (unsigned long long)st.st_size);
  if (rc == 0) {
    f->size = (uint64_t)st.st_size;
    void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
      rc = cb_fail(err, "%s: cannot map the file: %s", f->path, strerror(errno));
    else
      f->map = map;
  }
  close(fd);
  return rc;
}

CB_API cb_weights *cb_safetensors_read(const char *path, cb_error *err) {
  st_file f = {.path = path};
  json_t *header = NULL;
  if (file_map(&f, err) || !f.map) return NULL;
  if (header_read(&f, &header, err)) {
    munmap((void *)f.map, f.size);
    return NULL;
  }
  cb_weights *w = weights_load(&f, header, err);
  json_decref(header);
  return w;
}

/* ---- writing ---- */

static const char *st_dtype_name(cb_dtype dtype) {
  switch (dtype) {
  case CB_F32:
    return "F32";
  case CB_I64:
    return "I64";
  case CB_U8:
    return "U8";
  default:
    return NULL;
  }
}

static json_t *header_build(const cb_weights *w, json_t *metadata, cb_error *err) {
  json_t *h = json_object();
  uint64_t at = 0;
  if (metadata) json_object_set(h, "__metadata__", metadata);
  for (int i = 0; i < cb_weights_count(w); i++) {
    const char *name = cb_weights_name(w, i);
    const cb_tensor *t = cb_weights_tensor(w, i);
    const char *dtype = st_dtype_name(t->dtype);
    if (!dtype || strcmp(name, "__metadata__") == 0) {
      cb_fail(err, dtype ? "cannot write a tensor named '%s'" : "tensor '%s': unsupported dtype",
              name);
      json_decref(h);
      return NULL;
    }
    json_t *shape = json_array();
    for (int d = 0; d < t->ndim; d++)
      json_array_append_new(shape, json_integer(t->shape[d]));
    uint64_t end = at + cb_tensor_nbytes(t);
    json_object_set_new(h, name,
                        json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype, "shape", shape,
                                  "data_offsets", (json_int_t)at, (json_int_t)end));
    at = end;
  }
  return h;
}

static int file_write(FILE *f, const char *header, size_t len, const cb_weights *w) {
  size_t padded = (len + 7) / 8 * 8;
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  if (fwrite(len8, 1, 8, f) != 8 || fwrite(header, 1, len, f) != len) return -1;
  for (size_t i = len; i < padded; i++)
    if (fputc(' ', f) == EOF) return -1;
  for (int i = 0; i < cb_weights_count(w); i++) {
    const cb_tensor *t = cb_weights_tensor(w, i);
    size_t n = cb_tensor_nbytes(t);
    if (n && fwrite(t->data, 1, n, f) != n) return -1;
  }
  return 0;
}

/* A new file next to path, created with the permissions fopen would give it. */
static FILE *temp_create(const char *path, char **tmp) {
  size_t cap = strlen(path) + 48;
  *tmp = malloc(cap);
  if (!*tmp) return NULL;
  for (int attempt = 0; attempt < 100; attempt++) {
    snprintf(*tmp, cap, "%s.tmp-%ld-%d", path, (long)getpid(), attempt);
    int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      FILE *f = fdopen(fd, "wb");
      if (f) return f;
      close(fd);
      remove(*tmp);
      break;
    }
    if (errno != EEXIST) break;
  }
  free(*tmp);
  *tmp = NULL;
  return NULL;
}

/* metadata NULL writes the weights' own metadata, if any. The file is written under a
 * temporary name and renamed onto path, so weights mapped from path stay intact. */
CB_API int cb_safetensors_write(const char *path, const cb_weights *w, json_t *metadata,
                                cb_error *err) {
  if (!metadata) metadata = cb_weights_metadata(w);
  if (metadata && metadata_check(path, metadata, err)) return -1;
  json_t *h = header_build(w, metadata, err);
  if (!h) return cb_error_prefix(err, "%s: ", path);
  char *text = json_dumps(h, JSON_COMPACT);
  json_decref(h);
  if (!text) return cb_fail(err, "%s: cannot encode the header", path);
  char *tmp;
  FILE *f = temp_create(path, &tmp);
  if (!f) {
    free(text);
    return cb_fail(err, "%s: cannot create: %s", path, strerror(errno));
  }
  int bad = file_write(f, text, strlen(text), w);
  free(text);
  if (fclose(f) != 0 || bad) bad = cb_fail(err, "%s: write failed: %s", path, strerror(errno));
  if (!bad && rename(tmp, path) != 0)
    bad = cb_fail(err, "%s: cannot replace the file: %s", path, strerror(errno));
  if (bad) remove(tmp);
  free(tmp);
  return bad ? -1 : 0;
}
