#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"

double cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double cli_median(double *v, long n) {
  qsort(v, (size_t)n, sizeof *v, compare_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int cli_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cbrick: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return CLI_FAIL;
}

int cli_usage_error(const char *usage, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cbrick: ", stderr);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nusage: %s\n", usage);
  va_end(ap);
  return CLI_USAGE;
}

static int take_options(cli_model_args *a, int argc, char **argv, int *i, const char *usage) {
  int first = *i + 1, n = 0;
  while (first + n < argc && strncmp(argv[first + n], "--", 2) != 0)
    n++;
  if (n == 0) return -cli_usage_error(usage, "--cfg-options needs at least one KEY=VALUE");
  const char **grown = realloc(a->options, (size_t)(a->n_options + n) * sizeof(*grown));
  if (!grown) return -cli_usage_error(usage, "out of memory");
  a->options = grown;
  for (int k = 0; k < n; k++)
    a->options[a->n_options++] = argv[first + k];
  *i += n + 1;
  return 1;
}

static int take_seed(cli_model_args *a, int argc, char **argv, int *i, const char *usage) {
  if (*i + 1 >= argc) return -cli_usage_error(usage, "--seed needs a value");
  const char *text = argv[*i + 1];
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text || *end || text[0] == '-')
    return -cli_usage_error(usage, "--seed: expected a non-negative integer, found '%s'", text);
  a->seed = v;
  *i += 2;
  return 1;
}

int cli_model_arg(cli_model_args *a, int argc, char **argv, int *i, const char *usage) {
  const char *arg = argv[*i];
  if (strcmp(arg, "--cfg-options") == 0) return take_options(a, argc, argv, i, usage);
  if (strcmp(arg, "--seed") == 0) return take_seed(a, argc, argv, i, usage);
  if (arg[0] == '-' && arg[1]) return 0;
  if (a->config) return -cli_usage_error(usage, "unexpected argument '%s'", arg);
  a->config = arg;
  (*i)++;
  return 1;
}

void cli_model_args_free(cli_model_args *a) {
  free(a->options);
  a->options = NULL;
  a->n_options = 0;
}

int cli_load_plugins(const cli_globals *g, cb_error *err) {
  if (cb_plugin_load_default(err)) return -1;
  for (int i = 0; i < g->n_plugins; i++)
    if (cb_plugin_load_file(g->plugins[i], err)) return -1;
  return 0;
}

json_t *cli_load_config(const cli_model_args *a, cb_error *err) {
  json_t *cfg = cb_config_load(a->config, err);
  if (!cfg) return NULL;
  for (int i = 0; i < a->n_options; i++) {
    if (cb_config_apply_option(cfg, a->options[i], err)) {
      json_decref(cfg);
      return NULL;
    }
  }
  return cfg;
}

static int custom_imports(json_t *cfg, const char *path, cb_error *err) {
  char *dir = strdup(path);
  if (!dir) return cb_fail(err, "out of memory");
  char *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
  int rc = cb_plugin_custom_imports(cfg, slash ? dir : ".", err);
  free(dir);
  return rc ? cb_error_prefix(err, "%s: ", path) : 0;
}

cb_module *cli_build_backbone(json_t *cfg, const cli_model_args *a, bool init, cb_error *err) {
  if (custom_imports(cfg, a->config, err)) return NULL;
  json_t *backbone = cb_config_get(cfg, "model.backbone");
  if (!backbone || json_is_null(backbone)) {
    cb_fail(err, "%s: model.backbone: missing", a->config);
    return NULL;
  }
  cb_module *m = cb_build("BACKBONES", backbone, NULL, "model.backbone", err);
  if (!m) {
    cb_error_prefix(err, "%s: ", a->config);
    return NULL;
  }
  if (init) {
    cb_rng rng;
    cb_rng_seed(&rng, a->seed);
    if (cb_module_init_weights(m, &rng, err)) {
      cb_error_prefix(err, "%s: init_weights: ", a->config);
      cb_module_free(m);
      return NULL;
    }
  }
  return m;
}
