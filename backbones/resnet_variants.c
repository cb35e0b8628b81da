/* ResNetV1c (deep stem) and ResNetV1d (deep stem + avg_down), registered on top of the
 * BACKBONES "ResNet" entry the way any variant is: fix some arguments, build "ResNet". */
#include <string.h>

#include <cbrick.h>

/* ResNetV1c(**kwargs) passes deep_stem / avg_down itself, so the config may not. */
static int refuse_fixed(cb_args *a, const char *key, cb_error *err) {
  if (!json_object_get(cb_args_json(a), key)) return 0;
  const char *type = json_string_value(json_object_get(cb_args_json(a), "type"));
  return cb_args_fail(a, key, err,
                      "%s sets %s itself (got multiple values for keyword argument '%s'); "
                      "remove the key or use type 'ResNet'",
                      type ? type : "this variant", key, key);
}

static cb_module *build_variant(cb_args *a, bool avg_down, cb_error *err) {
  if (refuse_fixed(a, "deep_stem", err) || refuse_fixed(a, "avg_down", err)) return NULL;
  const char *key;
  json_t *value;
  json_object_foreach(cb_args_json(a), key, value) {
    cb_args_value(a, key); /* all keys go on to ResNet, which checks them */
  }
  json_t *cfg = json_deep_copy(cb_args_json(a));
  if (!cfg || json_object_set_new(cfg, "type", json_string("ResNet")) ||
      json_object_set_new(cfg, "deep_stem", json_true()) ||
      json_object_set_new(cfg, "avg_down", json_boolean(avg_down))) {
    json_decref(cfg);
    cb_fail(err, "%s: out of memory", cb_args_path(a));
    return NULL;
  }
  cb_module *m = cb_build("BACKBONES", cfg, NULL, cb_args_path(a), err);
  json_decref(cfg);
  if (m && cb_module_set_kind(m, avg_down ? "ResNetV1d" : "ResNetV1c", err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static cb_module *build_v1c(cb_args *a, cb_error *err) {
  return build_variant(a, false, err);
}
static cb_module *build_v1d(cb_args *a, cb_error *err) {
  return build_variant(a, true, err);
}

static const cb_plugin_entry entries[] = {
    {"BACKBONES", "ResNetV1c", build_v1c, NULL},
    {"BACKBONES", "ResNetV1d", build_v1d, NULL},
    {NULL},
};
CB_PLUGIN("resnet_variants", "ResNetV1c / ResNetV1d: ResNet with a deep stem (and avg_down)",
          entries);
