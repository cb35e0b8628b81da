#ifndef CBRICK_IO_H
#define CBRICK_IO_H

#include <stdbool.h>
#include <stdio.h>
#include <jansson.h>
#include "module.h"

/* A named set of tensors, as read from a weights file (F16/BF16/F64 become
 * float32; I64 stays int64). */
typedef struct cb_weights cb_weights;

CB_API cb_weights *cb_weights_new(cb_error *err);
CB_API void cb_weights_free(cb_weights *w);
CB_API int cb_weights_count(const cb_weights *w);
CB_API const char *cb_weights_name(const cb_weights *w, int i);
CB_API const cb_tensor *cb_weights_tensor(const cb_weights *w, int i);
CB_API const cb_tensor *cb_weights_get(const cb_weights *w, const char *name);
/* Takes ownership of t, also on failure. */
CB_API int cb_weights_add(cb_weights *w, const char *name, cb_tensor *t, cb_error *err);
/* Index of name, or -1. */
CB_API int cb_weights_find(const cb_weights *w, const char *name);
/* A safetensors file's __metadata__ (an object of strings, borrowed), or NULL. */
CB_API json_t *cb_weights_metadata(const cb_weights *w);
/* Keeps a reference to metadata (an object of strings; NULL clears it). */
CB_API int cb_weights_set_metadata(cb_weights *w, json_t *metadata, cb_error *err);

CB_API cb_weights *cb_safetensors_read(const char *path, cb_error *err);
/* metadata: an object of string values, or NULL. */
CB_API int cb_safetensors_write(const char *path, const cb_weights *w, json_t *metadata,
                                cb_error *err);

/* .npy, float32 little-endian C order (other dtypes/orders are clear errors). */
CB_API cb_tensor *cb_npy_read(const char *path, cb_error *err);
CB_API int cb_npy_write(const char *path, const cb_tensor *t, cb_error *err);

/* load_state_dict: keys are the module's dotted names after stripping prefix
 * from the file's keys (keys without the prefix are ignored when a prefix is
 * given). Missing keys, unexpected keys and shape mismatches are listed one per
 * line on report (may be NULL) and refused unless !strict (num_batches_tracked
 * is never required). */
CB_API int cb_module_load_weights(cb_module *m, const cb_weights *w, const char *prefix,
                                  bool strict, FILE *report, cb_error *err);
/* The module's state dict as weights (copies). */
CB_API cb_weights *cb_module_state_dict(cb_module *m, cb_error *err);

#endif
