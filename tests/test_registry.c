#include <criterion/criterion.h>
#include <string.h>

#include <cbrick.h>

static const cb_module_ops dummy_ops = {.kind = "Dummy"};

static cb_module *build_dummy(cb_args *a, cb_error *err) {
  long long width;
  if (cb_args_int(a, "width", 4, &width, err) || cb_args_int(a, "num_features", width, &width, err))
    return NULL;
  if (width <= 0) return cb_args_fail(a, "width", err, "expected > 0, found %lld", width), NULL;
  cb_module *m = cb_module_new(&dummy_ops, NULL, err);
  const int64_t shape[1] = {width};
  if (m && !cb_module_add_param(m, "weight", 1, shape, err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static void clear(void) {
  cb_registry_clear();
}

TestSuite(registry, .init = clear, .fini = clear);

static json_t *cfg(const char *text) {
  json_t *j = json_loads(text, 0, NULL);
  cr_assert_not_null(j, "bad test JSON: %s", text);
  return j;
}

Test(registry, registers_and_builds) {
  cb_error err = {0};
  cr_assert_eq(cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "a.so", false, &err), 0);
  json_t *c = cfg("{\"type\": \"Dummy\", \"width\": 3}");
  cb_module *m = cb_build("TEST_LAYERS", c, NULL, "model.layer", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_eq(cb_module_param(m, "weight")->tensor->shape[0], 3);
  cb_module_free(m);
  json_decref(c);
}

Test(registry, default_args_fill_only_missing_keys) {
  cb_error err = {0};
  cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "a.so", false, &err);
  json_t *c = cfg("{\"width\": 5}");
  json_t *defaults = cfg("{\"type\": \"Dummy\", \"width\": 9}");
  cb_module *m = cb_build("TEST_LAYERS", c, defaults, "x", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_eq(cb_module_param(m, "weight")->tensor->shape[0], 5);
  cr_assert_null(json_object_get(c, "type"), "cb_build must not modify the caller's config");
  cb_module_free(m);
  json_decref(c);
  json_decref(defaults);
}

Test(registry, duplicate_names_both_providers) {
  cb_error err = {0};
  cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "first.so", false, &err);
  cr_assert_eq(cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "second.so", false, &err),
               -1);
  cr_assert(strstr(err.msg, "first.so") && strstr(err.msg, "second.so"), "%s", err.msg);
  cr_assert(strstr(err.msg, "TEST_LAYERS"), "%s", err.msg);
  cr_assert_str_eq(cb_registry_provider("TEST_LAYERS", "Dummy"), "first.so");
}

Test(registry, force_replaces) {
  cb_error err = {0};
  cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "first.so", false, &err);
  cr_assert_eq(cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "second.so", true, &err),
               0);
  cr_assert_str_eq(cb_registry_provider("TEST_LAYERS", "Dummy"), "second.so");
}

Test(registry, unknown_type_lists_and_suggests) {
  cb_error err = {0};
  cb_registry_add("BACKBONES", "ResNet", build_dummy, NULL, "r.so", false, &err);
  cb_registry_add("BACKBONES", "ResNetV1c", build_dummy, NULL, "r.so", false, &err);
  json_t *c = cfg("{\"type\": \"ResNt\"}");
  cr_assert_null(cb_build("BACKBONES", c, NULL, "model.backbone", &err));
  cr_assert(strstr(err.msg, "model.backbone.type: 'ResNt' is not in the BACKBONES registry"), "%s",
            err.msg);
  cr_assert(strstr(err.msg, "did you mean 'ResNet'?"), "%s", err.msg);
  cr_assert(strstr(err.msg, "known: ResNet, ResNetV1c"), "%s", err.msg);
  json_decref(c);
}

Test(registry, empty_registry_says_so) {
  cb_error err = {0};
  json_t *c = cfg("{\"type\": \"DCN\"}");
  cr_assert_null(cb_build("CONV_LAYERS", c, NULL, "conv", &err));
  cr_assert(strstr(err.msg, "CONV_LAYERS registry, which is empty"), "%s", err.msg);
  json_decref(c);
}

Test(registry, scoped_name_falls_back) {
  cb_error err = {0};
  cb_registry_add("BACKBONES", "ResNet", build_dummy, NULL, "r.so", false, &err);
  json_t *c = cfg("{\"type\": \"mmseg.ResNet\"}");
  cb_module *m = cb_build("BACKBONES", c, NULL, "model.backbone", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cb_module_free(m);
  json_decref(c);
}

Test(registry, missing_and_bad_type) {
  cb_error err = {0};
  json_t *c = cfg("{\"width\": 2}");
  cr_assert_null(cb_build("BACKBONES", c, NULL, "model.backbone", &err));
  cr_assert(strstr(err.msg, "model.backbone: missing \"type\""), "%s", err.msg);
  json_decref(c);
  c = cfg("{\"type\": 3}");
  cr_assert_null(cb_build("BACKBONES", c, NULL, "model.backbone", &err));
  cr_assert(strstr(err.msg, "model.backbone.type: expected a string"), "%s", err.msg);
  json_decref(c);
  c = cfg("[1]");
  cr_assert_null(cb_build("BACKBONES", c, NULL, "model.backbone", &err));
  cr_assert(strstr(err.msg, "found a list"), "%s", err.msg);
  json_decref(c);
  c = json_string("ResNet");
  cr_assert_null(cb_build("BACKBONES", c, NULL, "model.backbone", &err));
  cr_assert(
      strstr(err.msg, "model.backbone: expected an object with a \"type\" key, found a string"),
      "%s", err.msg);
  json_decref(c);
}

Test(registry, unknown_key_with_suggestion) {
  cb_error err = {0};
  cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "a.so", false, &err);
  json_t *c = cfg("{\"type\": \"Dummy\", \"widht\": 3}");
  cr_assert_null(cb_build("TEST_LAYERS", c, NULL, "model.neck", &err));
  cr_assert(strstr(err.msg, "model.neck.widht: unknown key for type 'Dummy' (did you mean "
                            "'width'?)"),
            "%s", err.msg);
  json_decref(c);
}

Test(registry, wrong_value_type_names_path) {
  cb_error err = {0};
  cb_registry_add("TEST_LAYERS", "Dummy", build_dummy, NULL, "a.so", false, &err);
  json_t *c = cfg("{\"type\": \"Dummy\", \"width\": \"wide\"}");
  cr_assert_null(cb_build("TEST_LAYERS", c, NULL, "model.neck", &err));
  cr_assert(strstr(err.msg, "model.neck.width: expected an integer, found a string 'wide'"), "%s",
            err.msg);
  json_decref(c);
}

static int count_entry(const char *reg, const char *type, const char *provider, void *ud) {
  (void)provider;
  char *seen = ud;
  strcat(seen, reg);
  strcat(seen, ":");
  strcat(seen, type);
  strcat(seen, ";");
  return 0;
}

Test(registry, foreach_is_sorted) {
  cb_error err = {0};
  cb_registry_add("NORM_LAYERS", "GN", build_dummy, "gn", "n.so", false, &err);
  cb_registry_add("BACKBONES", "ResNet", build_dummy, NULL, "r.so", false, &err);
  cb_registry_add("NORM_LAYERS", "BN", build_dummy, "bn", "n.so", false, &err);
  char seen[256] = "";
  cb_registry_foreach(NULL, count_entry, seen);
  cr_assert_str_eq(seen, "BACKBONES:ResNet;NORM_LAYERS:BN;NORM_LAYERS:GN;");
  seen[0] = '\0';
  cb_registry_foreach("NORM_LAYERS", count_entry, seen);
  cr_assert_str_eq(seen, "NORM_LAYERS:BN;NORM_LAYERS:GN;");
}

Test(registry, norm_and_plugin_names_follow_mmcv) {
  cb_error err = {0};
  cb_registry_add("NORM_LAYERS", "GN", build_dummy, "gn", "n.so", false, &err);
  cb_registry_add("PLUGIN_LAYERS", "NonLocal2d", build_dummy, NULL, "p.so", false, &err);
  cb_registry_add("PLUGIN_LAYERS", "SEBlock", build_dummy, NULL, "p.so", false, &err);
  char name[64];
  json_t *c = cfg("{\"type\": \"GN\"}");
  cb_module *m = cb_build_norm(c, "norm_cfg", 8, "2", name, sizeof name, &err);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_str_eq(name, "gn2");
  cr_assert_eq(cb_module_param(m, "weight")->tensor->shape[0], 8, "num_features is passed");
  cb_module_free(m);
  json_decref(c);
  const char *types[] = {"{\"type\": \"NonLocal2d\"}", "{\"type\": \"SEBlock\"}"};
  const char *want[] = {"non_local2d_x", "se_block_x"};
  for (int i = 0; i < 2; i++) {
    c = cfg(types[i]);
    m = cb_build_plugin(c, "plugins.0.cfg", "_x", NULL, name, sizeof name, &err);
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_str_eq(name, want[i]);
    cb_module_free(m);
    json_decref(c);
  }
}

Test(registry, closest_name) {
  const char *names[] = {"depth", "strides", "dilations", "out_indices"};
  cr_assert_str_eq(cb_closest_name("dpeth", names, 4), "depth");
  cr_assert_str_eq(cb_closest_name("stride", names, 4), "strides");
  cr_assert_null(cb_closest_name("zzzzzzzz", names, 4));
}
