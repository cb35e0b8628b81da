#ifndef CBRICK_REGISTRY_INTERNAL_H
#define CBRICK_REGISTRY_INTERNAL_H

#include "cbrick/registry.h"

typedef struct cb_registry_entry {
  char *registry;
  char *type;
  cb_build_fn build;
  char *abbr;
  char *provider;
} cb_registry_entry;

/* Copies the entry for registry/type into *out (strings stay owned by the
 * registry until the provider is removed). Returns 0 when found. A scoped name
 * "scope.Type" falls back to "Type". */
int cb_registry_lookup(const char *registry, const char *type, cb_registry_entry *out);
/* "A, B, C" of one registry's names, for messages; *closest gets the best match or NULL. */
void cb_registry_describe(const char *registry, const char *type, char *names, size_t cap,
                          char *closest, size_t closest_cap);

#endif
