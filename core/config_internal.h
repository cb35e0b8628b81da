#ifndef CBRICK_CONFIG_INTERNAL_H
#define CBRICK_CONFIG_INTERNAL_H

#include <jansson.h>
#include "cbrick/args.h"
#include "cbrick/error.h"

/* The file at path, {{...}} substituted, parsed as one JSON object (new reference). */
json_t *config_read_file(const char *path, cb_error *err);

/* mmengine's merge of src into dst (both objects, dst modified in place): dicts merge
 * recursively, everything else replaces; "_delete_": true replaces the base dict.
 * Every "_delete_" key is removed from what lands in dst. file and path name errors. */
int config_merge(json_t *dst, json_t *src, const char *file, const char *path, cb_error *err);

/* A list index written as decimal digits ("0", "12"): 0, else -1. */
int config_index(const char *part, size_t n, size_t *index);

/* malloc'ed copy of printf output, or NULL. */
char *config_strdupf(const char *fmt, ...) CB_PRINTF(1, 2);

#endif
