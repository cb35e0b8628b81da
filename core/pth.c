#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pickle.h"
#include "float16.h"
#include "pth.h"
#include "zip_reader.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cbrick reads PyTorch checkpoints on little-endian hosts only"
#endif

/* A torch.save archive: <prefix>/data.pkl (the pickle), <prefix>/data/<key>
 * (raw storage bytes), <prefix>/byteorder (optional), <prefix>/version. */

#define MAX_NESTING 32
/* Views may repeat storage data (shared storages, stride-0 dims) and widen
 * dtypes, but the tensors they make stay within this many bytes: 8x the file
 * (int8 -> int64) plus a fixed allowance. */
#define OUTPUT_FACTOR 8
#define OUTPUT_ALLOWANCE (256ull << 20)

typedef struct pth_file {
  zip_reader zip;
  const char *label;
  char *prefix; /* "archive/" (or "" for entries at the top) */
  cb_weights *out;
  cb_error *err;
  uint64_t budget; /* bytes the remaining tensors may take */
} pth_file;

static int find_pickle(pth_file *f) {
  const char *found = NULL;
  for (size_t i = 0; i < f->zip.n; i++) {
    const char *name = f->zip.entries[i].name, *slash = strchr(name, '/');
    int top = strcmp(name, "data.pkl") == 0;
    int nested = slash && strcmp(slash, "/data.pkl") == 0 && slash > name;
    if (!top && !nested) continue;
    if (found)
      return cb_fail(f->err, "%s: the archive holds two pickles ('%s' and '%s')", f->label, found,
                     name);
    found = name;
  }
  if (!found)
    return cb_fail(f->err, "%s: zip archive has no data.pkl: not a torch.save checkpoint",
                   f->label);
  size_t len = strlen(found) - strlen("data.pkl");
  f->prefix = strndup(found, len);
  if (!f->prefix) return cb_fail(f->err, "%s: out of memory", f->label);
  return 0;
}

static zip_entry *entry_named(pth_file *f, const char *suffix) {
  size_t n = strlen(f->prefix) + strlen(suffix) + 1;
  char *name = malloc(n);
  if (!name) return NULL;
  snprintf(name, n, "%s%s", f->prefix, suffix);
  zip_entry *e = zip_find(&f->zip, name);
  free(name);
  return e;
}

static int check_byteorder(pth_file *f) {
  zip_entry *e = entry_named(f, "byteorder");
  const unsigned char *p;
  size_t n;
  if (!e) return 0;
  if (zip_entry_data(&f->zip, e, &p, &n, f->err)) return -1;
  while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
    n--;
  if (n == 6 && memcmp(p, "little", 6) == 0) return 0;
  if (n == 3 && memcmp(p, "big", 3) == 0)
    return cb_fail(f->err,
                   "%s: checkpoint was saved on a big-endian machine (byteorder 'big'); "
                   "only little-endian checkpoints are supported",
                   f->label);
  return cb_fail(f->err, "%s: byteorder record must be 'little' or 'big', found %zu other bytes",
                 f->label, n);
}

/* ---- tensors ---- */

static uint16_t rd_u16(const unsigned char *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static cb_dtype target_dtype(pk_storage_type type) {
  switch (type) {
  case PK_ST_F32:
  case PK_ST_F64:
  case PK_ST_F16:
  case PK_ST_BF16:
    return CB_F32;
  case PK_ST_I64:
  case PK_ST_I32:
  case PK_ST_I16:
  case PK_ST_I8:
    return CB_I64;
  case PK_ST_U8:
  case PK_ST_BOOL:
    return CB_U8;
  default:
    return CB_DTYPE_COUNT;
  }
}

/* Converts n elements, src stride in elements, into the contiguous dst. */
static void convert_run(pk_storage_type type, const unsigned char *src, int64_t stride, int64_t n,
                        void *dst) {
  size_t es = pk_storage_elem_size(type);
  size_t step = (size_t)stride * es;
  float *f = dst;
  int64_t *l = dst;
  uint8_t *b = dst;
  if (stride == 1 && (type == PK_ST_F32 || type == PK_ST_I64 || type == PK_ST_U8)) {
    memcpy(dst, src, (size_t)n * es);
    return;
  }
  for (int64_t i = 0; i < n; i++, src += step) {
    switch (type) {
    case PK_ST_F32:
      memcpy(&f[i], src, 4);
      break;
    case PK_ST_F64: {
      double d;
      memcpy(&d, src, 8);
      f[i] = (float)d;
      break;
    }
    case PK_ST_F16:
      f[i] = cb_half_to_float(rd_u16(src));
      break;
    case PK_ST_BF16: {
      uint32_t bits = (uint32_t)rd_u16(src) << 16;
      memcpy(&f[i], &bits, 4);
      break;
    }
    case PK_ST_I64:
      memcpy(&l[i], src, 8);
      break;
    case PK_ST_I32: {
      int32_t v;
      memcpy(&v, src, 4);
      l[i] = v;
      break;
    }
    case PK_ST_I16: {
      int16_t v;
      memcpy(&v, src, 2);
      l[i] = v;
      break;
    }
    case PK_ST_I8: {
      int8_t v;
      memcpy(&v, src, 1);
      l[i] = v; // NOLINT(bugprone-signed-char-misuse): int8 storages are signed
      break;
    }
    case PK_ST_BOOL:
      b[i] = src[0] != 0;
      break;
    default:
      b[i] = src[0];
      break;
    }
  }
}

/* Copies a strided view into t (contiguous), one innermost row at a time. */
static void gather(const pk_tensor *v, pk_storage_type type, const unsigned char *base,
                   cb_tensor *t) {
  int nd = v->ndim;
  int64_t row = nd ? v->shape[nd - 1] : 1, rstride = nd ? v->stride[nd - 1] : 1;
  int64_t rows = cb_tensor_numel(t) / (row ? row : 1);
  int64_t idx[CB_MAX_DIMS] = {0};
  size_t es = pk_storage_elem_size(type), out_es = cb_dtype_size(t->dtype);
  unsigned char *dst = t->data;
  if (cb_tensor_numel(t) == 0) return;
  for (int64_t r = 0; r < rows; r++) {
    int64_t at = v->offset;
    for (int d = 0; d < nd - 1; d++)
      at += idx[d] * v->stride[d];
    convert_run(type, base + (size_t)at * es, rstride, row, dst + (size_t)(r * row) * out_es);
    for (int d = nd - 2; d >= 0; d--) {
      if (++idx[d] < v->shape[d]) break;
      idx[d] = 0;
    }
  }
}

static int storage_bytes(pth_file *f, pk_storage *s, const char *name) {
  if (s->bytes) return 0;
  size_t n = strlen(s->key) + 6;
  char *suffix = malloc(n);
  if (!suffix) return cb_fail(f->err, "%s: out of memory", f->label);
  snprintf(suffix, n, "data/%s", s->key);
  zip_entry *e = entry_named(f, suffix);
  free(suffix);
  if (!e)
    return cb_fail(f->err, "%s: tensor '%s': storage '%s' is missing from the archive", f->label,
                   name, s->key);
  const unsigned char *p;
  size_t size;
  if (zip_entry_data(&f->zip, e, &p, &size, f->err)) return -1;
  uint64_t want;
  if (__builtin_mul_overflow((uint64_t)s->numel, pk_storage_elem_size(s->type), &want) ||
      want != size)
    return cb_fail(f->err,
                   "%s: tensor '%s': storage '%s' holds %zu bytes, but %lld elements of "
                   "%s need %llu",
                   f->label, name, s->key, size, (long long)s->numel, s->type_name,
                   (unsigned long long)want);
  s->bytes = p ? p : (const unsigned char *)"";
  return 0;
}

/* The view must stay inside its storage: offset + sum((size-1)*stride) < numel. */
static int view_check(pth_file *f, const pk_tensor *v, const pk_storage *s, const char *name) {
  int64_t numel = 1, last = v->offset;
  for (int d = 0; d < v->ndim; d++)
    if (__builtin_mul_overflow(numel, v->shape[d], &numel))
      return cb_fail(f->err, "%s: tensor '%s': shape is too large", f->label, name);
  if (numel == 0) return 0;
  for (int d = 0; d < v->ndim; d++) {
    int64_t span;
    if (__builtin_mul_overflow(v->shape[d] - 1, v->stride[d], &span) ||
        __builtin_add_overflow(last, span, &last))
      return cb_fail(f->err, "%s: tensor '%s': strides overflow", f->label, name);
  }
  if (last >= s->numel)
    return cb_fail(f->err,
                   "%s: tensor '%s': view (offset %lld, last element %lld) runs past its "
                   "storage '%s' of %lld elements",
                   f->label, name, (long long)v->offset, (long long)last, s->key,
                   (long long)s->numel);
  return 0;
}

static cb_tensor *tensor_load(pth_file *f, const pk_tensor *v, const char *name) {
  pk_storage *s = &v->storage->u.storage;
  cb_dtype dtype = target_dtype(s->type);
  if (dtype == CB_DTYPE_COUNT) {
    cb_fail(f->err, "%s: tensor '%s' is stored as %s, which is not supported", f->label, name,
            s->type_name);
    return NULL;
  }
  if (view_check(f, v, s, name) || storage_bytes(f, s, name)) return NULL;
  uint64_t nbytes = cb_dtype_size(dtype);
  int overflow = 0;
  for (int d = 0; d < v->ndim; d++)
    overflow |= __builtin_mul_overflow(nbytes, (uint64_t)v->shape[d], &nbytes);
  if (overflow || nbytes > f->budget) {
    cb_fail(f->err,
            "%s: tensor '%s' (%llu bytes) takes the tensors past %llu bytes, far more "
            "than the file holds (views repeating the same data?)",
            f->label, name, (unsigned long long)nbytes,
            (unsigned long long)(OUTPUT_FACTOR * f->zip.size + OUTPUT_ALLOWANCE));
    return NULL;
  }
  f->budget -= nbytes;
  cb_tensor *t = cb_tensor_new(dtype, v->ndim, v->shape, f->err);
  if (!t) {
    cb_error_prefix(f->err, "%s: tensor '%s': ", f->label, name);
    return NULL;
  }
  gather(v, s->type, s->bytes, t);
  return t;
}

/* ---- the state dict ---- */

static int flatten(pth_file *f, pk_value *dict, const char *prefix, int depth);

static int is_tensor_rebuild(const pk_value *v) {
  const char *n = v->u.global.name;
  return strncmp(n, "torch._utils._rebuild", 21) == 0 ||
         strncmp(n, "torch._tensor._rebuild", 22) == 0;
}

static int add_entry(pth_file *f, const char *name, pk_value *v, int depth) {
  if (v->kind == PK_TENSOR) {
    cb_tensor *t = tensor_load(f, &v->u.tensor, name);
    if (!t) return -1;
    if (cb_weights_add(f->out, name, t, f->err)) return cb_error_prefix(f->err, "%s: ", f->label);
    return 0;
  }
  if (v->kind == PK_DICT) return flatten(f, v, name, depth + 1);
  if (v->kind == PK_OPAQUE && is_tensor_rebuild(v))
    return cb_fail(f->err, "%s: '%s' is a tensor rebuilt by %s, which is not supported", f->label,
                   name, v->u.global.name);
  return 0;
}

static int flatten(pth_file *f, pk_value *dict, const char *prefix, int depth) {
  if (depth > MAX_NESTING)
    return cb_fail(f->err, "%s: '%s': dicts nested more than %d levels deep", f->label, prefix,
                   MAX_NESTING);
  /* A pickle can share one dict between many keys (or nest it in itself);
   * walking it once per path could take exponential time. */
  if (dict->visited)
    return cb_fail(f->err,
                   "%s: '%s' is a dict already seen in the state dict (shared or "
                   "cyclic dicts are not supported)",
                   f->label, prefix);
  dict->visited = 1;
  for (size_t i = 0; i + 1 < dict->u.seq.n; i += 2) {
    const pk_value *k = dict->u.seq.items[i];
    pk_value *v = dict->u.seq.items[i + 1];
    if (k->kind != PK_STR) continue;
    if (strlen(k->u.str.s) != k->u.str.len)
      return cb_fail(f->err, "%s: a state dict key contains a NUL byte", f->label);
    size_t n = strlen(prefix) + k->u.str.len + 2;
    char *name = malloc(n);
    if (!name) return cb_fail(f->err, "%s: out of memory", f->label);
    snprintf(name, n, "%s%s%s", prefix, *prefix ? "." : "", k->u.str.s);
    int rc = add_entry(f, name, v, depth);
    free(name);
    if (rc) return -1;
  }
  return 0;
}

static pk_value *state_dict_of(pth_file *f, pk_value *root) {
  if (root->kind != PK_DICT) {
    cb_fail(f->err,
            "%s: the checkpoint holds a %s%s%s%s, not a dict of tensors (save "
            "model.state_dict() instead of the model)",
            f->label, pk_kind_name(root), root->kind == PK_OPAQUE ? " (made by '" : "",
            root->kind == PK_OPAQUE ? root->u.global.name : "",
            root->kind == PK_OPAQUE ? "')" : "");
    return NULL;
  }
  const char *names[] = {"state_dict", "model"};
  for (int i = 0; i < 2; i++) {
    pk_value *sd = pk_dict_get(root, names[i]);
    if (sd && sd->kind == PK_DICT) return sd;
    if (sd && i == 0) {
      cb_fail(f->err, "%s: 'state_dict' is a %s, not a dict", f->label, pk_kind_name(sd));
      return NULL;
    }
  }
  return root;
}

static int load(pth_file *f) {
  zip_entry *e;
  const unsigned char *p;
  size_t n;
  if (find_pickle(f) || check_byteorder(f)) return -1;
  e = entry_named(f, "data.pkl");
  if (!e || zip_entry_data(&f->zip, e, &p, &n, f->err)) return -1;
  size_t label_len = strlen(f->label) + strlen(e->name) + 3;
  char *label = malloc(label_len);
  if (!label) return cb_fail(f->err, "%s: out of memory", f->label);
  snprintf(label, label_len, "%s: %s", f->label, e->name);
  pk_vm *vm = pk_vm_new(label, f->err);
  pk_value *root = vm ? pk_run(vm, p, n, f->err) : NULL;
  pk_value *sd = root ? state_dict_of(f, root) : NULL;
  int rc = sd ? flatten(f, sd, "", 0) : -1;
  if (rc == 0 && cb_weights_count(f->out) == 0)
    rc = cb_fail(f->err, "%s: the checkpoint's state dict holds no tensors", f->label);
  pk_vm_free(vm);
  free(label);
  return rc;
}

cb_weights *pth_read_memory(const unsigned char *data, size_t size, const char *label,
                            cb_error *err) {
  pth_file f = {.label = label, .err = err};
  f.budget = OUTPUT_FACTOR * (uint64_t)size + OUTPUT_ALLOWANCE;
  if (zip_open(&f.zip, data, size, label, err)) return NULL;
  f.out = cb_weights_new(err);
  if (f.out && load(&f)) {
    cb_weights_free(f.out);
    f.out = NULL;
  }
  free(f.prefix);
  zip_close(&f.zip);
  return f.out;
}
