#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

/* The fewest significant digits that print every real of v exactly, so 0.1
 * prints as 0.1 rather than 0.10000000000000001. */
static int real_precision(json_t *v) {
  int p = 1;
  if (json_is_real(v)) {
    char buf[64];
    double d = json_real_value(v);
    for (; p < 17; p++) {
      snprintf(buf, sizeof(buf), "%.*g", p, d);
      if (strtod(buf, NULL) == d) break;
    }
  } else if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) {
      int q = real_precision(json_array_get(v, i));
      if (q > p) p = q;
    }
  } else if (json_is_object(v)) {
    const char *key;
    json_t *item;
    json_object_foreach(v, key, item) {
      int q = real_precision(item);
      if (q > p) p = q;
    }
  }
  return p;
}

int cmd_config(int argc, char **argv, const cli_globals *g) {
  cli_model_args a = {0};
  (void)g;
  for (int i = 0; i < argc;) {
    int used = strcmp(argv[i], "--seed") ? cli_model_arg(&a, argc, argv, &i, CLI_USAGE_CONFIG) : 0;
    if (used == 0) {
      cli_model_args_free(&a);
      return cli_usage_error(CLI_USAGE_CONFIG, "config: unknown option '%s'", argv[i]);
    }
    if (used < 0) {
      cli_model_args_free(&a);
      return CLI_USAGE;
    }
  }
  if (!a.config) return cli_usage_error(CLI_USAGE_CONFIG, "config: CONFIG is missing");
  cb_error err = {0};
  json_t *cfg = cli_load_config(&a, &err);
  cli_model_args_free(&a);
  if (!cfg) return cli_fail("%s", err.msg);
  char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_REAL_PRECISION(real_precision(cfg)));
  json_decref(cfg);
  if (!text) return cli_fail("cannot encode the config as JSON");
  puts(text);
  free(text);
  return CLI_OK;
}
