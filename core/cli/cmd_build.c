#include <stdio.h>
#include <string.h>
#include <cbrick/guard.h>
#include "cli.h"

typedef struct build_args {
  cli_model_args model;
  const char *shape;
  int64_t memory_limit;
} build_args;

static int parse_max_memory(build_args *b, const char *text) {
  cb_error err = {0};
  if (cb_memory_parse_size(text, &b->memory_limit, &err))
    return cli_usage_error(CLI_USAGE_BUILD, "--max-memory: %s", err.msg);
  return CLI_OK;
}

static int parse(build_args *b, int argc, char **argv) {
  b->memory_limit = cb_memory_default_limit();
  for (int i = 0; i < argc;) {
    int used = cli_model_arg(&b->model, argc, argv, &i, CLI_USAGE_BUILD);
    if (used < 0) return CLI_USAGE;
    if (used) continue;
    if (strcmp(argv[i], "--max-memory") == 0) {
      if (i + 1 >= argc) return cli_usage_error(CLI_USAGE_BUILD, "--max-memory needs a value");
      if (parse_max_memory(b, argv[i + 1])) return CLI_USAGE;
      i += 2;
      continue;
    }
    if (strcmp(argv[i], "--shape") != 0)
      return cli_usage_error(CLI_USAGE_BUILD, "build: unknown option '%s'", argv[i]);
    if (i + 1 >= argc) return cli_usage_error(CLI_USAGE_BUILD, "--shape needs a value");
    b->shape = argv[i + 1];
    i += 2;
  }
  if (!b->model.config) return cli_usage_error(CLI_USAGE_BUILD, "build: CONFIG is missing");
  return CLI_OK;
}

static int print_shapes(cb_module *m, const char *shape, int64_t limit, cb_error *err) {
  int ndim;
  int64_t dims[CB_MAX_DIMS];
  if (cb_shape_parse(shape, &ndim, dims, err)) return cb_error_prefix(err, "--shape: ");
  int64_t need;
  if (cb_memory_estimate(m, ndim, dims, &need, err) ||
      cb_memory_check(need, ndim, dims, limit, "--max-memory", err))
    return -1;
  cb_tensor *x = cb_tensor_new(CB_F32, ndim, dims, err);
  if (!x) return -1;
  cb_tensor_list outs = {0};
  cb_module_train(m, false);
  int rc = cb_module_forward_multi(m, x, &outs, err);
  for (int i = 0; rc == 0 && i < outs.n; i++) {
    char text[128];
    cb_shape_format(outs.items[i]->ndim, outs.items[i]->shape, text, sizeof(text));
    printf("feat.%d: %s\n", i, text);
  }
  cb_tensor_list_clear(&outs);
  cb_tensor_free(x);
  return rc;
}

int cmd_build(int argc, char **argv, const cli_globals *g) {
  build_args b = {{0}, NULL, 0};
  cb_error err = {0};
  cb_module *m = NULL;
  json_t *cfg = NULL;
  int rc = parse(&b, argc, argv);
  if (rc == CLI_OK) {
    rc = CLI_FAIL;
    if (cli_load_plugins(g, &err) == 0 && (cfg = cli_load_config(&b.model, &err)) &&
        (m = cli_build_backbone(cfg, &b.model, b.shape != NULL, &err))) {
      cb_module_print(m, stdout);
      printf("parameters: %lld\n", (long long)cb_module_count_params(m));
      rc = b.shape && print_shapes(m, b.shape, b.memory_limit, &err) ? CLI_FAIL : CLI_OK;
    }
    if (rc != CLI_OK) cli_fail("%s", err.msg);
  }
  cb_module_free(m);
  json_decref(cfg);
  cli_model_args_free(&b.model);
  return rc;
}
