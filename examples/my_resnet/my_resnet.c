/* MyResNet: a backbone variant registered on top of the BACKBONES "ResNet" entry, the way
 * ResNetV1c and ResNetV1d are. It fixes two arguments (a deep stem and average-pool
 * downsampling: a config that sets them is refused, as Python refuses a keyword argument given
 * twice), gives others its own defaults (a dilated, output-stride-8 layout returning the last
 * two stages) that a config may still override, and builds "ResNet" through the registry, so
 * the module tree and the state-dict keys are ResNet's own.
 *
 *   cc -shared -fPIC $(pkg-config --cflags cbrick) my_resnet.c -o my_resnet.so */
#include <cbrick.h>

/* Arguments MyResNet sets itself. */
static const char *const fixed_keys[] = {"deep_stem", "avg_down"};

/* Arguments MyResNet gives when the config does not. */
static const char *const defaults_json =
    "{\"strides\": [1, 2, 1, 1], \"dilations\": [1, 1, 2, 4], \"contract_dilation\": true,"
    " \"out_indices\": [2, 3]}";

static int refuse_fixed(cb_args *a, cb_error *err) {
  for (size_t i = 0; i < sizeof fixed_keys / sizeof *fixed_keys; i++)
    if (json_object_get(cb_args_json(a), fixed_keys[i]))
      return cb_args_fail(a, fixed_keys[i], err,
                          "MyResNet sets %s itself; remove the key or use type 'ResNet'",
                          fixed_keys[i]);
  return 0;
}

/* The config as ResNet's: type replaced, fixed keys added. NULL when out of memory. */
static json_t *resnet_cfg(cb_args *a) {
  json_t *cfg = json_deep_copy(cb_args_json(a));
  if (!cfg || json_object_set_new(cfg, "type", json_string("ResNet")) ||
      json_object_set_new(cfg, "deep_stem", json_true()) ||
      json_object_set_new(cfg, "avg_down", json_true())) {
    json_decref(cfg);
    return NULL;
  }
  return cfg;
}

static cb_module *build_my_resnet(cb_args *a, cb_error *err) {
  if (refuse_fixed(a, err)) return NULL;
  /* Every key goes on to ResNet, which reports the ones it does not know. */
  const char *key;
  json_t *value;
  json_object_foreach(cb_args_json(a), key, value) cb_args_value(a, key);
  json_t *cfg = resnet_cfg(a);
  json_t *defaults = json_loads(defaults_json, 0, NULL);
  cb_module *m = NULL;
  if (!cfg || !defaults)
    cb_fail(err, "%s: out of memory", cb_args_path(a));
  else
    m = cb_build("BACKBONES", cfg, defaults, cb_args_path(a), err);
  json_decref(cfg);
  json_decref(defaults);
  return m;
}

static const cb_plugin_entry entries[] = {
    {"BACKBONES", "MyResNet", build_my_resnet, NULL},
    {NULL, NULL, NULL, NULL},
};

CB_PLUGIN("my_resnet", "ResNet with a deep stem, avg_down and output stride 8", entries);
