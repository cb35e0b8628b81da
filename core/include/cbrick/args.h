#ifndef CBRICK_ARGS_H
#define CBRICK_ARGS_H

#include <stdbool.h>
#include <jansson.h>
#include "error.h"

/* Typed reading of one config object, as a layer's constructor sees it.
 * Every error names the key path ("model.backbone.depth"), what was expected
 * and what was found. Keys never read are reported by cb_args_finish with the
 * closest known key as a suggestion, so typos never pass silently. */
typedef struct cb_args cb_args;

/* cfg is borrowed (kept alive by the caller); path is copied. */
CB_API cb_args *cb_args_new(json_t *cfg, const char *path, cb_error *err);
CB_API void cb_args_free(cb_args *a);
CB_API const char *cb_args_path(const cb_args *a);
CB_API json_t *cb_args_json(const cb_args *a);
/* Whether key is present and not null (does not mark it read). */
CB_API bool cb_args_has(const cb_args *a, const char *key);

/* Absent or null gives the default. Wrong JSON types are errors. */
CB_API int cb_args_int(cb_args *a, const char *key, long long def, long long *out, cb_error *err);
CB_API int cb_args_int_required(cb_args *a, const char *key, long long *out, cb_error *err);
CB_API int cb_args_double(cb_args *a, const char *key, double def, double *out, cb_error *err);
CB_API int cb_args_bool(cb_args *a, const char *key, bool def, bool *out, cb_error *err);
/* *out points into the JSON (borrowed) or is def; def may be NULL. */
CB_API int cb_args_string(cb_args *a, const char *key, const char *def, const char **out,
                          cb_error *err);
/* A list of integers (a bare integer counts as a one-element list when
 * allow_scalar). Absent gives the default list. More than max items is an error. */
CB_API int cb_args_int_list(cb_args *a, const char *key, const long long *def, int ndef,
                            long long *out, int max, int *n, cb_error *err);
CB_API int cb_args_bool_list(cb_args *a, const char *key, bool *out, int max, int *n,
                             cb_error *err);
/* PyTorch's _pair: an integer (used for both) or [h, w]. Absent or null leaves out[] as it
 * is (the default). *scalar (may be NULL) tells whether a single integer was given. Values
 * outside [min, max] are errors naming the key. */
CB_API int cb_args_int_pair(cb_args *a, const char *key, int min, int max, int out[2], bool *scalar,
                            cb_error *err);
/* Object or null/absent (*out = NULL). Borrowed. */
CB_API int cb_args_object(cb_args *a, const char *key, json_t **out, cb_error *err);
/* Any JSON value (NULL when absent), marked read. Borrowed. */
CB_API json_t *cb_args_value(cb_args *a, const char *key);

/* Error about one key: "<path>.<key>: <message>". Returns -1. */
CB_API int cb_args_fail(const cb_args *a, const char *key, cb_error *err, const char *fmt, ...)
    CB_PRINTF(4, 5);
/* Reports the first key never read ("type" is always allowed). */
CB_API int cb_args_finish(const cb_args *a, cb_error *err);

/* What a JSON value is, in the words of a Python config: "a dict", "a list", "a string", "an
 * integer", "a float", "a boolean", "null", or "nothing" for NULL. */
CB_API const char *cb_json_kind(const json_t *v);

/* The closest of candidates to word by edit distance, or NULL if none is close. */
CB_API const char *cb_closest_name(const char *word, const char *const *candidates, int n);

#endif
