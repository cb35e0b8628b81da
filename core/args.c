#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbrick/args.h"

#define MAX_READ_KEYS 128

struct cb_args {
  json_t *cfg;
  char *path;
  int n_read;
  const char *read[MAX_READ_KEYS];
};

cb_args *cb_args_new(json_t *cfg, const char *path, cb_error *err) {
  if (!json_is_object(cfg)) {
    cb_fail(err, "%s: expected an object, found %s", path, cb_json_kind(cfg));
    return NULL;
  }
  cb_args *a = calloc(1, sizeof *a);
  char *copy = strdup(path ? path : "");
  if (!a || !copy) {
    free(a);
    free(copy);
    cb_fail(err, "%s: out of memory", path);
    return NULL;
  }
  a->cfg = cfg;
  a->path = copy;
  return a;
}

void cb_args_free(cb_args *a) {
  if (!a) return;
  free(a->path);
  free(a);
}

const char *cb_args_path(const cb_args *a) {
  return a->path;
}
json_t *cb_args_json(const cb_args *a) {
  return a->cfg;
}

bool cb_args_has(const cb_args *a, const char *key) {
  json_t *v = json_object_get(a->cfg, key);
  return v && !json_is_null(v);
}

static void mark_read(cb_args *a, const char *key) {
  for (int i = 0; i < a->n_read; i++)
    if (strcmp(a->read[i], key) == 0) return;
  if (a->n_read < MAX_READ_KEYS) a->read[a->n_read++] = key;
}

json_t *cb_args_value(cb_args *a, const char *key) {
  mark_read(a, key);
  return json_object_get(a->cfg, key);
}

const char *cb_json_kind(const json_t *v) {
  if (!v) return "nothing";
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "a dict";
  case JSON_ARRAY:
    return "a list";
  case JSON_STRING:
    return "a string";
  case JSON_INTEGER:
    return "an integer";
  case JSON_REAL:
    return "a float";
  case JSON_TRUE:
  case JSON_FALSE:
    return "a boolean";
  case JSON_NULL:
    return "null";
  }
  return "an unknown value";
}

int cb_args_fail(const cb_args *a, const char *key, cb_error *err, const char *fmt, ...) {
  char detail[CB_ERROR_MAX / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  if (*a->path) return cb_fail(err, "%s.%s: %s", a->path, key, detail);
  return cb_fail(err, "%s: %s", key, detail);
}

static int type_error(const cb_args *a, const char *key, const char *expected, const json_t *v,
                      cb_error *err) {
  char shown[64] = "";
  if (json_is_string(v))
    snprintf(shown, sizeof shown, " '%.40s'", json_string_value(v));
  else if (json_is_number(v))
    snprintf(shown, sizeof shown, " %g", json_number_value(v));
  return cb_args_fail(a, key, err, "expected %s, found %s%s", expected, cb_json_kind(v), shown);
}

static int integer_value(const cb_args *a, const char *key, const json_t *v, long long *out,
                         cb_error *err) {
  if (json_is_integer(v)) {
    *out = json_integer_value(v);
    return 0;
  }
  double d = json_is_real(v) ? json_real_value(v) : NAN;
  if (json_is_real(v) && d == floor(d) && fabs(d) < 9e15) {
    *out = (long long)d;
    return 0;
  }
  return type_error(a, key, "an integer", v, err);
}

int cb_args_int(cb_args *a, const char *key, long long def, long long *out, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  return integer_value(a, key, v, out, err);
}

int cb_args_int_required(cb_args *a, const char *key, long long *out, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (!v || json_is_null(v)) return cb_args_fail(a, key, err, "required, but missing");
  return integer_value(a, key, v, out, err);
}

int cb_args_double(cb_args *a, const char *key, double def, double *out, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_number(v)) return type_error(a, key, "a number", v, err);
  *out = json_number_value(v);
  return 0;
}

int cb_args_bool(cb_args *a, const char *key, bool def, bool *out, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v)) return type_error(a, key, "true or false", v, err);
  *out = json_is_true(v);
  return 0;
}

int cb_args_string(cb_args *a, const char *key, const char *def, const char **out, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_string(v)) return type_error(a, key, "a string", v, err);
  *out = json_string_value(v);
  return 0;
}

/* v is a list of at most max items, else an error saying what was expected. */
static int check_list(const cb_args *a, const char *key, const json_t *v, const char *expected,
                      int max, cb_error *err) {
  if (!json_is_array(v)) return type_error(a, key, expected, v, err);
  if ((int)json_array_size(v) > max)
    return cb_args_fail(a, key, err, "expected at most %d items, found %zu", max,
                        json_array_size(v));
  return 0;
}

static int item_error(const cb_args *a, const char *key, size_t i, const char *expected,
                      const json_t *item, cb_error *err) {
  return cb_args_fail(a, key, err, "item %zu: expected %s, found %s", i, expected,
                      cb_json_kind(item));
}

int cb_args_int_list(cb_args *a, const char *key, const long long *def, int ndef, long long *out,
                     int max, int *n, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (!v || json_is_null(v)) {
    if (ndef > max) return cb_args_fail(a, key, err, "default list longer than %d", max);
    for (int i = 0; i < ndef; i++)
      out[i] = def[i];
    *n = ndef;
    return 0;
  }
  if (json_is_integer(v)) {
    if (max < 1) return cb_args_fail(a, key, err, "expected an empty list");
    out[0] = json_integer_value(v);
    *n = 1;
    return 0;
  }
  if (check_list(a, key, v, "a list of integers", max, err)) return -1;
  size_t i;
  json_t *item;
  json_array_foreach(v, i, item) {
    if (!json_is_integer(item)) return item_error(a, key, i, "an integer", item, err);
    out[i] = json_integer_value(item);
  }
  *n = (int)json_array_size(v);
  return 0;
}

int cb_args_bool_list(cb_args *a, const char *key, bool *out, int max, int *n, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  *n = 0;
  if (!v || json_is_null(v)) return 0;
  if (check_list(a, key, v, "a list of booleans", max, err)) return -1;
  size_t i;
  json_t *item;
  json_array_foreach(v, i, item) {
    if (!json_is_boolean(item)) return item_error(a, key, i, "true or false", item, err);
    out[i] = json_is_true(item);
  }
  *n = (int)json_array_size(v);
  return 0;
}

static int pair_value(const cb_args *a, const char *key, json_t *v, long long out[2],
                      cb_error *err) {
  if (json_is_integer(v)) {
    out[0] = out[1] = json_integer_value(v);
    return 0;
  }
  if (!json_is_array(v)) return type_error(a, key, "an integer or [h, w]", v, err);
  if (json_array_size(v) != 2)
    return cb_args_fail(a, key, err, "expected an integer or [h, w], found a list of %zu items",
                        json_array_size(v));
  for (size_t i = 0; i < 2; i++) {
    json_t *item = json_array_get(v, i);
    if (!json_is_integer(item)) return item_error(a, key, i, "an integer", item, err);
    out[i] = json_integer_value(item);
  }
  return 0;
}

int cb_args_int_pair(cb_args *a, const char *key, int min, int max, int out[2], bool *scalar,
                     cb_error *err) {
  json_t *v = cb_args_value(a, key);
  if (scalar) *scalar = !v || json_is_null(v) || json_is_integer(v);
  if (!v || json_is_null(v)) return 0;
  long long pair[2] = {0, 0};
  if (pair_value(a, key, v, pair, err)) return -1;
  for (int i = 0; i < 2; i++)
    if (pair[i] < min || pair[i] > max)
      return cb_args_fail(a, key, err, "must be between %d and %d, found %lld", min, max, pair[i]);
  out[0] = (int)pair[0];
  out[1] = (int)pair[1];
  return 0;
}

int cb_args_object(cb_args *a, const char *key, json_t **out, cb_error *err) {
  json_t *v = cb_args_value(a, key);
  *out = NULL;
  if (!v || json_is_null(v)) return 0;
  if (!json_is_object(v)) return type_error(a, key, "an object or null", v, err);
  *out = v;
  return 0;
}

static bool was_read(const cb_args *a, const char *key) {
  if (strcmp(key, "type") == 0) return true;
  for (int i = 0; i < a->n_read; i++)
    if (strcmp(a->read[i], key) == 0) return true;
  return false;
}

int cb_args_finish(const cb_args *a, cb_error *err) {
  const char *key;
  json_t *v;
  json_object_foreach(a->cfg, key, v) {
    if (was_read(a, key)) continue;
    const char *hint = cb_closest_name(key, a->read, a->n_read);
    const char *type = json_string_value(json_object_get(a->cfg, "type"));
    char where[160] = "";
    if (type) snprintf(where, sizeof where, " for type '%s'", type);
    if (hint) return cb_args_fail(a, key, err, "unknown key%s (did you mean '%s'?)", where, hint);
    return cb_args_fail(a, key, err, "unknown key%s", where);
  }
  return 0;
}

static int edit_distance(const char *s, const char *t) {
  size_t n = strlen(s), m = strlen(t);
  if (n > 63 || m > 63) return 99;
  int row[64];
  for (size_t j = 0; j <= m; j++)
    row[j] = (int)j;
  for (size_t i = 1; i <= n; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= m; j++) {
      int up = row[j];
      int cost = (s[i - 1] | 32) == (t[j - 1] | 32) ? 0 : 1;
      int best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[m];
}

const char *cb_closest_name(const char *word, const char *const *candidates, int n) {
  const char *best = NULL;
  int best_d = 99;
  for (int i = 0; i < n; i++) {
    int d = edit_distance(word, candidates[i]);
    if (d < best_d) {
      best_d = d;
      best = candidates[i];
    }
  }
  int limit = (int)strlen(word) / 3 + 1;
  return best && best_d <= limit ? best : NULL;
}
