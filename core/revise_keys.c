#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include "weights_internal.h"

/* mmengine's revise_keys: re.sub(pattern, replacement, key) per rule, with Python's
 * patterns translated to POSIX ERE where they differ (see io.h). */

typedef struct text {
  char *s;
  size_t n, cap;
  bool oom;
} text;

static void text_add(text *t, const char *s, size_t n) {
  if (t->oom) return;
  if (t->n + n + 1 > t->cap) {
    size_t cap = (t->n + n + 1) * 2;
    char *p = realloc(t->s, cap);
    if (!p) {
      t->oom = true;
      return;
    }
    t->s = p;
    t->cap = cap;
  }
  memcpy(t->s + t->n, s, n);
  t->n += n;
  t->s[t->n] = '\0';
}

static void text_str(text *t, const char *s) {
  text_add(t, s, strlen(s));
}

/* ---- patterns ---- */

/* Python's class escapes: outside [...], inside [...] (NULL: not expressible there). */
static const struct {
  char c;
  const char *outside, *inside;
} class_escapes[] = {
    {'d', "[0-9]", "0-9"},
    {'D', "[^0-9]", NULL},
    {'w', "[[:alnum:]_]", "[:alnum:]_"},
    {'W', "[^[:alnum:]_]", NULL},
    {'s', "[[:space:]]", "[:space:]"},
    {'S', "[^[:space:]]", NULL},
};

static int class_escape(char c) {
  for (int i = 0; i < (int)(sizeof class_escapes / sizeof *class_escapes); i++)
    if (class_escapes[i].c == c) return i;
  return -1;
}

static bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Copies a bracket expression starting at p (on '['); returns the position after it, or NULL
 * with *why set. An unterminated one is copied as is for regcomp to refuse. */
static const char *translate_bracket(const char *p, text *out, const char **why) {
  text_add(out, p++, 1);
  if (*p == '^') text_add(out, p++, 1);
  if (*p == ']') text_add(out, p++, 1);
  while (*p && *p != ']') {
    if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
      char close[3] = {p[1], ']', '\0'};
      const char *end = strstr(p + 2, close);
      size_t n = end ? (size_t)(end + 2 - p) : strlen(p);
      text_add(out, p, n);
      p += n;
    } else if (*p == '\\') {
      int k = class_escape(p[1]);
      if (k >= 0 && !class_escapes[k].inside) {
        *why = "negated class escapes (\\D, \\W, \\S) are not supported inside [...]";
        return NULL;
      }
      if (p[1] == ']' || p[1] == '-' || p[1] == '^') {
        *why = "escaped ']', '-' or '^' inside [...]: place ']' first, '-' last, '^' not first";
        return NULL;
      }
      if (k < 0 && (is_letter(p[1]) || !p[1])) {
        *why = "only \\d, \\w, \\s and escaped punctuation are supported inside [...]";
        return NULL;
      }
      if (k >= 0)
        text_str(out, class_escapes[k].inside);
      else
        text_add(out, p + 1, 1);
      p += 2;
    } else {
      text_add(out, p++, 1);
    }
  }
  if (*p) text_add(out, p++, 1);
  return p;
}

/* Python regex syntax to POSIX ERE, or NULL with *why. */
static char *translate(const char *pattern, const char **why) {
  text out = {0};
  const char *p = pattern;
  text_add(&out, "", 0);
  while (*p && !out.oom) {
    if (*p == '\\') {
      int k = class_escape(p[1]);
      if (!p[1]) {
        *why = "it ends with a lone backslash";
        break;
      }
      if (k >= 0)
        text_str(&out, class_escapes[k].outside);
      else if (p[1] == 'A' || p[1] == 'Z')
        text_str(&out, p[1] == 'A' ? "^" : "$");
      else
        text_add(&out, p, 2);
      p += 2;
    } else if (*p == '[') {
      const char *next = translate_bracket(p, &out, why);
      if (!next) break;
      p = next;
    } else if (*p == '(' && p[1] == '?') {
      *why = "(?...) groups (non-capturing, named, lookarounds, flags) are not POSIX";
      break;
    } else if (strchr("*+?}", *p) && p[1] == '?') {
      *why = "lazy quantifiers (*?, +?, ??, {m,n}?) are not POSIX (matching is leftmost-longest)";
      break;
    } else {
      text_add(&out, p++, 1);
    }
  }
  if (out.oom) *why = "out of memory";
  if (*p || out.oom) {
    free(out.s);
    return NULL;
  }
  return out.s;
}

/* ---- replacements ---- */

static char control_escape(char c) {
  static const char from[] = "ntrfvab", to[] = "\n\t\r\f\v\a\b";
  const char *at = strchr(from, c);
  return c && at ? to[at - from] : 0;
}

/* Group number at p (after the backslash): \N, \NN or \g<N>; *len gets the length read.
 * -1 when p starts no group reference, -2 for a malformed \g<...>. */
static int group_ref(const char *p, size_t *len) {
  if (*p >= '1' && *p <= '9') {
    bool two = p[1] >= '0' && p[1] <= '9';
    *len = two ? 2 : 1;
    return two ? (p[0] - '0') * 10 + (p[1] - '0') : p[0] - '0';
  }
  if (p[0] != 'g' || p[1] != '<') return -1;
  int n = 0, digits = 0;
  for (p += 2; *p >= '0' && *p <= '9' && digits < 4; p++, digits++)
    n = n * 10 + (*p - '0');
  if (!digits || *p != '>') return -2;
  *len = 3 + (size_t)digits;
  return n;
}

/* Expands repl for a match of subject (groups in m), or with out NULL only checks it. */
static int expand(const char *repl, size_t nsub, const char *subject, const regmatch_t *m,
                  text *out, char *why, size_t cap) {
  for (const char *p = repl; *p;) {
    const char *lit = p;
    while (*p && *p != '\\')
      p++;
    if (out) text_add(out, lit, (size_t)(p - lit));
    if (!*p) break;
    size_t len = 0;
    int g = group_ref(p + 1, &len);
    char ctl = control_escape(p[1]);
    if (g == -2 || (g >= 0 && (size_t)g > nsub)) {
      if (g == -2)
        snprintf(why, cap, "bad group reference at '%.16s' (\\g<N> takes a group number)", p);
      else
        snprintf(why, cap, "invalid group reference %d (the pattern has %zu group%s)", g, nsub,
                 nsub == 1 ? "" : "s");
      return -1;
    }
    if (g >= 0) {
      if (out && m[g].rm_so >= 0)
        text_add(out, subject + m[g].rm_so, (size_t)(m[g].rm_eo - m[g].rm_so));
      p += 1 + len;
    } else if (p[1] == '\\' || ctl) {
      if (out) text_add(out, ctl ? &ctl : p + 1, 1);
      p += 2;
    } else if (!p[1] || is_letter(p[1]) || p[1] == '0') {
      snprintf(why, cap, "bad escape '\\%.1s'%s", p + 1,
               p[1] ? " (groups are \\1..\\99 or \\g<N>)" : " at the end");
      return -1;
    } else {
      if (out) text_add(out, p, 2);
      p += 2;
    }
  }
  return 0;
}

/* ---- rules ---- */

typedef struct rule {
  regex_t re;
  bool compiled;
  const char *replacement;
  regmatch_t *m; /* re_nsub + 1 */
} rule;

static int rule_compile(rule *r, const cb_key_rule *src, int i, cb_error *err) {
  const char *why = NULL;
  char msg[256];
  if (!src->pattern || !src->replacement)
    return cb_fail(err, "revise_keys[%d][%d]: expected a string, found NULL", i,
                   src->pattern ? 1 : 0);
  char *posix = translate(src->pattern, &why);
  if (!posix)
    return cb_fail(err, "revise_keys[%d][0]: invalid regular expression '%s': %s", i, src->pattern,
                   why);
  int rc = regcomp(&r->re, posix, REG_EXTENDED);
  free(posix);
  if (rc != 0) {
    regerror(rc, &r->re, msg, sizeof msg);
    return cb_fail(err, "revise_keys[%d][0]: invalid regular expression '%s': %s", i, src->pattern,
                   msg);
  }
  r->compiled = true;
  r->replacement = src->replacement;
  r->m = calloc(r->re.re_nsub + 1, sizeof *r->m);
  if (!r->m) return cb_fail(err, "revise_keys: out of memory");
  if (expand(src->replacement, r->re.re_nsub, NULL, NULL, NULL, msg, sizeof msg))
    return cb_fail(err, "revise_keys[%d][1]: invalid replacement '%s': %s", i, src->replacement,
                   msg);
  return 0;
}

static void rules_free(rule *rules, int n) {
  for (int i = 0; rules && i < n; i++) {
    if (rules[i].compiled) regfree(&rules[i].re);
    free(rules[i].m);
  }
  free(rules);
}

/* re.sub(r->re, r->replacement, key): every non-overlapping match; an empty match right
 * after another empty match at the same place is skipped, as Python 3.7 does. */
static void substitute(rule *r, const char *key, text *out) {
  size_t pos = 0, len = strlen(key);
  bool after_empty = false;
  while (pos <= len && !out->oom) {
    const char *at = key + pos;
    if (regexec(&r->re, at, r->re.re_nsub + 1, r->m, pos ? REG_NOTBOL : 0) != 0) break;
    size_t b = (size_t)r->m[0].rm_so, e = (size_t)r->m[0].rm_eo;
    if (after_empty && b == 0 && e == 0) {
      if (pos == len) break;
      text_add(out, at, 1);
      pos++;
      after_empty = false;
      continue;
    }
    text_add(out, at, b);
    expand(r->replacement, r->re.re_nsub, at, r->m, out, NULL, 0);
    after_empty = b == e;
    pos += e;
  }
  text_add(out, key + pos, len - pos);
}

/* key after every rule, or NULL when out of memory. */
static char *revise_one(rule *rules, int n, const char *key) {
  char *cur = strdup(key);
  for (int i = 0; cur && i < n; i++) {
    text out = {0};
    substitute(&rules[i], cur, &out);
    free(cur);
    cur = out.oom ? NULL : out.s;
    if (out.oom) free(out.s);
  }
  return cur;
}

static int add_revised(cb_weights *out, const cb_weights *w, int i, const char *name, bool borrow,
                       cb_error *err) {
  int other = cb_weights_find(out, name);
  if (other >= 0)
    return cb_fail(err, "revise_keys: keys '%s' and '%s' both become '%s'",
                   cb_weights_name(w, other), cb_weights_name(w, i), name);
  const cb_tensor *t = cb_weights_tensor(w, i);
  int rc = borrow ? cb_weights_add_borrowed(out, name, t, err)
                  : cb_weights_add(out, name, cb_tensor_clone(t, err), err);
  return rc ? cb_error_prefix(err, "revise_keys: ") : 0;
}

cb_weights *cb_weights_revise(const cb_weights *w, const cb_key_rule *rules, int n, bool borrow,
                              cb_error *err) {
  if (n < 0 || (n > 0 && !rules)) {
    cb_fail(err, "revise_keys: expected a list of %d rules, found none", n);
    return NULL;
  }
  rule *compiled = calloc((size_t)n + 1, sizeof *compiled);
  cb_weights *out = compiled ? cb_weights_new(err) : NULL;
  int rc = compiled ? 0 : cb_fail(err, "revise_keys: out of memory");
  for (int i = 0; out && rc == 0 && i < n; i++)
    rc = rule_compile(&compiled[i], &rules[i], i, err);
  if (out && rc == 0 && cb_weights_metadata(w))
    rc = cb_weights_set_metadata(out, cb_weights_metadata(w), err);
  for (int i = 0; out && rc == 0 && i < cb_weights_count(w); i++) {
    char *name = revise_one(compiled, n, cb_weights_name(w, i));
    rc = name ? add_revised(out, w, i, name, borrow, err)
              : cb_fail(err, "revise_keys: out of memory");
    free(name);
  }
  rules_free(compiled, n);
  if (out && rc == 0) return out;
  cb_weights_free(out);
  return NULL;
}

CB_API cb_weights *cb_weights_revise_keys(const cb_weights *w, const cb_key_rule *rules, int n,
                                          cb_error *err) {
  return cb_weights_revise(w, rules, n, false, err);
}
