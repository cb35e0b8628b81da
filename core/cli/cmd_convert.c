#include <stdio.h>
#include <string.h>
#include "cli.h"

#define MAX_REVISE 16

typedef struct convert_args {
  const char *in, *out, *prefix;
  bool strip_module;
  int n_revise;
  cb_key_rule revise[MAX_REVISE];
} convert_args;

/* "PATTERN=REPLACEMENT", split at the first '=' (in place: argv is ours). */
static int add_revise(convert_args *c, char *rule) {
  char *eq = strchr(rule, '=');
  if (!eq) return cli_usage_error(CLI_USAGE_CONVERT, "--revise: expected PATTERN=REPLACEMENT");
  if (c->n_revise == MAX_REVISE)
    return cli_usage_error(CLI_USAGE_CONVERT, "--revise: at most %d rules", MAX_REVISE);
  *eq = '\0';
  c->revise[c->n_revise++] = (cb_key_rule){rule, eq + 1};
  return CLI_OK;
}

static int parse(convert_args *c, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--prefix") == 0) {
      if (i + 1 >= argc) return cli_usage_error(CLI_USAGE_CONVERT, "--prefix needs a value");
      c->prefix = argv[++i];
    } else if (strcmp(argv[i], "--revise") == 0) {
      if (i + 1 >= argc) return cli_usage_error(CLI_USAGE_CONVERT, "--revise needs a value");
      if (add_revise(c, argv[++i]) != CLI_OK) return CLI_USAGE;
    } else if (strcmp(argv[i], "--strip-module") == 0) {
      c->strip_module = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error(CLI_USAGE_CONVERT, "convert: unknown option '%s'", argv[i]);
    } else if (!c->in) {
      c->in = argv[i];
    } else if (!c->out) {
      c->out = argv[i];
    } else {
      return cli_usage_error(CLI_USAGE_CONVERT, "convert: unexpected argument '%s'", argv[i]);
    }
  }
  if (!c->in || !c->out) return cli_usage_error(CLI_USAGE_CONVERT, "convert: IN and OUT needed");
  size_t n = strlen(c->out);
  if (n < 12 || strcmp(c->out + n - 12, ".safetensors") != 0)
    return cli_usage_error(CLI_USAGE_CONVERT, "convert: OUT must end in .safetensors");
  return CLI_OK;
}

/* Applies --revise, --strip-module, then --prefix; each step replaces *w. */
static int select_keys(cb_weights **w, const convert_args *c, cb_error *err) {
  if (c->n_revise) {
    cb_weights *next = cb_weights_revise_keys(*w, c->revise, c->n_revise, err);
    cb_weights_free(*w);
    *w = next;
    if (!next) return cb_error_prefix(err, "--revise: ");
  }
  if (c->strip_module) {
    cb_weights *next = cb_checkpoint_strip_module(*w, err);
    cb_weights_free(*w);
    *w = next;
    if (!next) return -1;
  }
  if (c->prefix) {
    cb_weights *next = cb_checkpoint_strip_prefix(*w, c->prefix, err);
    cb_weights_free(*w);
    *w = next;
    if (!next) return -1;
    if (cb_weights_count(next) == 0)
      return cb_fail(err, "%s: no key starts with the prefix '%s'", c->in, c->prefix);
  }
  return 0;
}

int cmd_convert(int argc, char **argv, const cli_globals *g) {
  (void)g;
  convert_args c = {0};
  int rc = parse(&c, argc, argv);
  if (rc != CLI_OK) return rc;
  cb_error err = {0};
  cb_weights *w = cb_checkpoint_read(c.in, &err);
  json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "source", c.in);
  if (w && meta && select_keys(&w, &c, &err) == 0 &&
      cb_safetensors_write(c.out, w, meta, &err) == 0) {
    printf("%s: %d tensors written\n", c.out, cb_weights_count(w));
  } else {
    rc = cli_fail("%s", err.msg);
  }
  json_decref(meta);
  cb_weights_free(w);
  return rc;
}
