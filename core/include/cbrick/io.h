#ifndef CBRICK_IO_H
#define CBRICK_IO_H

#include <stdbool.h>
#include <stdio.h>
#include <jansson.h>
#include "module.h"

/* A named set of tensors, as read from a weights file (F16/BF16/F64 become
 * float32; I64 stays int64). Its tensors are read-only: they may point into a
 * read-only file mapping (see cb_safetensors_read), so never write or free what
 * cb_weights_tensor / cb_weights_get return; clone what must outlive the weights. */
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
/* Whether tensor i's data lies in the file mapping of the weights (read without a copy). */
CB_API bool cb_weights_is_mapped(const cb_weights *w, int i);

/* One of mmengine's revise_keys: every match of pattern in a key is replaced. */
typedef struct cb_key_rule {
  const char *pattern;     /* a POSIX extended regular expression, see below */
  const char *replacement; /* \1..\99 and \g<N> insert groups, \\ a backslash */
} cb_key_rule;

/* A copy of w whose keys went through the rules in order, as mmengine's load_checkpoint
 * applies revise_keys: key = re.sub(pattern, replacement, key) for each rule, so every
 * non-overlapping match, left to right (mmengine's default is the one rule ^module\. -> "").
 * Keys that become equal are an error naming both.
 * The dialect is POSIX ERE (regcomp with REG_EXTENDED), not Python's re: matching is
 * leftmost-longest ("a|ab" takes "ab"), and (?...) groups, lookarounds and lazy quantifiers
 * (*?, +?, ??) are refused. Python's \d \D \w \W \s \S are translated (inside [...] too,
 * except the negated ones), so ^layer(\d+)\. works as in Python; \. and other escaped
 * punctuation match the character itself. Errors name revise_keys[i][0] (a pattern) or
 * revise_keys[i][1] (a replacement). */
CB_API cb_weights *cb_weights_revise_keys(const cb_weights *w, const cb_key_rule *rules, int n,
                                          cb_error *err);

/* Maps the file read-only (MAP_PRIVATE) and validates it completely. F32 tensors whose
 * data starts 4-byte aligned in the file are not copied: they point into the mapping,
 * which lives until cb_weights_free (cb_weights_is_mapped says which), and are aligned
 * to 4 bytes only, not 64 like cb_tensor_new's. Other dtypes and misaligned F32 data are
 * converted / copied. The file must not be truncated or rewritten in place while the
 * weights live (cb_safetensors_write replaces a file by renaming, so writing over the
 * file that was read is safe). */
CB_API cb_weights *cb_safetensors_read(const char *path, cb_error *err);
/* metadata: an object of string values, or NULL. Written to a temporary file next to
 * path, then renamed onto it. */
CB_API int cb_safetensors_write(const char *path, const cb_weights *w, json_t *metadata,
                                cb_error *err);

/* .npy, float32 little-endian C order (other dtypes/orders are clear errors). */
CB_API cb_tensor *cb_npy_read(const char *path, cb_error *err);
CB_API int cb_npy_write(const char *path, const cb_tensor *t, cb_error *err);

/* load_state_dict: keys are the module's dotted names after stripping prefix
 * from the file's keys (keys without the prefix are ignored when a prefix is
 * given). Missing keys, unexpected keys and shape mismatches are listed one per
 * line on report (may be NULL) and refused unless !strict (num_batches_tracked
 * is never required). Tensors whose dtype differs from the module's are converted
 * and listed too ("converted bn.num_batches_tracked: float32 -> int64"), without
 * counting as a problem. */
CB_API int cb_module_load_weights(cb_module *m, const cb_weights *w, const char *prefix,
                                  bool strict, FILE *report, cb_error *err);
/* The module's state dict as weights (copies). */
CB_API cb_weights *cb_module_state_dict(cb_module *m, cb_error *err);

#endif
