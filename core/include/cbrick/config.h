#ifndef CBRICK_CONFIG_H
#define CBRICK_CONFIG_H

#include <jansson.h>
#include "error.h"

/* mmengine-style JSON configs: `_base_` inheritance (string or list, relative
 * to the including file), `_delete_`, {{fileDirname}}-style and {{$ENV:default}}
 * substitutions. Errors name the file and, for bad JSON, line and column. */
CB_API json_t *cb_config_load(const char *path, cb_error *err);

/* One --cfg-options item "a.b.0.c=VALUE" applied to cfg, values parsed as
 * mmengine's DictAction does. */
CB_API int cb_config_apply_option(json_t *cfg, const char *option, cb_error *err);
CB_API json_t *cb_config_parse_value(const char *text);

/* The value at a dotted path ("model.backbone"), borrowed, or NULL. */
CB_API json_t *cb_config_get(json_t *cfg, const char *dotted);

#endif
