#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pickle.h"

/* Every value lives in vm->values and is freed with the VM, so containers,
 * the stack and the memo can share values (and even form cycles) freely. */
struct pk_vm {
  const char *label;
  cb_error *err;
  const unsigned char *data;
  size_t size, pos, op_at;
  pk_value **values;
  size_t nvalues, values_cap;
  pk_value **stack;
  size_t sp, stack_cap;
  size_t *marks;
  size_t nmarks, marks_cap;
  pk_value **memo;
  size_t memo_cap, memo_count;
};

enum {
  G_OPAQUE,
  G_ORDERED_DICT,
  G_REBUILD_TENSOR_V2,
  G_REBUILD_PARAMETER,
  G_REBUILD_PARAMETER_STATE,
  G_REBUILD_FROM_TYPE_V2,
  G_SIZE,
  G_PARAMETER,
  G_TENSOR_TYPE,
  G_STORAGE, /* + pk_storage_type */
};

static const struct {
  const char *name;
  int id;
} honoured[] = {
    {"collections.OrderedDict", G_ORDERED_DICT},
    {"torch._utils._rebuild_tensor_v2", G_REBUILD_TENSOR_V2},
    {"torch._utils._rebuild_parameter", G_REBUILD_PARAMETER},
    {"torch._utils._rebuild_parameter_with_state", G_REBUILD_PARAMETER_STATE},
    {"torch._tensor._rebuild_from_type_v2", G_REBUILD_FROM_TYPE_V2},
    {"torch.Size", G_SIZE},
    {"torch.nn.parameter.Parameter", G_PARAMETER},
    {"torch.Tensor", G_TENSOR_TYPE},
    {"torch._tensor.Tensor", G_TENSOR_TYPE},
};

static const struct {
  const char *name;
  pk_storage_type type;
} storage_types[] = {
    {"FloatStorage", PK_ST_F32},
    {"DoubleStorage", PK_ST_F64},
    {"HalfStorage", PK_ST_F16},
    {"BFloat16Storage", PK_ST_BF16},
    {"LongStorage", PK_ST_I64},
    {"IntStorage", PK_ST_I32},
    {"ShortStorage", PK_ST_I16},
    {"CharStorage", PK_ST_I8},
    {"ByteStorage", PK_ST_U8},
    {"BoolStorage", PK_ST_BOOL},
    {"UntypedStorage", PK_ST_U8},
    {"ComplexFloatStorage", PK_ST_UNSUPPORTED},
    {"ComplexDoubleStorage", PK_ST_UNSUPPORTED},
    {"QInt8Storage", PK_ST_UNSUPPORTED},
    {"QUInt8Storage", PK_ST_UNSUPPORTED},
    {"QInt32Storage", PK_ST_UNSUPPORTED},
    {"QUInt4x2Storage", PK_ST_UNSUPPORTED},
    {"QUInt2x4Storage", PK_ST_UNSUPPORTED},
};

/* Modules whose globals could run commands, load code or reach the interpreter. */
static const char *const refused_modules[] = {
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "sys",
    "subprocess",
    "shutil",
    "socket",
    "importlib",
    "imp",
    "pkgutil",
    "runpy",
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "marshal",
    "ctypes",
    "code",
    "codeop",
    "pty",
    "pdb",
    "bdb",
    "webbrowser",
    "multiprocessing",
    "signal",
    "timeit",
    "platform",
    "commands",
    "popen2",
    "operator",
    "_operator",
    "types",
    "inspect",
    "gc",
    "io",
    "_io",
    "tempfile",
    "pathlib",
    "glob",
    "asyncio",
    "threading",
    "_thread",
    "thread",
    "ftplib",
    "http",
    "urllib",
    "urllib2",
    "smtplib",
    "telnetlib",
    "sqlite3",
    "zipimport",
    "site",
    "ensurepip",
    "distutils",
    "setuptools",
    "torch.hub",
    "torch.jit",
    "torch.package",
    "torch.ops",
    "torch._ops",
    "torch.utils.cpp_extension",
};

/* The only builtins a data file may name (they are still never called). */
static const char *const plain_builtins[] = {
    "set", "frozenset", "bytearray", "bytes", "complex", "slice",  "range",   "int",  "float",
    "str", "bool",      "tuple",     "list",  "dict",    "object", "unicode", "long",
};

size_t pk_storage_elem_size(pk_storage_type type) {
  switch (type) {
  case PK_ST_F64:
  case PK_ST_I64:
    return 8;
  case PK_ST_F32:
  case PK_ST_I32:
    return 4;
  case PK_ST_F16:
  case PK_ST_BF16:
  case PK_ST_I16:
    return 2;
  default:
    return 1;
  }
}

static const char *kind_names[] = {"None", "bool", "int", "float",  "str",    "bytes",   "tuple",
                                   "list", "dict", "set", "global", "object", "storage", "tensor"};

const char *pk_kind_name(const pk_value *v) {
  return v ? kind_names[v->kind] : "nothing";
}

static int vm_fail(pk_vm *vm, const char *fmt, const char *a, const char *b) {
  char msg[1024];
  /* fmt takes one or two %s; an unused trailing argument is harmless. */
  // cppcheck-suppress wrongPrintfScanfArgNum
  snprintf(msg, sizeof(msg), fmt, a ? a : "", b ? b : "");
  return cb_fail(vm->err, "%s at offset %zu: %s", vm->label, vm->op_at, msg);
}

static int vm_error(pk_vm *vm, const char *msg) {
  return cb_fail(vm->err, "%s at offset %zu: %s", vm->label, vm->op_at, msg);
}

static int oom(pk_vm *vm) {
  return cb_fail(vm->err, "%s at offset %zu: out of memory", vm->label, vm->op_at);
}

/* Grows *items (of elem bytes each) so that it holds at least need entries. */
static int grow(pk_vm *vm, void **items, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 8;
  while (n < need)
    n *= 2;
  void *p = realloc(*items, n * elem);
  if (!p) return oom(vm);
  memset((char *)p + *cap * elem, 0, (n - *cap) * elem);
  *items = p;
  *cap = n;
  return 0;
}

static pk_value *value_new(pk_vm *vm, pk_kind kind) {
  if (grow(vm, (void **)&vm->values, &vm->values_cap, vm->nvalues + 1, sizeof(pk_value *)))
    return NULL;
  pk_value *v = calloc(1, sizeof(*v));
  if (!v) {
    oom(vm);
    return NULL;
  }
  v->kind = kind;
  vm->values[vm->nvalues++] = v;
  return v;
}

static void value_free(pk_value *v) {
  switch (v->kind) {
  case PK_STR:
  case PK_BYTES:
    free(v->u.str.s);
    break;
  case PK_TUPLE:
  case PK_LIST:
  case PK_DICT:
  case PK_SET:
    free(v->u.seq.items);
    break;
  case PK_GLOBAL:
  case PK_OPAQUE:
    free(v->u.global.name);
    break;
  case PK_STORAGE:
    free(v->u.storage.key);
    break;
  case PK_TENSOR:
    free(v->u.tensor.shape);
    break;
  default:
    break;
  }
  free(v);
}

pk_vm *pk_vm_new(const char *label, cb_error *err) {
  pk_vm *vm = calloc(1, sizeof(*vm));
  if (!vm) {
    cb_fail(err, "%s: out of memory", label);
    return NULL;
  }
  vm->label = label;
  vm->err = err;
  return vm;
}

void pk_vm_free(pk_vm *vm) {
  if (!vm) return;
  for (size_t i = 0; i < vm->nvalues; i++)
    value_free(vm->values[i]);
  free(vm->values);
  free(vm->stack);
  free(vm->marks);
  free(vm->memo);
  free(vm);
}

/* ---- value constructors ---- */

static pk_value *int_new(pk_vm *vm, pk_kind kind, int64_t i) {
  pk_value *v = value_new(vm, kind);
  if (v) v->u.i = i;
  return v;
}

static pk_value *str_new(pk_vm *vm, pk_kind kind, const unsigned char *s, size_t len) {
  pk_value *v = value_new(vm, kind);
  if (!v) return NULL;
  v->u.str.s = malloc(len + 1);
  if (!v->u.str.s) {
    oom(vm);
    return NULL;
  }
  memcpy(v->u.str.s, s, len);
  v->u.str.s[len] = 0;
  v->u.str.len = len;
  return v;
}

static pk_value *named_new(pk_vm *vm, pk_kind kind, const char *name, int id) {
  pk_value *v = value_new(vm, kind);
  if (!v) return NULL;
  v->u.global.name = strdup(name);
  v->u.global.id = id;
  if (!v->u.global.name) {
    oom(vm);
    return NULL;
  }
  return v;
}

static int seq_push(pk_vm *vm, pk_value *seq, pk_value *item) {
  if (grow(vm, (void **)&seq->u.seq.items, &seq->u.seq.cap, seq->u.seq.n + 1, sizeof(item)))
    return -1;
  if (!seq->u.seq.items) return oom(vm);
  seq->u.seq.items[seq->u.seq.n++] = item;
  return 0;
}

pk_value *pk_dict_get(const pk_value *dict, const char *key) {
  if (!dict || dict->kind != PK_DICT) return NULL;
  for (size_t i = dict->u.seq.n; i >= 2; i -= 2) {
    const pk_value *k = dict->u.seq.items[i - 2];
    if (k->kind == PK_STR && strcmp(k->u.str.s, key) == 0) return dict->u.seq.items[i - 1];
  }
  return NULL;
}

/* ---- stack, marks, memo ---- */

static int push(pk_vm *vm, pk_value *v) {
  if (!v) return -1;
  if (grow(vm, (void **)&vm->stack, &vm->stack_cap, vm->sp + 1, sizeof(v))) return -1;
  vm->stack[vm->sp++] = v;
  return 0;
}

/* The stack floor: values below the innermost mark may not be popped singly. */
static size_t floor_of(const pk_vm *vm) {
  return vm->nmarks ? vm->marks[vm->nmarks - 1] : 0;
}

static pk_value *pop(pk_vm *vm) {
  if (vm->sp <= floor_of(vm)) {
    vm_error(vm, "pickle stack underflow");
    return NULL;
  }
  return vm->stack[--vm->sp];
}

static pk_value *top(pk_vm *vm) {
  if (vm->sp <= floor_of(vm)) {
    vm_error(vm, "pickle stack underflow");
    return NULL;
  }
  return vm->stack[vm->sp - 1];
}

/* Pops back to the innermost mark; the popped values are vm->stack[*from, vm->sp). */
static int pop_mark(pk_vm *vm, size_t *from) {
  if (!vm->nmarks) return vm_error(vm, "pickle opcode needs a MARK, and there is none");
  *from = vm->marks[--vm->nmarks];
  return 0;
}

static int memo_put(pk_vm *vm, uint64_t index) {
  pk_value *v = top(vm);
  if (!v) return -1;
  /* A pickler numbers its memo entries from 0, one PUT each, so an index past
   * the pickle's length cannot be genuine. */
  if (index > vm->size) return vm_error(vm, "memo index is out of range");
  if (grow(vm, (void **)&vm->memo, &vm->memo_cap, (size_t)index + 1, sizeof(v))) return -1;
  if (!vm->memo[index]) vm->memo_count++;
  vm->memo[index] = v;
  return 0;
}

static int memo_get(pk_vm *vm, uint64_t index) {
  if (index >= vm->memo_cap || !vm->memo[index])
    return vm_error(vm, "memo entry is read before it is written");
  return push(vm, vm->memo[index]);
}

/* ---- reading the opcode arguments ---- */

static const unsigned char *take(pk_vm *vm, uint64_t n) {
  if (n > vm->size - vm->pos) {
    vm_error(vm, "pickle is truncated");
    return NULL;
  }
  const unsigned char *p = vm->data + vm->pos;
  vm->pos += (size_t)n;
  return p;
}

static int read_uint(pk_vm *vm, int nbytes, uint64_t *out) {
  const unsigned char *p = take(vm, (uint64_t)nbytes);
  if (!p) return -1;
  *out = 0;
  for (int i = nbytes - 1; i >= 0; i--)
    *out = (*out << 8) | p[i];
  return 0;
}

/* A newline-terminated text argument (GLOBAL, INST), NUL-terminated copy in buf. */
static int read_line(pk_vm *vm, char *buf, size_t cap) {
  const unsigned char *start = vm->data + vm->pos;
  const unsigned char *nl = memchr(start, '\n', vm->size - vm->pos);
  if (!nl) return vm_error(vm, "pickle is truncated (unterminated text argument)");
  size_t len = (size_t)(nl - start);
  if (len >= cap || memchr(start, 0, len))
    return vm_error(vm, "text argument is too long or holds a NUL byte");
  memcpy(buf, start, len);
  buf[len] = 0;
  vm->pos += len + 1;
  return 0;
}

/* ---- globals ---- */

static int module_is(const char *module, const char *name) {
  size_t n = strlen(name);
  return strncmp(module, name, n) == 0 && (module[n] == 0 || module[n] == '.');
}

static int is_refused(const char *module, const char *name) {
  if (strcmp(module, "builtins") == 0 || strcmp(module, "__builtin__") == 0) {
    for (size_t i = 0; i < sizeof(plain_builtins) / sizeof(*plain_builtins); i++)
      if (strcmp(name, plain_builtins[i]) == 0) return 0;
    return 1;
  }
  for (size_t i = 0; i < sizeof(refused_modules) / sizeof(*refused_modules); i++)
    if (module_is(module, refused_modules[i])) return 1;
  return 0;
}

static int global_id(const char *module, const char *name, const char *full) {
  for (size_t i = 0; i < sizeof(honoured) / sizeof(*honoured); i++)
    if (strcmp(full, honoured[i].name) == 0) return honoured[i].id;
  if (strcmp(module, "torch") == 0 || strcmp(module, "torch.storage") == 0)
    for (size_t i = 0; i < sizeof(storage_types) / sizeof(*storage_types); i++)
      if (strcmp(name, storage_types[i].name) == 0) return G_STORAGE + (int)storage_types[i].type;
  return G_OPAQUE;
}

static int push_global(pk_vm *vm, const char *module, const char *name) {
  char full[520];
  snprintf(full, sizeof(full), "%s.%s", module, name);
  if (is_refused(module, name))
    return vm_fail(vm,
                   "refusing to load global '%s' (only tensors, containers and numbers are "
                   "allowed)",
                   full, NULL);
  return push(vm, named_new(vm, PK_GLOBAL, full, global_id(module, name, full)));
}

static int op_global(pk_vm *vm) {
  char module[256], name[256];
  if (read_line(vm, module, sizeof(module)) || read_line(vm, name, sizeof(name))) return -1;
  return push_global(vm, module, name);
}

static int op_stack_global(pk_vm *vm) {
  pk_value *name = pop(vm), *module = name ? pop(vm) : NULL;
  if (!module) return -1;
  if (module->kind != PK_STR || name->kind != PK_STR || module->u.str.len > 255 ||
      name->u.str.len > 255 || strlen(module->u.str.s) != module->u.str.len ||
      strlen(name->u.str.s) != name->u.str.len)
    return vm_error(vm, "STACK_GLOBAL needs two short strings");
  return push_global(vm, module->u.str.s, name->u.str.s);
}

/* ---- calling honoured globals ---- */

static int int_arg(const pk_value *v, int64_t *out) {
  if (!v || (v->kind != PK_INT && v->kind != PK_BOOL)) return -1;
  *out = v->u.i;
  return 0;
}

static int dims_arg(pk_vm *vm, const pk_value *v, int64_t *dims, int *ndim, const char *what) {
  if (!v || (v->kind != PK_TUPLE && v->kind != PK_LIST))
    return vm_fail(vm, "_rebuild_tensor_v2: %s must be a tuple of ints, found %s", what,
                   pk_kind_name(v));
  if (v->u.seq.n > CB_MAX_DIMS)
    return vm_fail(vm, "_rebuild_tensor_v2: %s has more dimensions than cbrick supports (8)", what,
                   NULL);
  *ndim = (int)v->u.seq.n;
  for (int d = 0; d < *ndim; d++)
    if (int_arg(v->u.seq.items[d], &dims[d]) || dims[d] < 0)
      return vm_fail(vm, "_rebuild_tensor_v2: %s must hold non-negative ints", what, NULL);
  return 0;
}

static pk_value *rebuild_tensor(pk_vm *vm, const pk_value *args) {
  size_t n = args->u.seq.n;
  pk_value **a = args->u.seq.items;
  int64_t offset, shape[CB_MAX_DIMS], stride[CB_MAX_DIMS];
  int ndim, nstride;
  if (n < 4 || n > 7) {
    vm_error(vm, "_rebuild_tensor_v2 called with a wrong number of arguments");
    return NULL;
  }
  if (a[0]->kind != PK_STORAGE) {
    vm_fail(vm, "_rebuild_tensor_v2: the first argument must be a storage, found %s",
            pk_kind_name(a[0]), NULL);
    return NULL;
  }
  if (int_arg(a[1], &offset) || offset < 0) {
    vm_error(vm, "_rebuild_tensor_v2: storage offset must be a non-negative int");
    return NULL;
  }
  if (dims_arg(vm, a[2], shape, &ndim, "size") || dims_arg(vm, a[3], stride, &nstride, "stride"))
    return NULL;
  if (ndim != nstride) {
    vm_error(vm, "_rebuild_tensor_v2: size and stride have different lengths");
    return NULL;
  }
  pk_value *t = value_new(vm, PK_TENSOR);
  if (!t) return NULL;
  t->u.tensor.shape = malloc(sizeof(int64_t) * (size_t)(2 * ndim + 1));
  if (!t->u.tensor.shape) {
    oom(vm);
    return NULL;
  }
  t->u.tensor.stride = t->u.tensor.shape + ndim;
  memcpy(t->u.tensor.shape, shape, sizeof(int64_t) * (size_t)ndim);
  memcpy(t->u.tensor.stride, stride, sizeof(int64_t) * (size_t)ndim);
  t->u.tensor.ndim = ndim;
  t->u.tensor.offset = offset;
  t->u.tensor.storage = a[0];
  return t;
}

static pk_value *opaque_from(pk_vm *vm, const pk_value *callable) {
  const char *origin = callable->kind == PK_GLOBAL || callable->kind == PK_OPAQUE
                           ? callable->u.global.name
                           : pk_kind_name(callable);
  return named_new(vm, PK_OPAQUE, origin, G_OPAQUE);
}

/* depth bounds _rebuild_from_type_v2 calling itself through its arguments. */
static pk_value *call(pk_vm *vm, pk_value *callable, pk_value *args, int depth) {
  if (callable->kind == PK_OPAQUE) return opaque_from(vm, callable);
  if (callable->kind != PK_GLOBAL) {
    vm_fail(vm, "cannot call a %s", pk_kind_name(callable), NULL);
    return NULL;
  }
  if (args->kind != PK_TUPLE) {
    vm_fail(vm, "arguments of '%s' must be a tuple, found %s", callable->u.global.name,
            pk_kind_name(args));
    return NULL;
  }
  size_t n = args->u.seq.n;
  pk_value **a = args->u.seq.items;
  switch (callable->u.global.id) {
  case G_ORDERED_DICT:
    return value_new(vm, PK_DICT);
  case G_REBUILD_TENSOR_V2:
    return rebuild_tensor(vm, args);
  case G_REBUILD_PARAMETER:
  case G_REBUILD_PARAMETER_STATE:
  case G_PARAMETER:
    if (n >= 1 && a[0]->kind == PK_TENSOR) return a[0];
    vm_fail(vm, "'%s' needs a tensor as its first argument", callable->u.global.name, NULL);
    return NULL;
  case G_SIZE:
    if (n == 1 && a[0]->kind == PK_TUPLE) return a[0];
    vm_error(vm, "torch.Size needs one tuple argument");
    return NULL;
  case G_REBUILD_FROM_TYPE_V2:
    if (depth < 4 && n >= 3 && a[2]->kind == PK_TUPLE) return call(vm, a[0], a[2], depth + 1);
    vm_error(vm, "_rebuild_from_type_v2 needs (func, type, args, state)");
    return NULL;
  default:
    return opaque_from(vm, callable);
  }
}

static int op_reduce(pk_vm *vm) {
  pk_value *args = pop(vm), *callable = args ? pop(vm) : NULL;
  if (!callable) return -1;
  return push(vm, call(vm, callable, args, 0));
}

/* NEWOBJ / OBJ: cls.__new__(cls, *args); only OrderedDict gives a real value. */
static pk_value *instantiate(pk_vm *vm, pk_value *cls) {
  if (cls->kind == PK_GLOBAL && cls->u.global.id == G_ORDERED_DICT) return value_new(vm, PK_DICT);
  if (cls->kind == PK_GLOBAL || cls->kind == PK_OPAQUE) return opaque_from(vm, cls);
  vm_fail(vm, "cannot instantiate a %s", pk_kind_name(cls), NULL);
  return NULL;
}

static int op_newobj(pk_vm *vm, int with_kwargs) {
  if (with_kwargs && !pop(vm)) return -1;
  pk_value *args = pop(vm), *cls = args ? pop(vm) : NULL;
  if (!cls) return -1;
  return push(vm, instantiate(vm, cls));
}

static int op_obj(pk_vm *vm) {
  size_t from = 0;
  if (pop_mark(vm, &from)) return -1;
  if (vm->sp == from) return vm_error(vm, "OBJ needs a class after its MARK");
  pk_value *cls = vm->stack[from];
  vm->sp = from;
  return push(vm, instantiate(vm, cls));
}

static int op_inst(pk_vm *vm) {
  size_t from = 0;
  if (op_global(vm)) return -1;
  pk_value *cls = vm->stack[--vm->sp];
  if (pop_mark(vm, &from)) return -1;
  vm->sp = from;
  return push(vm, instantiate(vm, cls));
}

/* BUILD sets state: a dict's attributes (torch's _metadata), a tensor's
 * hooks or an opaque object's fields. None of it matters for the tensors. */
static int op_build(pk_vm *vm) {
  pk_value *state = pop(vm);
  pk_value *obj = state ? top(vm) : NULL;
  if (!obj) return -1;
  if (obj->kind == PK_GLOBAL)
    return vm_fail(vm, "BUILD on the global '%s' is not allowed", obj->u.global.name, NULL);
  return 0;
}

static int op_persid(pk_vm *vm) {
  pk_value *pid = pop(vm);
  if (!pid) return -1;
  pk_value **a = pid->u.seq.items;
  if (pid->kind != PK_TUPLE || pid->u.seq.n != 5 || a[0]->kind != PK_STR ||
      strcmp(a[0]->u.str.s, "storage") != 0)
    return vm_error(vm, "persistent id must be ('storage', type, key, location, numel)");
  if (a[1]->kind != PK_GLOBAL || a[1]->u.global.id < G_STORAGE)
    return vm_fail(vm, "persistent id names an unknown storage type '%s'",
                   a[1]->kind == PK_GLOBAL ? a[1]->u.global.name : pk_kind_name(a[1]), NULL);
  if (a[2]->kind != PK_STR || strlen(a[2]->u.str.s) != a[2]->u.str.len)
    return vm_error(vm, "storage key must be a string");
  int64_t numel;
  if (int_arg(a[4], &numel) || numel < 0)
    return vm_error(vm, "storage size must be a non-negative int");
  pk_value *s = value_new(vm, PK_STORAGE);
  if (!s) return -1;
  s->u.storage.key = strdup(a[2]->u.str.s);
  if (!s->u.storage.key) return oom(vm);
  s->u.storage.type = (pk_storage_type)(a[1]->u.global.id - G_STORAGE);
  s->u.storage.type_name = strrchr(a[1]->u.global.name, '.') + 1;
  s->u.storage.numel = numel;
  return push(vm, s);
}

/* ---- containers ---- */

static int op_collect(pk_vm *vm, pk_kind kind) {
  size_t from = 0;
  if (pop_mark(vm, &from)) return -1;
  pk_value *v = value_new(vm, kind);
  if (!v) return -1;
  if (kind == PK_DICT && (vm->sp - from) % 2 != 0)
    return vm_error(vm, "DICT needs key/value pairs");
  for (size_t i = from; i < vm->sp; i++)
    if (seq_push(vm, v, vm->stack[i])) return -1;
  vm->sp = from;
  return push(vm, v);
}

static int op_tuple_n(pk_vm *vm, size_t n) {
  if (vm->sp < floor_of(vm) + n) return vm_error(vm, "pickle stack underflow");
  pk_value *v = value_new(vm, PK_TUPLE);
  if (!v) return -1;
  for (size_t i = vm->sp - n; i < vm->sp; i++)
    if (seq_push(vm, v, vm->stack[i])) return -1;
  vm->sp -= n;
  return push(vm, v);
}

/* Adds stack[from, sp) to the container below them (APPEND(S), SETITEM(S), ADDITEMS). */
static int add_items(pk_vm *vm, size_t from, pk_kind want, const char *op) {
  if (from == 0 || from <= floor_of(vm)) return vm_fail(vm, "%s has no container", op, NULL);
  pk_value *target = vm->stack[from - 1];
  if (want == PK_DICT && (vm->sp - from) % 2)
    return vm_fail(vm, "%s needs key/value pairs", op, NULL);
  int ok = target->kind == want || (want == PK_LIST && target->kind == PK_SET);
  if (!ok && target->kind != PK_OPAQUE)
    return vm_fail(vm, "%s applied to a %s", op, pk_kind_name(target));
  for (size_t i = from; ok && i < vm->sp; i++)
    if (seq_push(vm, target, vm->stack[i])) return -1;
  vm->sp = from;
  return 0;
}

static int op_add_marked(pk_vm *vm, pk_kind want, const char *op) {
  size_t from = 0;
  if (pop_mark(vm, &from)) return -1;
  return add_items(vm, from, want, op);
}

static int op_add_n(pk_vm *vm, size_t n, pk_kind want, const char *op) {
  if (vm->sp < floor_of(vm) + n) return vm_error(vm, "pickle stack underflow");
  return add_items(vm, vm->sp - n, want, op);
}

static int op_mark(pk_vm *vm) {
  if (grow(vm, (void **)&vm->marks, &vm->marks_cap, vm->nmarks + 1, sizeof(size_t))) return -1;
  vm->marks[vm->nmarks++] = vm->sp;
  return 0;
}

/* ---- scalars ---- */

static int op_long(pk_vm *vm, int len_bytes) {
  uint64_t n;
  if (read_uint(vm, len_bytes, &n)) return -1;
  const unsigned char *p = take(vm, n);
  if (!p) return -1;
  if (n > 8) return push(vm, named_new(vm, PK_OPAQUE, "int (more than 64 bits)", G_OPAQUE));
  uint64_t u = 0;
  for (size_t i = n; i-- > 0;)
    u = (u << 8) | p[i];
  if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
  return push(vm, int_new(vm, PK_INT, (int64_t)u));
}

static int op_string(pk_vm *vm, int len_bytes, pk_kind kind) {
  uint64_t n;
  if (read_uint(vm, len_bytes, &n)) return -1;
  const unsigned char *p = take(vm, n);
  return p ? push(vm, str_new(vm, kind, p, (size_t)n)) : -1;
}

static int op_binfloat(pk_vm *vm) {
  const unsigned char *p = take(vm, 8);
  if (!p) return -1;
  uint64_t bits = 0;
  for (int i = 0; i < 8; i++)
    bits = (bits << 8) | p[i];
  pk_value *v = value_new(vm, PK_FLOAT);
  if (v) memcpy(&v->u.f, &bits, 8);
  return push(vm, v);
}

static int op_int(pk_vm *vm, int nbytes, int is_signed) {
  uint64_t u;
  if (read_uint(vm, nbytes, &u)) return -1;
  int64_t i = is_signed ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
  return push(vm, int_new(vm, PK_INT, i));
}

static int op_memo(pk_vm *vm, int nbytes, int put) {
  uint64_t index;
  if (read_uint(vm, nbytes, &index)) return -1;
  return put ? memo_put(vm, index) : memo_get(vm, index);
}

static int op_proto(pk_vm *vm) {
  uint64_t v;
  if (read_uint(vm, 1, &v)) return -1;
  if (v > 5) return vm_error(vm, "unsupported pickle protocol");
  return 0;
}

static int op_pop_mark(pk_vm *vm) {
  size_t from = 0;
  if (pop_mark(vm, &from)) return -1;
  vm->sp = from;
  return 0;
}

static int op_dup(pk_vm *vm) {
  pk_value *v = top(vm);
  return v ? push(vm, v) : -1;
}

static int step(pk_vm *vm, unsigned char op) {
  switch (op) {
  case 0x80:
    return op_proto(vm);
  case 0x95:
    return take(vm, 8) ? 0 : -1; /* FRAME */
  case '(':
    return op_mark(vm);
  case '0':
    return pop(vm) ? 0 : -1;
  case '1':
    return op_pop_mark(vm);
  case '2':
    return op_dup(vm);
  case 'N':
    return push(vm, value_new(vm, PK_NONE));
  case 0x88:
    return push(vm, int_new(vm, PK_BOOL, 1));
  case 0x89:
    return push(vm, int_new(vm, PK_BOOL, 0));
  case 'J':
    return op_int(vm, 4, 1);
  case 'K':
    return op_int(vm, 1, 0);
  case 'M':
    return op_int(vm, 2, 0);
  case 0x8a:
    return op_long(vm, 1);
  case 0x8b:
    return op_long(vm, 4);
  case 'G':
    return op_binfloat(vm);
  case 'X':
    return op_string(vm, 4, PK_STR);
  case 0x8c:
    return op_string(vm, 1, PK_STR);
  case 0x8d:
    return op_string(vm, 8, PK_STR);
  case 'T':
    return op_string(vm, 4, PK_STR);
  case 'U':
    return op_string(vm, 1, PK_STR);
  case 'B':
    return op_string(vm, 4, PK_BYTES);
  case 'C':
    return op_string(vm, 1, PK_BYTES);
  case 0x8e:
    return op_string(vm, 8, PK_BYTES);
  case 0x96:
    return op_string(vm, 8, PK_BYTES);
  case ')':
    return push(vm, value_new(vm, PK_TUPLE));
  case 't':
    return op_collect(vm, PK_TUPLE);
  case 0x85:
    return op_tuple_n(vm, 1);
  case 0x86:
    return op_tuple_n(vm, 2);
  case 0x87:
    return op_tuple_n(vm, 3);
  case ']':
    return push(vm, value_new(vm, PK_LIST));
  case 'l':
    return op_collect(vm, PK_LIST);
  case 'a':
    return op_add_n(vm, 1, PK_LIST, "APPEND");
  case 'e':
    return op_add_marked(vm, PK_LIST, "APPENDS");
  case '}':
    return push(vm, value_new(vm, PK_DICT));
  case 'd':
    return op_collect(vm, PK_DICT);
  case 's':
    return op_add_n(vm, 2, PK_DICT, "SETITEM");
  case 'u':
    return op_add_marked(vm, PK_DICT, "SETITEMS");
  case 0x8f:
    return push(vm, value_new(vm, PK_SET));
  case 0x90:
    return op_add_marked(vm, PK_SET, "ADDITEMS");
  case 0x91:
    return op_collect(vm, PK_SET);
  case 'h':
    return op_memo(vm, 1, 0);
  case 'j':
    return op_memo(vm, 4, 0);
  case 'q':
    return op_memo(vm, 1, 1);
  case 'r':
    return op_memo(vm, 4, 1);
  case 0x94:
    return memo_put(vm, vm->memo_count);
  case 'c':
    return op_global(vm);
  case 0x93:
    return op_stack_global(vm);
  case 'R':
    return op_reduce(vm);
  case 0x81:
    return op_newobj(vm, 0);
  case 0x92:
    return op_newobj(vm, 1);
  case 'o':
    return op_obj(vm);
  case 'i':
    return op_inst(vm);
  case 'b':
    return op_build(vm);
  case 'Q':
    return op_persid(vm);
  default: {
    char code[8];
    snprintf(code, sizeof(code), "0x%02x", op);
    return vm_fail(vm, "unknown pickle opcode %s", code, NULL);
  }
  }
}

pk_value *pk_run(pk_vm *vm, const unsigned char *data, size_t size, cb_error *err) {
  vm->data = data;
  vm->size = size;
  vm->pos = 0;
  vm->err = err;
  while (vm->pos < size) {
    vm->op_at = vm->pos;
    unsigned char op = data[vm->pos++];
    if (op == '.') {
      pk_value *result = pop(vm);
      return result;
    }
    if (step(vm, op)) return NULL;
  }
  vm->op_at = size;
  vm_error(vm, "pickle ends without a STOP opcode (truncated?)");
  return NULL;
}
