#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cbrick/plugin.h"

typedef struct loaded_plugin {
  char *path;
  void *handle;
} loaded_plugin;

static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static loaded_plugin *loaded;
static int n_loaded;

static bool is_regular_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_directory(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool already_loaded(const char *real) {
  for (int i = 0; i < n_loaded; i++)
    if (strcmp(loaded[i].path, real) == 0) return true;
  return false;
}

static int register_entries(const cb_plugin_info *info, const char *path, cb_error *err) {
  for (const cb_plugin_entry *e = info->entries; e && e->registry; e++)
    if (cb_registry_add(e->registry, e->type, e->build, e->abbr, path, false, err)) return -1;
  if (info->init && info->init(err)) return -1;
  return 0;
}

static int check_info(const cb_plugin_info *info, const char *path, cb_error *err) {
  if (!info)
    return cb_fail(err,
                   "plugin %s: no entry point '%s' (not a cbrick plugin? define it with "
                   "CB_PLUGIN)",
                   path, CB_PLUGIN_SYMBOL);
  if (info->abi_version != CB_ABI_VERSION)
    return cb_fail(err,
                   "plugin %s: built for cbrick ABI version %d, this library provides %d; "
                   "rebuild the plugin against this cbrick",
                   path, info->abi_version, CB_ABI_VERSION);
  return 0;
}

static int remember(const char *real, void *handle, cb_error *err) {
  loaded_plugin *grown = realloc(loaded, (size_t)(n_loaded + 1) * sizeof *grown);
  char *copy = strdup(real);
  if (!grown || !copy) {
    free(copy);
    if (grown) loaded = grown;
    return cb_fail(err, "plugin %s: out of memory", real);
  }
  loaded = grown;
  loaded[n_loaded].path = copy;
  loaded[n_loaded].handle = handle;
  n_loaded++;
  return 0;
}

static int load_locked(const char *real, cb_error *err) {
  if (already_loaded(real)) return 0;
  dlerror();
  void *handle = dlopen(real, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    return cb_fail(err, "plugin %s: cannot load: %s", real, why ? why : "unknown dlopen error");
  }
  const cb_plugin_info *info = dlsym(handle, CB_PLUGIN_SYMBOL);
  if (check_info(info, real, err) == 0 && register_entries(info, real, err) == 0 &&
      remember(real, handle, err) == 0)
    return 0;
  if (strncmp(err->msg, "plugin ", 7) != 0) cb_error_prefix(err, "plugin %s: ", real);
  cb_registry_remove_provider(real);
  dlclose(handle);
  return -1;
}

int cb_plugin_load_file(const char *path, cb_error *err) {
  char real[PATH_MAX];
  if (!is_regular_file(path) || !realpath(path, real))
    return cb_fail(err, "plugin %s: no such file", path);
  pthread_mutex_lock(&lock);
  int rc = load_locked(real, err);
  pthread_mutex_unlock(&lock);
  return rc;
}

static char builtin_dir[PATH_MAX + 32];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

/* lib/cbrick/plugins beside the libcbrick.so this code runs from, so a build
 * tree and an installed prefix both work without environment variables. */
static void find_builtin_dir(void) {
  Dl_info info;
  char real[PATH_MAX];
  if (!dladdr((void *)cb_plugin_builtin_dir, &info) || !info.dli_fname ||
      !realpath(info.dli_fname, real))
    return;
  char *slash = strrchr(real, '/');
  if (!slash) return;
  *slash = '\0';
  snprintf(builtin_dir, sizeof builtin_dir, "%s/cbrick/plugins", real);
}

const char *cb_plugin_builtin_dir(void) {
  pthread_once(&builtin_once, find_builtin_dir);
  return builtin_dir;
}

static bool has_so_suffix(const char *name) {
  size_t n = strlen(name);
  return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.so of dir, in name order. */
static int load_folder(const char *dir, cb_error *err) {
  DIR *d = opendir(dir);
  if (!d) return cb_fail(err, "plugin folder %s: cannot open", dir);
  char **names = NULL;
  int n = 0, rc = 0;
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    if (!has_so_suffix(ent->d_name)) continue;
    char **grown = realloc(names, (size_t)(n + 1) * sizeof *names);
    if (!grown) break;
    names = grown;
    names[n] = strdup(ent->d_name);
    if (names[n]) n++;
  }
  closedir(d);
  if (n > 1) qsort(names, (size_t)n, sizeof *names, compare_names);
  for (int i = 0; i < n; i++) {
    char path[2 * PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (rc == 0) rc = cb_plugin_load_file(path, err);
    free(names[i]);
  }
  free(names);
  return rc;
}

int cb_plugin_load_default(cb_error *err) {
  const char *builtin = cb_plugin_builtin_dir();
  if (*builtin && is_directory(builtin) && load_folder(builtin, err)) return -1;
  const char *env = getenv("CBRICK_PLUGIN_PATH");
  if (!env) return 0;
  char *copy = strdup(env);
  if (!copy) return cb_fail(err, "CBRICK_PLUGIN_PATH: out of memory");
  int rc = 0;
  char *save = NULL;
  for (char *dir = strtok_r(copy, ":", &save); dir && rc == 0; dir = strtok_r(NULL, ":", &save)) {
    if (is_directory(dir))
      rc = load_folder(dir, err);
    else
      cb_warn("CBRICK_PLUGIN_PATH: %s is not a folder; skipped", dir);
  }
  free(copy);
  return rc;
}

/* dir/name, then dir/name.so. */
static bool try_in(const char *dir, const char *name, char *out, size_t cap) {
  if (!dir || !*dir) return false;
  snprintf(out, cap, "%s/%s", dir, name);
  if (is_regular_file(out)) return true;
  snprintf(out, cap, "%s/%s.so", dir, name);
  return is_regular_file(out);
}

static bool search_path(const char *name, char *out, size_t cap) {
  const char *env = getenv("CBRICK_PLUGIN_PATH");
  char *copy = env ? strdup(env) : NULL;
  bool found = false;
  char *save = NULL;
  for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir && !found;
       dir = strtok_r(NULL, ":", &save))
    found = try_in(dir, name, out, cap);
  free(copy);
  return found || try_in(cb_plugin_builtin_dir(), name, out, cap);
}

int cb_plugin_load(const char *name, const char *base_dir, cb_error *err) {
  char path[PATH_MAX];
  if (name[0] == '/') return cb_plugin_load_file(name, err);
  if (strchr(name, '/')) {
    snprintf(path, sizeof path, "%s/%s", base_dir ? base_dir : ".", name);
    return cb_plugin_load_file(path, err);
  }
  if (try_in(base_dir, name, path, sizeof path) || search_path(name, path, sizeof path))
    return cb_plugin_load_file(path, err);
  return cb_fail(err,
                 "plugin '%s': not found next to the config (%s) nor on the plugin search "
                 "path (CBRICK_PLUGIN_PATH, %s)",
                 name, base_dir ? base_dir : ".", cb_plugin_builtin_dir());
}

static int import_one(json_t *item, size_t index, const char *base_dir, bool allow_failed,
                      cb_error *err) {
  if (!json_is_string(item))
    return cb_fail(err, "custom_imports.imports[%zu]: expected a plugin file name (string)", index);
  if (cb_plugin_load(json_string_value(item), base_dir, err) == 0) return 0;
  if (!allow_failed) return cb_error_prefix(err, "custom_imports.imports[%zu]: ", index);
  cb_warn("custom_imports: %s (ignored: allow_failed_imports is true)", err->msg);
  cb_error_clear(err);
  return 0;
}

int cb_plugin_custom_imports(json_t *config, const char *config_dir, cb_error *err) {
  json_t *ci = json_object_get(config, "custom_imports");
  if (!ci || json_is_null(ci)) return 0;
  if (!json_is_object(ci))
    return cb_fail(err, "custom_imports: expected an object {\"imports\": [...]}");
  json_t *imports = json_object_get(ci, "imports");
  json_t *allow = json_object_get(ci, "allow_failed_imports");
  if (allow && !json_is_boolean(allow))
    return cb_fail(err, "custom_imports.allow_failed_imports: expected true or false");
  const char *key;
  json_t *value;
  json_object_foreach(ci, key, value) {
    if (strcmp(key, "imports") != 0 && strcmp(key, "allow_failed_imports") != 0)
      return cb_fail(err,
                     "custom_imports.%s: unknown key (expected imports, "
                     "allow_failed_imports)",
                     key);
  }
  bool allow_failed = json_is_true(allow);
  if (json_is_string(imports)) return import_one(imports, 0, config_dir, allow_failed, err);
  if (!json_is_array(imports))
    return cb_fail(err, "custom_imports.imports: expected a string or a list of strings");
  size_t i;
  json_t *item;
  json_array_foreach(imports, i, item) {
    if (import_one(item, i, config_dir, allow_failed, err)) return -1;
  }
  return 0;
}

void cb_plugin_unload_all(void) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < n_loaded; i++) {
    cb_registry_remove_provider(loaded[i].path);
    dlclose(loaded[i].handle);
    free(loaded[i].path);
  }
  free(loaded);
  loaded = NULL;
  n_loaded = 0;
  pthread_mutex_unlock(&lock);
  cb_registry_clear();
}
