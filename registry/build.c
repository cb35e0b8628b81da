#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "registry_internal.h"

static int unknown_type(const char *registry, const char *type, const char *path, cb_error *err) {
  char names[1024], closest[128];
  cb_registry_describe(registry, type, names, sizeof names, closest, sizeof closest);
  if (!*names)
    return cb_fail(err,
                   "%s.type: '%s' is not in the %s registry, which is empty (no loaded plugin "
                   "registers into it; load one with --plugin or custom_imports)",
                   path, type, registry);
  if (*closest)
    return cb_fail(err, "%s.type: '%s' is not in the %s registry (did you mean '%s'? known: %s)",
                   path, type, registry, closest, names);
  return cb_fail(err, "%s.type: '%s' is not in the %s registry (known: %s)", path, type, registry,
                 names);
}

/* cfg with default_args filled in where cfg lacks them (a new reference). */
static json_t *merge_defaults(json_t *cfg, json_t *default_args) {
  json_t *merged = cfg ? json_deep_copy(cfg) : json_object();
  const char *key;
  json_t *value;
  if (merged && default_args) json_object_foreach(default_args, key, value) {
      if (!json_object_get(merged, key)) json_object_set(merged, key, value);
    }
  return merged;
}

static cb_module *run_builder(cb_build_fn build, json_t *merged, const char *path, cb_error *err) {
  cb_args *args = cb_args_new(merged, path, err);
  if (!args) return NULL;
  cb_module *m = build(args, err);
  if (m && cb_args_finish(args, err)) {
    cb_module_free(m);
    m = NULL;
  }
  cb_args_free(args);
  return m;
}

cb_module *cb_build(const char *registry, json_t *cfg, json_t *default_args, const char *path,
                    cb_error *err) {
  if (!path) path = registry;
  if (cfg && !json_is_object(cfg)) {
    cb_fail(err, "%s: expected an object with a \"type\" key, found %s", path, cb_json_kind(cfg));
    return NULL;
  }
  json_t *merged = merge_defaults(cfg, default_args);
  if (!merged) {
    cb_fail(err, "%s: out of memory", path);
    return NULL;
  }
  json_t *type = json_object_get(merged, "type");
  cb_module *m = NULL;
  cb_registry_entry entry;
  if (!type)
    cb_fail(err, "%s: missing \"type\" (a name in the %s registry)", path, registry);
  else if (!json_is_string(type))
    cb_fail(err, "%s.type: expected a string naming a %s entry", path, registry);
  else if (cb_registry_lookup(registry, json_string_value(type), &entry))
    unknown_type(registry, json_string_value(type), path, err);
  else
    m = run_builder(entry.build, merged, path, err);
  json_decref(merged);
  return m;
}

cb_module *cb_build_conv(json_t *cfg, const char *path, const cb_conv_spec *spec, cb_error *err) {
  json_t *defaults =
      json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "type", "Conv2d", "in_channels",
                spec->in_channels, "out_channels", spec->out_channels, "kernel_size",
                spec->kernel_size, "stride", spec->stride, "padding", spec->padding, "dilation",
                spec->dilation, "groups", spec->groups, "bias", spec->bias);
  if (!defaults) {
    cb_fail(err, "%s: out of memory", path);
    return NULL;
  }
  cb_module *m = cb_build("CONV_LAYERS", json_is_null(cfg) ? NULL : cfg, defaults, path, err);
  json_decref(defaults);
  return m;
}

static bool is_upper(char c) {
  return c >= 'A' && c <= 'Z';
}
static bool is_lower_or_digit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* mmcv's camel2snack: "NonLocal2d" -> "non_local2d", "SEBlock" -> "se_block". */
static void snake_case(const char *word, char *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; word[i] && n + 2 < cap; i++) {
    char c = word[i];
    bool boundary = i > 0 && is_upper(c) &&
                    (is_lower_or_digit(word[i - 1]) ||
                     (is_upper(word[i - 1]) && word[i + 1] >= 'a' && word[i + 1] <= 'z'));
    if (boundary) out[n++] = '_';
    out[n++] = c == '-' ? '_' : (is_upper(c) ? (char)(c - 'A' + 'a') : c);
  }
  out[n] = '\0';
}

/* mmcv's name rule: the entry's abbr, else the type name in snake_case. */
static void layer_name(const char *registry, json_t *cfg, const char *postfix, char *name,
                       size_t cap) {
  const char *type = json_string_value(json_object_get(cfg, "type"));
  cb_registry_entry entry;
  char stem[128] = "";
  if (type && cb_registry_lookup(registry, type, &entry) == 0 && entry.abbr) {
    snprintf(stem, sizeof stem, "%s", entry.abbr);
  } else if (type) {
    snake_case(type, stem, sizeof stem);
  }
  snprintf(name, cap, "%s%s", stem, postfix ? postfix : "");
}

static int require_object(json_t *cfg, const char *path, cb_error *err) {
  if (json_is_object(cfg)) return 0;
  return cb_fail(err, "%s: expected an object with a \"type\" key, found %s", path,
                 cfg == NULL || json_is_null(cfg) ? "null" : "another value");
}

cb_module *cb_build_norm(json_t *cfg, const char *path, int num_features, const char *postfix,
                         char *name, size_t name_cap, cb_error *err) {
  if (require_object(cfg, path, err)) return NULL;
  json_t *defaults = json_pack("{s:i}", "num_features", num_features);
  cb_module *m = defaults ? cb_build("NORM_LAYERS", cfg, defaults, path, err) : NULL;
  json_decref(defaults);
  if (m) layer_name("NORM_LAYERS", cfg, postfix, name, name_cap);
  return m;
}

cb_module *cb_build_plugin(json_t *cfg, const char *path, const char *postfix, json_t *extra,
                           char *name, size_t name_cap, cb_error *err) {
  if (require_object(cfg, path, err)) return NULL;
  cb_module *m = cb_build("PLUGIN_LAYERS", cfg, extra, path, err);
  if (m) layer_name("PLUGIN_LAYERS", cfg, postfix, name, name_cap);
  return m;
}
