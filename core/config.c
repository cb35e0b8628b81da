#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbrick/config.h"
#include "config_internal.h"

#define BASE_KEY "_base_"
#define MAX_INCLUDE_DEPTH 64

/* The files being loaded, outermost first, to refuse inclusion cycles. */
typedef struct include_chain {
  const char *shown[MAX_INCLUDE_DEPTH];
  char *real[MAX_INCLUDE_DEPTH];
  int depth;
} include_chain;

static json_t *load_file(include_chain *chain, const char *path, cb_error *err);

static int cycle_error(const include_chain *chain, const char *path, cb_error *err) {
  char text[CB_ERROR_MAX] = "";
  size_t n = 0;
  for (int k = 0; k < chain->depth && n < sizeof text; k++)
    n += (size_t)snprintf(text + n, sizeof text - n, "%s -> ", chain->shown[k]);
  if (n < sizeof text) snprintf(text + n, sizeof text - n, "%s", path);
  return cb_fail(err, "%s: " BASE_KEY " inclusion cycle: %s", chain->shown[chain->depth - 1], text);
}

static int chain_push(include_chain *chain, const char *path, cb_error *err) {
  char *real = realpath(path, NULL);
  if (!real) real = strdup(path);
  if (!real) return cb_fail(err, "%s: out of memory", path);
  for (int k = 0; k < chain->depth; k++) {
    if (strcmp(chain->real[k], real) == 0) {
      free(real);
      return cycle_error(chain, path, err);
    }
  }
  if (chain->depth == MAX_INCLUDE_DEPTH) {
    free(real);
    return cb_fail(err, "%s: " BASE_KEY " nested deeper than %d files", path, MAX_INCLUDE_DEPTH);
  }
  chain->shown[chain->depth] = path;
  chain->real[chain->depth++] = real;
  return 0;
}

static void chain_pop(include_chain *chain) {
  free(chain->real[--chain->depth]);
}

/* os.path.join(os.path.dirname(file), base). */
static char *base_path(const char *file, const char *base) {
  const char *slash = strrchr(file, '/');
  if (base[0] == '/' || !slash) return strdup(base);
  int dir_len = slash == file ? 0 : (int)(slash - file);
  return config_strdupf("%.*s/%s", dir_len, file, base);
}

static int add_base(json_t *merged, json_t *owners, json_t *base, const char *file,
                    const char *bpath, cb_error *err) {
  const char *key;
  json_t *value;
  json_object_foreach(base, key, value) {
    json_t *owner = json_object_get(owners, key);
    if (owner)
      return cb_fail(err,
                     "%s: Duplicate key is not allowed among bases: \"%s\" is defined in both %s "
                     "and %s",
                     file, key, json_string_value(owner), bpath);
    if (json_object_set(merged, key, value) ||
        json_object_set_new(owners, key, json_stringn_nocheck(bpath, strlen(bpath))))
      return cb_fail(err, "%s: out of memory", file);
  }
  return 0;
}

static int check_bases(json_t *bases, const char *file, cb_error *err) {
  if (json_is_string(bases)) return 0;
  if (json_is_array(bases)) {
    size_t i;
    json_t *item;
    json_array_foreach(bases, i, item) {
      if (!json_is_string(item))
        return cb_fail(err, "%s: " BASE_KEY "[%zu]: expected a path string, found %s", file, i,
                       cb_json_kind(item));
    }
    return 0;
  }
  return cb_fail(err, "%s: " BASE_KEY ": expected a path string or a list of them, found %s", file,
                 cb_json_kind(bases));
}

static int load_one_base(include_chain *chain, json_t *merged, json_t *owners, const char *file,
                         const char *rel, cb_error *err) {
  char *bpath = base_path(file, rel);
  if (!bpath) return cb_fail(err, "%s: out of memory", file);
  json_t *base = NULL;
  if (access(bpath, F_OK) != 0)
    cb_fail(err, "%s: " BASE_KEY " \"%s\": cannot find %s: %s", file, rel, bpath, strerror(errno));
  else
    base = load_file(chain, bpath, err);
  int rc = base ? add_base(merged, owners, base, file, bpath, err) : -1;
  json_decref(base);
  free(bpath);
  return rc;
}

/* The bases, loaded in list order and merged side by side; a key in two of them is an error. */
static json_t *load_bases(include_chain *chain, const char *file, json_t *bases, cb_error *err) {
  if (check_bases(bases, file, err)) return NULL;
  json_t *merged = json_object(), *owners = json_object();
  int rc = merged && owners ? 0 : cb_fail(err, "%s: out of memory", file);
  size_t n = json_is_string(bases) ? 1 : json_array_size(bases);
  for (size_t i = 0; i < n && rc == 0; i++) {
    json_t *item = json_is_string(bases) ? bases : json_array_get(bases, i);
    rc = load_one_base(chain, merged, owners, file, json_string_value(item), err);
  }
  json_decref(owners);
  if (rc) {
    json_decref(merged);
    return NULL;
  }
  return merged;
}

/* cfg merged over its bases, without "_base_" and "_delete_" keys. */
static json_t *resolve_bases(include_chain *chain, const char *path, json_t *cfg, cb_error *err) {
  json_t *bases = json_incref(json_object_get(cfg, BASE_KEY));
  json_object_del(cfg, BASE_KEY);
  json_t *merged = bases ? load_bases(chain, path, bases, err) : json_object();
  json_decref(bases);
  if (!merged) {
    if (!bases) cb_fail(err, "%s: out of memory", path);
    return NULL;
  }
  if (config_merge(merged, cfg, path, "", err)) {
    json_decref(merged);
    return NULL;
  }
  return merged;
}

static json_t *load_file(include_chain *chain, const char *path, cb_error *err) {
  if (chain_push(chain, path, err)) return NULL;
  json_t *cfg = config_read_file(path, err);
  json_t *result = cfg ? resolve_bases(chain, path, cfg, err) : NULL;
  json_decref(cfg);
  chain_pop(chain);
  return result;
}

json_t *cb_config_load(const char *path, cb_error *err) {
  if (!path || !path[0]) {
    cb_fail(err, "config: no file name given");
    return NULL;
  }
  include_chain chain = {.depth = 0};
  return load_file(&chain, path, err);
}

int config_index(const char *part, size_t n, size_t *index) {
  if (n == 0 || n > 18) return -1;
  size_t value = 0;
  for (size_t i = 0; i < n; i++) {
    if (part[i] < '0' || part[i] > '9') return -1;
    value = value * 10 + (size_t)(part[i] - '0');
  }
  *index = value;
  return 0;
}

static json_t *child(json_t *v, const char *part, size_t n) {
  size_t index;
  if (json_is_object(v)) return json_object_getn(v, part, n);
  if (json_is_array(v) && config_index(part, n, &index) == 0) return json_array_get(v, index);
  return NULL;
}

json_t *cb_config_get(json_t *cfg, const char *dotted) {
  if (!cfg || !dotted) return NULL;
  if (!dotted[0]) return cfg;
  json_t *cur = cfg;
  for (const char *p = dotted; cur;) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    cur = child(cur, p, n);
    if (!dot) break;
    p = dot + 1;
  }
  return cur;
}
