#ifndef CBRICK_PICKLE_H
#define CBRICK_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include "cbrick/error.h"
#include "cbrick/tensor.h"

/* A pickle virtual machine that builds values and never executes code.
 *
 * Globals fall in three groups:
 *  - honoured: collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 *    torch._utils._rebuild_parameter(_with_state), torch._tensor._rebuild_from_type_v2,
 *    torch.Size, torch.nn.parameter.Parameter and the torch.*Storage types. Calling them
 *    builds dicts, tuples and tensors;
 *  - refused: anything from a module that can run commands, import code or reach the
 *    interpreter (os, posix, nt, sys, subprocess, builtins/__builtin__ other than plain
 *    data types, importlib, pickle, marshal, ctypes, shutil, socket, operator, ...). The
 *    GLOBAL opcode itself fails, naming the global;
 *  - opaque: everything else (numpy scalars, mmengine's HistoryBuffer, _codecs.encode, ...).
 *    Calling or building one gives another opaque value, so checkpoints whose meta or
 *    optimizer state carry such objects still load. */

typedef enum pk_kind {
  PK_NONE,
  PK_BOOL,
  PK_INT,
  PK_FLOAT,
  PK_STR,
  PK_BYTES,
  PK_TUPLE,
  PK_LIST,
  PK_DICT,
  PK_SET,
  PK_GLOBAL,
  PK_OPAQUE,
  PK_STORAGE,
  PK_TENSOR,
} pk_kind;

typedef enum pk_storage_type {
  PK_ST_F32,
  PK_ST_F64,
  PK_ST_F16,
  PK_ST_BF16,
  PK_ST_I64,
  PK_ST_I32,
  PK_ST_I16,
  PK_ST_I8,
  PK_ST_U8,
  PK_ST_BOOL,
  PK_ST_UNSUPPORTED,
} pk_storage_type;

typedef struct pk_value pk_value;

typedef struct pk_storage {
  pk_storage_type type;
  const char *type_name; /* "FloatStorage" */
  char *key;             /* data/<key> in the archive */
  int64_t numel;
  const unsigned char *bytes; /* filled on first use */
} pk_storage;

typedef struct pk_tensor {
  pk_value *storage;
  int64_t offset;
  int ndim;
  int64_t *shape; /* ndim sizes, then ndim strides */
  int64_t *stride;
} pk_tensor;

struct pk_value {
  pk_kind kind;
  int visited; /* set by a reader walking the values */
  union {
    int64_t i; /* BOOL, INT */
    double f;  /* FLOAT */
    struct {   /* STR, BYTES (NUL-terminated copy) */
      char *s;
      size_t len;
    } str;
    struct { /* TUPLE, LIST, SET, DICT (keys at even, values at odd indices) */
      pk_value **items;
      size_t n, cap;
    } seq;
    struct {      /* GLOBAL, OPAQUE (origin: the global that made it) */
      char *name; /* "module.qualname" */
      int id;
    } global;
    pk_storage storage;
    pk_tensor tensor;
  } u;
};

typedef struct pk_vm pk_vm;

/* Runs the pickle; the result stays valid until pk_vm_free. label names the
 * pickle in messages. */
pk_vm *pk_vm_new(const char *label, cb_error *err);
pk_value *pk_run(pk_vm *vm, const unsigned char *data, size_t size, cb_error *err);
void pk_vm_free(pk_vm *vm);

const char *pk_kind_name(const pk_value *v);
/* A dict's value for a string key (the last one set), or NULL. */
pk_value *pk_dict_get(const pk_value *dict, const char *key);
size_t pk_storage_elem_size(pk_storage_type type);

#endif
