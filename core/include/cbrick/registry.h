#ifndef CBRICK_REGISTRY_H
#define CBRICK_REGISTRY_H

#include <stdbool.h>
#include <jansson.h>
#include "args.h"
#include "module.h"

/* Registries map a type name to a constructor. Names in use: BACKBONES,
 * CONV_LAYERS, NORM_LAYERS, PLUGIN_LAYERS, ACTIVATION_LAYERS, POOLING_LAYERS, RES_BLOCKS;
 * any other name creates a new registry on first registration. */

/* A constructor reads its arguments from args (the merged config object, with
 * "type"), builds the module and returns it; on error returns NULL with *err set.
 * cb_args_finish is called by the registry after it returns, to catch unknown keys. */
typedef cb_module *(*cb_build_fn)(cb_args *args, cb_error *err);

/* provider: the .so path, or any label for code registered by the host.
 * abbr: the child-name stem used by cb_build_norm / cb_build_plugin ("bn",
 * "gn", "context_block"); NULL derives it from the type name (snake_case).
 * A name already registered is an error naming both providers unless force. */
CB_API int cb_registry_add(const char *registry, const char *type, cb_build_fn build,
                           const char *abbr, const char *provider, bool force, cb_error *err);
/* Drops every entry a provider registered (used when unloading a plugin). */
CB_API void cb_registry_remove_provider(const char *provider);
CB_API bool cb_registry_has(const char *registry, const char *type);
/* Provider of an entry, or NULL. */
CB_API const char *cb_registry_provider(const char *registry, const char *type);

typedef int (*cb_registry_fn)(const char *registry, const char *type, const char *provider,
                              void *ud);
/* Every entry of one registry (or of all when registry is NULL), sorted by registry then type.
 * The type and provider strings are valid during the callback only; registry names stay
 * valid until cb_registry_clear. */
CB_API int cb_registry_foreach(const char *registry, cb_registry_fn fn, void *ud);
CB_API void cb_registry_clear(void);

/* build_from_cfg: cfg must be an object with "type" (or default_args gives it);
 * default_args (may be NULL) fill in only the keys cfg lacks. path names cfg in
 * messages ("model.backbone"). An unknown type is an error that names the
 * registry, lists the known names and suggests the closest one. */
CB_API cb_module *cb_build(const char *registry, json_t *cfg, json_t *default_args,
                           const char *path, cb_error *err);

/* mmcv's build_conv_layer: cfg NULL or JSON null means {"type": "Conv2d"}. */
typedef struct cb_conv_spec {
  int in_channels, out_channels;
  int kernel_size, stride, padding, dilation, groups;
  bool bias;
} cb_conv_spec;
CB_API cb_module *cb_build_conv(json_t *cfg, const char *path, const cb_conv_spec *spec,
                                cb_error *err);

/* mmcv's build_norm_layer: writes the child name (abbr + postfix, "bn1") into name. */
CB_API cb_module *cb_build_norm(json_t *cfg, const char *path, int num_features,
                                const char *postfix, char *name, size_t name_cap, cb_error *err);

/* mmcv's build_plugin_layer: extra (may be NULL) is passed as default args
 * (in_channels, ...). Writes abbr + postfix into name. */
CB_API cb_module *cb_build_plugin(json_t *cfg, const char *path, const char *postfix, json_t *extra,
                                  char *name, size_t name_cap, cb_error *err);

#endif
