#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbrick.h>

#include "test_util.h"

static const char *plugin_dir(void) {
  return test_plugin_path("");
}

static void reset(void) {
  cb_plugin_unload_all();
  unsetenv("CBRICK_PLUGIN_PATH");
}

TestSuite(plugins, .init = reset, .fini = reset);

static cb_module *build_scale(int channels, cb_error *err) {
  json_t *c = json_pack("{s:s, s:i}", "type", "Scale", "in_channels", channels);
  cb_module *m = cb_build("PLUGIN_LAYERS", c, NULL, "plugin", err);
  json_decref(c);
  return m;
}

Test(plugins, out_of_tree_plugin_loads_by_path_and_runs) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("scale_layer.so"), &err), 0, "%s", err.msg);
  cb_module *m = build_scale(2, &err);
  cr_assert_not_null(m, "%s", err.msg);
  cb_f32(cb_module_param(m, "weight")->tensor)[1] = 3.0f;
  cb_tensor *x = cb_tensor_new4(1, 2, 1, 2, &err);
  for (int i = 0; i < 4; i++)
    cb_f32(x)[i] = (float)(i + 1);
  cb_tensor *y = cb_module_forward(m, x, &err);
  cr_assert_not_null(y, "%s", err.msg);
  cr_assert_float_eq(cb_f32(y)[0], 1.0f, 1e-6);
  cr_assert_float_eq(cb_f32(y)[3], 12.0f, 1e-6);
  const char *provider = cb_registry_provider("PLUGIN_LAYERS", "Scale");
  cr_assert(provider && strstr(provider, "scale_layer.so"), "provider is the file: %s", provider);
  cb_tensor_free(x);
  cb_tensor_free(y);
  cb_module_free(m);
}

Test(plugins, loading_twice_is_harmless) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("scale_layer.so"), &err), 0, "%s", err.msg);
  char relative_twin[600];
  snprintf(relative_twin, sizeof relative_twin, "%s/tests/../tests/plugins/scale_layer.so",
           test_build_dir());
  cr_assert_eq(cb_plugin_load_file(relative_twin, &err), 0, "%s", err.msg);
}

Test(plugins, missing_file) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("nope.so"), &err), -1);
  cr_assert(strstr(err.msg, "nope.so: no such file"), "%s", err.msg);
}

Test(plugins, not_an_elf_file) {
  cb_error err = {0};
  char path[] = "/tmp/cbrick-notelf-XXXXXX.so";
  int fd = mkstemps(path, 3);
  cr_assert(fd >= 0);
  cr_assert_eq(write(fd, "hello\n", 6), 6);
  close(fd);
  cr_assert_eq(cb_plugin_load_file(path, &err), -1);
  cr_assert(strstr(err.msg, "cannot load"), "%s", err.msg);
  cr_assert(strstr(err.msg, path), "the message names the file: %s", err.msg);
  unlink(path);
}

Test(plugins, no_entry_point) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("no_entry.so"), &err), -1);
  cr_assert(strstr(err.msg, "no_entry.so: no entry point 'cbrick_plugin_info'"), "%s", err.msg);
}

Test(plugins, abi_mismatch) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("abi_mismatch.so"), &err), -1);
  char want[128];
  snprintf(want, sizeof want, "built for cbrick ABI version %d, this library provides %d",
           CB_ABI_VERSION + 41, CB_ABI_VERSION);
  cr_assert(strstr(err.msg, want), "%s", err.msg);
  cr_assert(strstr(err.msg, "abi_mismatch.so"), "%s", err.msg);
}

Test(plugins, duplicate_name_names_both_files_and_rolls_back) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("scale_layer.so"), &err), 0, "%s", err.msg);
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("duplicate_scale.so"), &err), -1);
  cr_assert(strstr(err.msg, "scale_layer.so") && strstr(err.msg, "duplicate_scale.so"), "%s",
            err.msg);
  cr_assert(!cb_registry_has("PLUGIN_LAYERS", "OtherScale"),
            "a failed load leaves none of its entries behind");
  cr_assert(strstr(cb_registry_provider("PLUGIN_LAYERS", "Scale"), "scale_layer.so"));
}

Test(plugins, init_failure) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("init_fails.so"), &err), -1);
  cr_assert(strstr(err.msg, "init_fails.so: needs a device this machine lacks"), "%s", err.msg);
  cr_assert(!cb_registry_has("PLUGIN_LAYERS", "NeedsDevice"));
}

Test(plugins, bare_name_on_search_path) {
  cb_error err = {0};
  char path[600];
  snprintf(path, sizeof path, "/nonexistent:%s", plugin_dir());
  setenv("CBRICK_PLUGIN_PATH", path, 1);
  cr_assert_eq(cb_plugin_load("scale_layer", NULL, &err), 0, "%s", err.msg);
  cr_assert(cb_registry_has("PLUGIN_LAYERS", "Scale"));
  cr_assert_eq(cb_plugin_load("missing_layers", NULL, &err), -1);
  cr_assert(strstr(err.msg, "plugin 'missing_layers': not found"), "%s", err.msg);
}

static json_t *imports(const char *text) {
  json_t *j = json_loads(text, 0, NULL);
  cr_assert_not_null(j);
  return j;
}

Test(plugins, custom_imports_relative_to_config_dir) {
  cb_error err = {0};
  json_t *cfg = imports("{\"custom_imports\": {\"imports\": [\"plugins/scale_layer.so\"], "
                        "\"allow_failed_imports\": false}}");
  char tests_dir[512];
  snprintf(tests_dir, sizeof tests_dir, "%s/tests", test_build_dir());
  cr_assert_eq(cb_plugin_custom_imports(cfg, tests_dir, &err), 0, "%s", err.msg);
  cr_assert(cb_registry_has("PLUGIN_LAYERS", "Scale"));
  cb_module *m = build_scale(4, &err);
  cr_assert_not_null(m, "%s", err.msg);
  cb_module_free(m);
  json_decref(cfg);
}

Test(plugins, custom_imports_string_and_failures) {
  cb_error err = {0};
  json_t *cfg = imports("{\"custom_imports\": {\"imports\": \"scale_layer.so\"}}");
  cr_assert_eq(cb_plugin_custom_imports(cfg, plugin_dir(), &err), 0, "%s", err.msg);
  json_decref(cfg);
  cfg = imports("{\"custom_imports\": {\"imports\": [\"scale_layer\", \"absent_layers\"]}}");
  cr_assert_eq(cb_plugin_custom_imports(cfg, plugin_dir(), &err), -1);
  cr_assert(strstr(err.msg, "custom_imports.imports[1]: plugin 'absent_layers': not found"), "%s",
            err.msg);
  json_decref(cfg);
  cb_set_quiet(1);
  cfg = imports("{\"custom_imports\": {\"imports\": [\"absent_layers\"], "
                "\"allow_failed_imports\": true}}");
  cr_assert_eq(cb_plugin_custom_imports(cfg, plugin_dir(), &err), 0, "%s", err.msg);
  cb_set_quiet(0);
  json_decref(cfg);
  cfg = imports("{\"custom_imports\": {\"imprts\": []}}");
  cr_assert_eq(cb_plugin_custom_imports(cfg, plugin_dir(), &err), -1);
  cr_assert(strstr(err.msg, "custom_imports.imprts: unknown key"), "%s", err.msg);
  json_decref(cfg);
}

Test(plugins, default_folder_and_env_path) {
  cb_error err = {0};
  cr_assert(strstr(cb_plugin_builtin_dir(), "/lib/cbrick/plugins"), "%s", cb_plugin_builtin_dir());
  char dir[] = "/tmp/cbrick-plugins-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cp %s %s/", test_plugin_path("scale_layer.so"), dir);
  cr_assert_eq(system(cmd), 0);
  setenv("CBRICK_PLUGIN_PATH", dir, 1);
  cr_assert_eq(cb_plugin_load_default(&err), 0, "%s", err.msg);
  cr_assert(cb_registry_has("PLUGIN_LAYERS", "Scale"), "plugins on CBRICK_PLUGIN_PATH load");
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert_eq(system(cmd), 0);
}

Test(plugins, unload_all_clears_registries) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("scale_layer.so"), &err), 0, "%s", err.msg);
  cb_plugin_unload_all();
  cr_assert(!cb_registry_has("PLUGIN_LAYERS", "Scale"));
  cr_assert_eq(cb_plugin_load_file(test_plugin_path("scale_layer.so"), &err), 0, "reload: %s",
               err.msg);
}
