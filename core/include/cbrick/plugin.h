#ifndef CBRICK_PLUGIN_H
#define CBRICK_PLUGIN_H

#include <jansson.h>
#include "registry.h"

/* Bumped whenever a struct or function a plugin uses changes incompatibly. */
#define CB_ABI_VERSION 2

/* One registration, as luaL_Reg: a table of these ends with {NULL}. */
typedef struct cb_plugin_entry {
  const char *registry;
  const char *type;
  cb_build_fn build;
  const char *abbr;
} cb_plugin_entry;

/* What a plugin .so exports under the symbol CB_PLUGIN_SYMBOL. */
typedef struct cb_plugin_info {
  int abi_version;
  const char *name;
  const char *description;
  const cb_plugin_entry *entries;
  /* Optional, run after the entries are registered; non-zero fails the load. */
  int (*init)(cb_error *err);
} cb_plugin_info;

#define CB_PLUGIN_SYMBOL "cbrick_plugin_info"

/* The one line that makes a .so a cbrick plugin:
 *   static const cb_plugin_entry entries[] = {{"CONV_LAYERS", "Conv2d", build_conv2d, NULL},
 * {NULL}}; CB_PLUGIN("conv", "2-D convolution", entries); */
#define CB_PLUGIN(name_, description_, entries_)                                                   \
  CB_API const cb_plugin_info cbrick_plugin_info = {CB_ABI_VERSION, name_, description_, entries_, \
                                                    NULL}
#define CB_PLUGIN_WITH_INIT(name_, description_, entries_, init_)                                  \
  CB_API const cb_plugin_info cbrick_plugin_info = {CB_ABI_VERSION, name_, description_, entries_, \
                                                    init_}

/* Loads one plugin file. Loading the same file twice is a no-op. Errors name the file:
 * dlopen failure, no entry point, ABI mismatch, a duplicate registration. */
CB_API int cb_plugin_load_file(const char *path, cb_error *err);
/* A path (relative ones resolved against base_dir, which may be NULL), or a bare
 * name ("my_layers" or "my_layers.so") looked up on the plugin search path. */
CB_API int cb_plugin_load(const char *name, const char *base_dir, cb_error *err);
/* Loads every .so in the built-in plugin folder (found next to libcbrick.so)
 * and in each folder of CBRICK_PLUGIN_PATH (colon-separated). */
CB_API int cb_plugin_load_default(cb_error *err);
/* mmcv's custom_imports: {"imports": [...] | "...", "allow_failed_imports": bool}
 * taken from the config's top level; absent is fine. config_dir resolves relative paths. */
CB_API int cb_plugin_custom_imports(json_t *config, const char *config_dir, cb_error *err);
/* The folder holding the built-in plugins (lib/cbrick/plugins beside libcbrick.so). */
CB_API const char *cb_plugin_builtin_dir(void);
/* Unloads every plugin and clears the registries. */
CB_API void cb_plugin_unload_all(void);

#endif
