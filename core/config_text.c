#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_internal.h"

/* Text after substitution, with the spans that replaced {{...}} tokens, so that a
 * JSON error position maps back to the file as written. */
typedef struct text_span {
  size_t out, out_len, in, in_len;
} text_span;

typedef struct subst_text {
  char *data;
  size_t len, cap;
  text_span *spans;
  int n_spans, cap_spans;
} subst_text;

typedef struct file_names {
  char *dirname, *basename, *stem, *ext;
} file_names;

char *config_strdupf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

static char *read_whole_file(const char *path, size_t *len, cb_error *err) {
  struct stat st;
  if (stat(path, &st) != 0) {
    cb_fail(err, "%s: cannot open config: %s", path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    cb_fail(err, "%s: is a directory, expected a JSON config file", path);
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    cb_fail(err, "%s: cannot open config: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *bigger = realloc(buf, cap * 2);
    if (!bigger) free(buf);
    buf = bigger;
    cap *= 2;
  }
  int failed = !buf || ferror(f);
  fclose(f);
  if (failed) {
    free(buf);
    cb_fail(err, "%s: cannot read config%s", path, buf ? "" : ": out of memory");
    return NULL;
  }
  *len = n;
  return buf;
}

/* os.path.abspath: cwd-relative paths made absolute, "." and ".." folded. */
static char *absolute_path(const char *path) {
  char cwd[4096];
  char *joined;
  if (path[0] == '/')
    joined = strdup(path);
  else
    joined = getcwd(cwd, sizeof cwd) ? config_strdupf("%s/%s", cwd, path) : NULL;
  if (!joined) return NULL;
  char *out = malloc(strlen(joined) + 2);
  if (!out) {
    free(joined);
    return NULL;
  }
  size_t n = 0;
  char *save = NULL;
  for (char *part = strtok_r(joined, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
    if (strcmp(part, ".") == 0) continue;
    if (strcmp(part, "..") == 0) {
      while (n > 0 && out[n - 1] != '/')
        n--;
      if (n > 0) n--;
      continue;
    }
    out[n++] = '/';
    size_t len = strlen(part);
    memcpy(out + n, part, len);
    n += len;
  }
  if (n == 0) out[n++] = '/';
  out[n] = '\0';
  free(joined);
  return out;
}

static void file_names_free(file_names *f) {
  free(f->dirname);
  free(f->basename);
  free(f->stem);
  free(f->ext);
}

static int file_names_init(file_names *f, const char *path) {
  memset(f, 0, sizeof *f);
  char *abs = absolute_path(path);
  if (!abs) return -1;
  char *slash = strrchr(abs, '/');
  f->basename = strdup(slash + 1);
  f->dirname = slash == abs ? strdup("/") : strndup(abs, (size_t)(slash - abs));
  free(abs);
  if (!f->basename || !f->dirname) return -1;
  /* os.path.splitext: leading dots of the name never start the extension. */
  const char *name = f->basename;
  while (*name == '.')
    name++;
  const char *dot = strrchr(name, '.');
  size_t stem_len = dot ? (size_t)(dot - f->basename) : strlen(f->basename);
  f->stem = strndup(f->basename, stem_len);
  f->ext = strdup(dot ? dot : "");
  return f->stem && f->ext ? 0 : -1;
}

static int text_append(subst_text *t, const char *s, size_t n) {
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 256;
    while (t->len + n + 1 > cap)
      cap *= 2;
    char *data = realloc(t->data, cap);
    if (!data) return -1;
    t->data = data;
    t->cap = cap;
  }
  memcpy(t->data + t->len, s, n);
  t->len += n;
  t->data[t->len] = '\0';
  return 0;
}

static int text_replace(subst_text *t, size_t in, size_t in_len, const char *value) {
  if (t->n_spans == t->cap_spans) {
    int cap = t->cap_spans ? t->cap_spans * 2 : 8;
    text_span *spans = realloc(t->spans, (size_t)cap * sizeof *spans);
    if (!spans) return -1;
    t->spans = spans;
    t->cap_spans = cap;
  }
  size_t out = t->len, out_len = strlen(value);
  t->spans[t->n_spans++] = (text_span){out, out_len, in, in_len};
  return text_append(t, value, out_len);
}

static int is_word(char c) {
  return isalnum((unsigned char)c) || c == '_';
}
static int is_quote(char c) {
  return c == '\'' || c == '"';
}

static size_t skip_space(const char *s, size_t i, size_t n) {
  while (i < n && isspace((unsigned char)s[i]))
    i++;
  return i;
}

static size_t skip_word(const char *s, size_t i, size_t n) {
  while (i < n && is_word(s[i]))
    i++;
  return i;
}

static int at_close(const char *s, size_t i, size_t n) {
  return i + 1 < n && s[i] == '}' && s[i + 1] == '}';
}

/* {{ fileDirname }} and friends at s[i] ("{{"): the value, or NULL. *end is past "}}". */
static const char *predefined_value(const char *s, size_t i, size_t n, const file_names *f,
                                    size_t *end) {
  size_t a = skip_space(s, i + 2, n);
  size_t b = skip_word(s, a, n);
  size_t c = skip_space(s, b, n);
  if (!at_close(s, c, n)) return NULL;
  static const char *const names[] = {"fileDirname", "fileBasename", "fileBasenameNoExtension",
                                      "fileExtname"};
  const char *values[] = {f->dirname, f->basename, f->stem, f->ext};
  for (int k = 0; k < 4; k++) {
    if (strlen(names[k]) == b - a && memcmp(s + a, names[k], b - a) == 0) {
      *end = c + 2;
      return values[k];
    }
  }
  return NULL;
}

typedef struct env_token {
  char name[256];
  size_t end;
  const char *deflt;
  size_t deflt_len;
} env_token;

/* mmengine's {{['"]?\s*\$(\w+)\s*:\s*(\S*?)\s*['"]?}}, the ":default" part optional. */
static int match_env(const char *s, size_t i, size_t n, env_token *tok) {
  size_t p = i + 2;
  if (p < n && is_quote(s[p])) p++;
  p = skip_space(s, p, n);
  if (p >= n || s[p] != '$') return 0;
  size_t a = p + 1, b = skip_word(s, a, n);
  if (b == a || b - a >= sizeof tok->name) return 0;
  memcpy(tok->name, s + a, b - a);
  tok->name[b - a] = '\0';
  p = skip_space(s, b, n);
  tok->deflt = "";
  tok->deflt_len = 0;
  if (p < n && s[p] == ':') {
    p = skip_space(s, p + 1, n);
    size_t close = p;
    while (close < n && !at_close(s, close, n))
      close++;
    if (close >= n) return 0;
    size_t d_end = close;
    if (d_end > p && is_quote(s[d_end - 1])) d_end--;
    while (d_end > p && isspace((unsigned char)s[d_end - 1]))
      d_end--;
    for (size_t k = p; k < d_end; k++)
      if (isspace((unsigned char)s[k])) return 0;
    tok->deflt = s + p;
    tok->deflt_len = d_end - p;
    tok->end = close + 2;
    return 1;
  }
  if (p < n && is_quote(s[p])) p++;
  if (!at_close(s, p, n)) return 0;
  tok->end = p + 2;
  return 1;
}

/* Replaces the env token at s[i]; 1 when replaced, 0 when not a token, -1 on error. */
static int substitute_env(subst_text *t, const char *s, size_t i, size_t n, size_t *end,
                          const char *path, cb_error *err) {
  env_token tok;
  if (!match_env(s, i, n, &tok)) return 0;
  const char *env = getenv(tok.name);
  char *value = env ? strdup(env) : strndup(tok.deflt, tok.deflt_len);
  if (!value) return cb_fail(err, "%s: out of memory", path);
  if (!env && !value[0]) {
    free(value);
    return cb_fail(err,
                   "%s: environment variable `%s` is not set and has no default; set it or "
                   "write {{$%s:DEFAULT}}",
                   path, tok.name, tok.name);
  }
  int rc = text_replace(t, i, tok.end - i, value);
  free(value);
  if (rc) return cb_fail(err, "%s: out of memory", path);
  *end = tok.end;
  return 1;
}

/* The {{...}} token at s[i]: 1 when replaced, 0 when not a token, -1 on error. */
static int substitute_token(subst_text *t, const char *s, size_t i, size_t n, const file_names *f,
                            size_t *end, const char *path, cb_error *err) {
  const char *value = predefined_value(s, i, n, f, end);
  if (!value) return substitute_env(t, s, i, n, end, path, err);
  if (text_replace(t, i, *end - i, value)) return cb_fail(err, "%s: out of memory", path);
  return 1;
}

static int substitute(subst_text *t, const char *s, size_t n, const char *path, cb_error *err) {
  file_names f;
  if (file_names_init(&f, path)) {
    file_names_free(&f);
    return cb_fail(err, "%s: cannot resolve the config's absolute path", path);
  }
  int rc = text_append(t, "", 0) ? cb_fail(err, "%s: out of memory", path) : 0;
  for (size_t i = 0; i < n && rc == 0;) {
    size_t end = 0;
    int got = 0;
    if (s[i] == '{' && i + 1 < n && s[i + 1] == '{')
      got = substitute_token(t, s, i, n, &f, &end, path, err);
    if (got < 0) {
      rc = -1;
    } else if (got > 0) {
      i = end;
    } else if (text_append(t, s + i, 1)) {
      rc = cb_fail(err, "%s: out of memory", path);
    } else {
      i++;
    }
  }
  file_names_free(&f);
  return rc;
}

/* A byte offset in the substituted text as the offset in the file as written. */
static size_t original_offset(const subst_text *t, size_t pos) {
  const text_span *last = NULL;
  for (int k = 0; k < t->n_spans && t->spans[k].out < pos; k++)
    last = &t->spans[k];
  if (!last) return pos;
  if (pos <= last->out + last->out_len) {
    size_t into = pos - last->out;
    return last->in + (into < last->in_len ? into : last->in_len);
  }
  return pos - (last->out + last->out_len) + last->in + last->in_len;
}

/* Line and column counted the way Jansson does: column in characters, 0 after a newline. */
static void line_column(const char *s, size_t n, size_t pos, int *line, int *col) {
  *line = 1;
  *col = 0;
  for (size_t i = 0; i < pos && i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n') {
      (*line)++;
      *col = 0;
    } else if ((c & 0xC0) != 0x80) {
      (*col)++;
    }
  }
}

static json_t *parse_json(const subst_text *t, const char *orig, size_t orig_len, const char *path,
                          cb_error *err) {
  json_error_t jerr;
  json_t *root = json_loadb(t->data, t->len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    int line, col;
    size_t pos = jerr.position < 0 ? 0 : (size_t)jerr.position;
    line_column(orig, orig_len, original_offset(t, pos), &line, &col);
    cb_fail(err, "%s:%d:%d: %s", path, line, col, jerr.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    cb_fail(err, "%s: expected a JSON object at the top level, found %s", path, cb_json_kind(root));
    json_decref(root);
    return NULL;
  }
  return root;
}

json_t *config_read_file(const char *path, cb_error *err) {
  size_t len = 0;
  char *raw = read_whole_file(path, &len, err);
  if (!raw) return NULL;
  subst_text t = {0};
  json_t *root = NULL;
  if (substitute(&t, raw, len, path, err) == 0) root = parse_json(&t, raw, len, path, err);
  free(t.data);
  free(t.spans);
  free(raw);
  return root;
}
