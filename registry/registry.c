#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "registry_internal.h"

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static cb_registry_entry *entries;
static int n_entries;

static int find_index(const char *registry, const char *type) {
  for (int i = 0; i < n_entries; i++)
    if (strcmp(entries[i].registry, registry) == 0 && strcmp(entries[i].type, type) == 0) return i;
  return -1;
}

/* Registry names are interned and live until cb_registry_clear, so a name handed to a
 * cb_registry_foreach callback stays valid after the call, whatever other threads remove. */
static char **names;
static int n_names;

static char *intern_locked(const char *registry) {
  for (int i = 0; i < n_names; i++)
    if (strcmp(names[i], registry) == 0) return names[i];
  char **grown = realloc(names, (size_t)(n_names + 1) * sizeof *grown);
  if (!grown) return NULL;
  names = grown;
  return (names[n_names] = strdup(registry)) ? names[n_names++] : NULL;
}

static void free_entry(cb_registry_entry *e) {
  free(e->type);
  free(e->abbr);
  free(e->provider);
}

/* registry must be interned. */
static int fill_entry(cb_registry_entry *e, char *registry, const char *type, cb_build_fn build,
                      const char *abbr, const char *provider) {
  e->registry = registry;
  e->type = strdup(type);
  e->abbr = abbr ? strdup(abbr) : NULL;
  e->provider = strdup(provider ? provider : "<host>");
  e->build = build;
  if (e->type && e->provider && (!abbr || e->abbr)) return 0;
  free_entry(e);
  return -1;
}

static int add_locked(const char *registry, const char *type, cb_build_fn build, const char *abbr,
                      const char *provider, bool force, cb_error *err) {
  int at = find_index(registry, type);
  if (at >= 0 && !force)
    return cb_fail(err, "%s is already registered in %s by %s; %s cannot register it again", type,
                   registry, entries[at].provider, provider ? provider : "<host>");
  cb_registry_entry e;
  char *name = intern_locked(registry);
  if (!name || fill_entry(&e, name, type, build, abbr, provider))
    return cb_fail(err, "registry %s: out of memory registering %s", registry, type);
  if (at >= 0) {
    free_entry(&entries[at]);
    entries[at] = e;
    return 0;
  }
  cb_registry_entry *grown = realloc(entries, (size_t)(n_entries + 1) * sizeof *grown);
  if (!grown) {
    free_entry(&e);
    return cb_fail(err, "registry %s: out of memory registering %s", registry, type);
  }
  entries = grown;
  entries[n_entries++] = e;
  return 0;
}

int cb_registry_add(const char *registry, const char *type, cb_build_fn build, const char *abbr,
                    const char *provider, bool force, cb_error *err) {
  if (!registry || !*registry || !type || !*type || !build)
    return cb_fail(err, "%s: a registration needs a registry name, a type name and a builder",
                   provider ? provider : "<host>");
  pthread_rwlock_wrlock(&lock);
  int rc = add_locked(registry, type, build, abbr, provider, force, err);
  pthread_rwlock_unlock(&lock);
  return rc;
}

void cb_registry_remove_provider(const char *provider) {
  pthread_rwlock_wrlock(&lock);
  int kept = 0;
  for (int i = 0; i < n_entries; i++) {
    if (strcmp(entries[i].provider, provider) == 0)
      free_entry(&entries[i]);
    else
      entries[kept++] = entries[i];
  }
  n_entries = kept;
  pthread_rwlock_unlock(&lock);
}

void cb_registry_clear(void) {
  pthread_rwlock_wrlock(&lock);
  for (int i = 0; i < n_entries; i++)
    free_entry(&entries[i]);
  free(entries);
  entries = NULL;
  n_entries = 0;
  for (int i = 0; i < n_names; i++)
    free(names[i]);
  free(names);
  names = NULL;
  n_names = 0;
  pthread_rwlock_unlock(&lock);
}

int cb_registry_lookup(const char *registry, const char *type, cb_registry_entry *out) {
  pthread_rwlock_rdlock(&lock);
  int at = find_index(registry, type);
  const char *dot = strrchr(type, '.');
  if (at < 0 && dot) at = find_index(registry, dot + 1);
  if (at >= 0) *out = entries[at];
  pthread_rwlock_unlock(&lock);
  return at >= 0 ? 0 : -1;
}

bool cb_registry_has(const char *registry, const char *type) {
  cb_registry_entry e;
  return cb_registry_lookup(registry, type, &e) == 0;
}

const char *cb_registry_provider(const char *registry, const char *type) {
  cb_registry_entry e;
  return cb_registry_lookup(registry, type, &e) == 0 ? e.provider : NULL;
}

static int compare_entries(const void *a, const void *b) {
  const cb_registry_entry *x = a, *y = b;
  int c = strcmp(x->registry, y->registry);
  return c ? c : strcmp(x->type, y->type);
}

static void snapshot_free(cb_registry_entry *list, int n) {
  for (int i = 0; list && i < n; i++)
    free_entry(&list[i]);
  free(list);
}

/* A sorted copy (types and providers duplicated, so that a provider removed meanwhile by
 * another thread frees nothing the copy uses); callbacks may use the registry without
 * deadlock. */
static cb_registry_entry *snapshot(const char *registry, int *n) {
  pthread_rwlock_rdlock(&lock);
  cb_registry_entry *copy = malloc((size_t)(n_entries ? n_entries : 1) * sizeof *copy);
  int count = 0;
  for (int i = 0; copy && i < n_entries; i++) {
    const cb_registry_entry *e = &entries[i];
    if (registry && strcmp(e->registry, registry) != 0) continue;
    if (fill_entry(&copy[count], e->registry, e->type, e->build, e->abbr, e->provider)) {
      snapshot_free(copy, count);
      copy = NULL;
      count = 0;
      break;
    }
    count++;
  }
  pthread_rwlock_unlock(&lock);
  if (copy) qsort(copy, (size_t)count, sizeof *copy, compare_entries);
  *n = count;
  return copy;
}

int cb_registry_foreach(const char *registry, cb_registry_fn fn, void *ud) {
  int n;
  cb_registry_entry *list = snapshot(registry, &n);
  int rc = 0;
  for (int i = 0; list && i < n && rc == 0; i++)
    rc = fn(list[i].registry, list[i].type, list[i].provider, ud);
  snapshot_free(list, n);
  return rc;
}

void cb_registry_describe(const char *registry, const char *type, char *names, size_t cap,
                          char *closest, size_t closest_cap) {
  int n;
  cb_registry_entry *list = snapshot(registry, &n);
  const char **types = malloc((size_t)(n ? n : 1) * sizeof *types);
  size_t used = 0;
  names[0] = '\0';
  closest[0] = '\0';
  for (int i = 0; list && types && i < n; i++) {
    types[i] = list[i].type;
    if (used < cap)
      used += (size_t)snprintf(names + used, cap - used, "%s%s", i ? ", " : "", list[i].type);
  }
  const char *best = types ? cb_closest_name(type, types, n) : NULL;
  if (best) snprintf(closest, closest_cap, "%s", best);
  free(types);
  snapshot_free(list, n);
}
