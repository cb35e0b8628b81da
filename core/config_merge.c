#include <stdio.h>
#include <string.h>

#include "config_internal.h"

#define DELETE_KEY "_delete_"
#define KEY_PATH_MAX 1024

static void key_path(char *out, const char *path, const char *key) {
  if (path[0])
    snprintf(out, KEY_PATH_MAX, "%s.%s", path, key);
  else
    snprintf(out, KEY_PATH_MAX, "%s", key);
}

static const char *shown(const char *path) {
  return path[0] ? path : "(top level)";
}

/* Removes obj's "_delete_" and tells whether it was true. */
static int take_delete(json_t *obj, const char *file, const char *path, int *del, cb_error *err) {
  json_t *flag = json_object_get(obj, DELETE_KEY);
  *del = 0;
  if (!flag) return 0;
  if (!json_is_boolean(flag))
    return cb_fail(err, "%s: %s." DELETE_KEY ": expected true or false, found %s", file,
                   shown(path), cb_json_kind(flag));
  *del = json_is_true(flag);
  json_object_del(obj, DELETE_KEY);
  return 0;
}

/* Removes "_delete_" from every dict inside v, lists included. */
static int strip_delete(json_t *v, const char *file, const char *path, cb_error *err) {
  char sub[KEY_PATH_MAX];
  if (json_is_object(v)) {
    int del;
    if (take_delete(v, file, path, &del, err)) return -1;
    const char *key;
    json_t *value;
    json_object_foreach(v, key, value) {
      key_path(sub, path, key);
      if (strip_delete(value, file, sub, err)) return -1;
    }
  } else if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) {
      char index[32];
      snprintf(index, sizeof index, "%zu", i);
      key_path(sub, path, index);
      if (strip_delete(json_array_get(v, i), file, sub, err)) return -1;
    }
  }
  return 0;
}

static int merge_key(json_t *dst, const char *key, json_t *value, const char *file,
                     const char *path, cb_error *err) {
  json_t *base = json_object_get(dst, key);
  if (json_is_object(value) && json_is_object(base))
    return config_merge(base, value, file, path, err);
  if (json_is_object(value) && base && !json_is_true(json_object_get(value, DELETE_KEY)))
    return cb_fail(err,
                   "%s: %s is a dict in this config but %s in its base config, so it cannot "
                   "inherit from it; set \"" DELETE_KEY "\": true in it to replace the base value",
                   file, path, cb_json_kind(base));
  if (strip_delete(value, file, path, err)) return -1;
  if (json_object_set(dst, key, value)) return cb_fail(err, "%s: %s: out of memory", file, path);
  return 0;
}

int config_merge(json_t *dst, json_t *src, const char *file, const char *path, cb_error *err) {
  int del;
  if (take_delete(src, file, path, &del, err)) return -1;
  if (del) json_object_clear(dst);
  const char *key;
  json_t *value;
  json_object_foreach(src, key, value) {
    char sub[KEY_PATH_MAX];
    key_path(sub, path, key);
    if (merge_key(dst, key, value, file, sub, err)) return -1;
  }
  return 0;
}
