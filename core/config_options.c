#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cbrick/config.h"
#include "config_internal.h"

/* Values are read as mmengine's DictAction reads them: spaces dropped, quotes stripped
 * from both ends, "[..]"/"(..)"/top-level commas make lists, then int, float, bool,
 * None, else the text itself. */

static int is_quote(char c) {
  return c == '\'' || c == '"';
}
static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* Python's digit runs: digits with single underscores between them. Copies the digits
 * to out (advancing *o) and returns how many there were. */
static size_t digit_run(const char *s, size_t *i, char *out, size_t *o) {
  size_t count = 0;
  while (is_digit(s[*i]) || (s[*i] == '_' && count > 0 && is_digit(s[*i + 1]))) {
    if (s[*i] != '_') {
      out[(*o)++] = s[*i];
      count++;
    }
    (*i)++;
  }
  return count;
}

static void copy_sign(const char *s, size_t *i, char *out, size_t *o) {
  if (s[*i] == '+' || s[*i] == '-') out[(*o)++] = s[(*i)++];
}

/* Python int(text) in base 10, within json_int_t. */
static int parse_int(const char *s, char *buf, json_int_t *out) {
  size_t i = 0, o = 0;
  copy_sign(s, &i, buf, &o);
  if (digit_run(s, &i, buf, &o) == 0 || s[i]) return -1;
  buf[o] = '\0';
  char *end;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (errno || *end) return -1;
  *out = (json_int_t)v;
  return 0;
}

/* Python float(text) for finite decimal numbers (JSON has no inf or nan). */
static int parse_float(const char *s, char *buf, double *out) {
  size_t i = 0, o = 0;
  copy_sign(s, &i, buf, &o);
  size_t digits = digit_run(s, &i, buf, &o);
  if (s[i] == '.') {
    buf[o++] = s[i++];
    digits += digit_run(s, &i, buf, &o);
  }
  if (digits == 0) return -1;
  if (s[i] == 'e' || s[i] == 'E') {
    buf[o++] = s[i++];
    copy_sign(s, &i, buf, &o);
    if (digit_run(s, &i, buf, &o) == 0) return -1;
  }
  if (s[i]) return -1;
  buf[o] = '\0';
  char *end;
  double v = strtod(buf, &end);
  if (*end || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

static json_t *scalar(const char *s, size_t n, cb_error *err) {
  char *text = strndup(s, n), *buf = malloc(n + 2);
  json_int_t i;
  double d;
  json_t *v = NULL;
  if (!text || !buf)
    cb_fail(err, "out of memory");
  else if (parse_int(text, buf, &i) == 0)
    v = json_integer(i);
  else if (parse_float(text, buf, &d) == 0)
    v = json_real(d);
  else if (strcasecmp(text, "true") == 0)
    v = json_true();
  else if (strcasecmp(text, "false") == 0)
    v = json_false();
  else if (strcmp(text, "None") == 0)
    v = json_null();
  else if (!(v = json_stringn(text, n)))
    cb_fail(err, "\"%s\" is not valid UTF-8", text);
  free(text);
  free(buf);
  return v;
}

static int is_open(char c) {
  return c == '[' || c == '(';
}
static int is_close(char c) {
  return c == ']' || c == ')';
}

/* Index of the first comma outside brackets, or n. */
static size_t next_comma(const char *s, size_t n) {
  int depth = 0;
  for (size_t i = 0; i < n; i++) {
    if (is_open(s[i]))
      depth++;
    else if (is_close(s[i]))
      depth--;
    else if (s[i] == ',' && depth == 0)
      return i;
  }
  return n;
}

/* Index of the bracket that closes s[0]. */
static size_t matching_close(const char *s, size_t n) {
  int depth = 0;
  for (size_t i = 0; i < n; i++) {
    if (is_open(s[i]))
      depth++;
    else if (is_close(s[i]) && --depth == 0)
      return i;
  }
  return n;
}

static json_t *parse_span(const char *s, size_t n, cb_error *err);

static json_t *parse_items(const char *s, size_t n, cb_error *err) {
  json_t *list = json_array();
  if (!list) cb_fail(err, "out of memory");
  for (size_t i = 0; list && i < n;) {
    size_t end = i + next_comma(s + i, n - i);
    json_t *item = parse_span(s + i, end - i, err);
    if (!item || json_array_append_new(list, item)) {
      if (item) cb_fail(err, "out of memory");
      json_decref(list);
      return NULL;
    }
    i = end + 1;
  }
  return list;
}

static json_t *parse_span(const char *s, size_t n, cb_error *err) {
  while (n > 0 && is_quote(s[0]))
    s++, n--;
  while (n > 0 && is_quote(s[n - 1]))
    n--;
  if (n >= 2 && is_open(s[0]) && matching_close(s, n) == n - 1)
    return parse_items(s + 1, n - 2, err);
  if (next_comma(s, n) < n) return parse_items(s, n, err);
  return scalar(s, n, err);
}

static int check_brackets(const char *s, cb_error *err) {
  char stack[256];
  int depth = 0;
  for (const char *p = s; *p; p++) {
    if (is_open(*p)) {
      if (depth == (int)sizeof stack) return cb_fail(err, "brackets nested too deeply");
      stack[depth++] = *p;
    } else if (is_close(*p)) {
      char want = depth ? (stack[depth - 1] == '[' ? ']' : ')') : 0;
      if (*p != want)
        return cb_fail(err, "unbalanced brackets in \"%s\": '%c' at position %d %s", s, *p,
                       (int)(p - s) + 1, want ? "closes a different bracket" : "has no opening");
      depth--;
    }
  }
  if (depth)
    return cb_fail(err, "unbalanced brackets in \"%s\": '%c' is never closed", s, stack[depth - 1]);
  return 0;
}

static json_t *parse_value(const char *text, cb_error *err) {
  char *s = malloc(strlen(text) + 1);
  if (!s) {
    cb_fail(err, "out of memory");
    return NULL;
  }
  size_t n = 0;
  for (const char *p = text; *p; p++)
    if (*p != ' ') s[n++] = *p;
  s[n] = '\0';
  json_t *v = check_brackets(s, err) ? NULL : parse_span(s, n, err);
  free(s);
  return v;
}

json_t *cb_config_parse_value(const char *text) {
  cb_error err = {0};
  return text ? parse_value(text, &err) : NULL;
}

/* The list item named by part, checked against the list's length. */
static int list_index(json_t *list, const char *key, const char *part, size_t n, size_t *index,
                      cb_error *err) {
  int parent = (int)(part - key) - 1;
  if (config_index(part, n, index))
    return cb_fail(err, "%.*s is a list; \"%.*s\" is not an index into it", parent, key, (int)n,
                   part);
  if (*index >= json_array_size(list))
    return cb_fail(err, "index %zu is past the end of %.*s, a list of length %zu", *index, parent,
                   key, json_array_size(list));
  return 0;
}

/* The dict or list at part inside cur, created as a dict when missing. */
static json_t *descend(json_t *cur, const char *key, const char *part, size_t n, cb_error *err) {
  json_t *next;
  size_t index;
  if (json_is_object(cur)) {
    next = json_object_getn(cur, part, n);
    if (!next && json_object_setn_new(cur, part, n, next = json_object()) != 0) {
      cb_fail(err, "out of memory");
      return NULL;
    }
  } else if (list_index(cur, key, part, n, &index, err) == 0) {
    next = json_array_get(cur, index);
  } else {
    return NULL;
  }
  if (!json_is_object(next) && !json_is_array(next)) {
    int upto = (int)(part - key) + (int)n;
    cb_fail(err, "%.*s is %s, so nothing can be set inside it", upto, key, cb_json_kind(next));
    return NULL;
  }
  return next;
}

static int set_last(json_t *cur, const char *key, const char *part, size_t n, json_t *value,
                    cb_error *err) {
  size_t index;
  if (json_is_object(cur)) {
    if (json_object_setn_new(cur, part, n, value)) return cb_fail(err, "out of memory");
    return 0;
  }
  if (list_index(cur, key, part, n, &index, err)) {
    json_decref(value);
    return -1;
  }
  if (json_array_set_new(cur, index, value)) return cb_fail(err, "out of memory");
  return 0;
}

static int has_empty_part(const char *key) {
  size_t n = strlen(key);
  return key[0] == '.' || key[n - 1] == '.' || strstr(key, "..");
}

/* Sets cfg's dotted key to value (stolen). */
static int set_dotted(json_t *cfg, const char *key, json_t *value, cb_error *err) {
  if (has_empty_part(key)) {
    json_decref(value);
    return cb_fail(err, "the key has an empty part between dots");
  }
  json_t *cur = cfg;
  for (const char *p = key;;) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (!dot) return set_last(cur, key, p, n, value, err);
    if (!(cur = descend(cur, key, p, n, err))) {
      json_decref(value);
      return -1;
    }
    p = dot + 1;
  }
}

int cb_config_apply_option(json_t *cfg, const char *option, cb_error *err) {
  if (!option) return cb_fail(err, "--cfg-options: no option given");
  const char *eq = strchr(option, '=');
  if (!eq) return cb_fail(err, "--cfg-options \"%s\": expected KEY=VALUE", option);
  int key_len = (int)(eq - option);
  if (key_len == 0)
    return cb_fail(err, "--cfg-options \"%s\": the key before '=' is empty", option);
  if (!json_is_object(cfg))
    return cb_fail(err, "--cfg-options %.*s: the config is %s, not a dict", key_len, option,
                   cb_json_kind(cfg));
  char *key = strndup(option, (size_t)key_len);
  if (!key) return cb_fail(err, "--cfg-options %.*s: out of memory", key_len, option);
  json_t *value = parse_value(eq + 1, err);
  int rc = value ? set_dotted(cfg, key, value, err) : -1;
  free(key);
  if (rc) cb_error_prefix(err, "--cfg-options %.*s: ", key_len, option);
  return rc;
}
