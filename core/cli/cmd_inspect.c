#include <stdio.h>
#include <string.h>
#include "cli.h"

static void print_metadata(json_t *meta) {
  const char *key;
  json_t *value;
  if (!json_is_object(meta) || json_object_size(meta) == 0) return;
  printf("metadata:\n");
  json_object_foreach(meta, key, value) {
    printf("  %s: %s\n", key, json_is_string(value) ? json_string_value(value) : "?");
  }
}

static void print_tensors(const cb_weights *w) {
  size_t total = 0;
  int width = 4;
  for (int i = 0; i < cb_weights_count(w); i++) {
    int n = (int)strlen(cb_weights_name(w, i));
    if (n > width) width = n;
  }
  for (int i = 0; i < cb_weights_count(w); i++) {
    const cb_tensor *t = cb_weights_tensor(w, i);
    char shape[128];
    cb_shape_format(t->ndim, t->shape, shape, sizeof shape);
    printf("%-*s  %-8s %-20s %zu bytes\n", width, cb_weights_name(w, i), cb_dtype_name(t->dtype),
           shape, cb_tensor_nbytes(t));
    total += cb_tensor_nbytes(t);
  }
  printf("%d tensors, %zu bytes\n", cb_weights_count(w), total);
}

int cmd_inspect(int argc, char **argv, const cli_globals *g) {
  (void)g;
  if (argc != 1 || argv[0][0] == '-')
    return cli_usage_error(CLI_USAGE_INSPECT, "inspect: expected exactly one FILE");
  cb_error err = {0};
  cb_weights *w = cb_checkpoint_read(argv[0], &err);
  if (!w) return cli_fail("%s", err.msg);
  print_metadata(cb_weights_metadata(w));
  print_tensors(w);
  cb_weights_free(w);
  return CLI_OK;
}
