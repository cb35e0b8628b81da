#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "cli.h"

#define MAX_REGISTRIES 64

typedef struct registry_names {
  const char *names[MAX_REGISTRIES];
  int n;
  int type_width;
} registry_names;

static int collect(const char *registry, const char *type, const char *provider, void *ud) {
  registry_names *r = ud;
  (void)provider;
  int width = (int)strlen(type);
  if (width > r->type_width) r->type_width = width;
  if (r->n > 0 && strcmp(r->names[r->n - 1], registry) == 0) return 0;
  if (r->n < MAX_REGISTRIES) r->names[r->n++] = registry;
  return 0;
}

typedef struct printer {
  const char *last;
  int type_width;
} printer;

static int print_entry(const char *registry, const char *type, const char *provider, void *ud) {
  printer *p = ud;
  if (!p->last || strcmp(p->last, registry) != 0) printf("%s%s\n", p->last ? "\n" : "", registry);
  p->last = registry;
  printf("  %-*s  %s\n", p->type_width, type, provider ? provider : "");
  return 0;
}

static const char *find_registry(const registry_names *r, const char *wanted) {
  for (int i = 0; i < r->n; i++)
    if (strcasecmp(r->names[i], wanted) == 0) return r->names[i];
  return NULL;
}

static int unknown_registry(const registry_names *r, const char *wanted) {
  char known[1024] = "";
  size_t at = 0;
  for (int i = 0; i < r->n && at < sizeof(known); i++)
    at += (size_t)snprintf(known + at, sizeof(known) - at, "%s%s", i ? ", " : "", r->names[i]);
  const char *close = cb_closest_name(wanted, r->names, r->n);
  return cli_fail("unknown registry '%s'%s%s%s (known: %s)", wanted,
                  close ? "; did you mean '" : "", close ? close : "", close ? "'?" : "",
                  r->n ? known : "none");
}

int cmd_list(int argc, char **argv, const cli_globals *g) {
  if (argc > 1) return cli_usage_error(CLI_USAGE_LIST, "list takes at most one REGISTRY");
  if (argc == 1 && argv[0][0] == '-')
    return cli_usage_error(CLI_USAGE_LIST, "list: unknown option '%s'", argv[0]);
  cb_error err = {0};
  if (cli_load_plugins(g, &err)) return cli_fail("%s", err.msg);
  registry_names r = {.n = 0};
  cb_registry_foreach(NULL, collect, &r);
  const char *registry = NULL;
  if (argc == 1 && !(registry = find_registry(&r, argv[0]))) return unknown_registry(&r, argv[0]);
  printer p = {NULL, r.type_width};
  cb_registry_foreach(registry, print_entry, &p);
  if (!p.last) fprintf(stderr, "cbrick: no layer is registered (no plugin found)\n");
  return CLI_OK;
}
