/* ResNeXt (mmseg/mmdet): ResNet whose Bottlenecks use grouped 3x3 convs of width
 * floor(planes * base_width / base_channels) * groups. Registered on top of the BACKBONES
 * "ResNet" entry, with the public API only, as an out-of-tree variant would be. */
#include <cbrick.h>

static bool bottleneck_depth(long long depth) {
  return depth == 50 || depth == 101 || depth == 152;
}

static cb_module *build_resnext(cb_args *a, cb_error *err) {
  long long depth;
  if (cb_args_int_required(a, "depth", &depth, err)) return NULL;
  if (!bottleneck_depth(depth)) {
    cb_args_fail(a, "depth", err, "invalid depth %lld for ResNeXt: expected one of 50, 101, 152",
                 depth);
    return NULL;
  }
  const char *key;
  json_t *value;
  json_object_foreach(cb_args_json(a), key, value) {
    cb_args_value(a, key); /* every key goes on to ResNet, which checks it */
  }
  json_t *cfg = json_deep_copy(cb_args_json(a));
  if (!cfg || json_object_set_new(cfg, "type", json_string("ResNet"))) {
    json_decref(cfg);
    cb_fail(err, "%s: out of memory", cb_args_path(a));
    return NULL;
  }
  cb_module *m = cb_build("BACKBONES", cfg, NULL, cb_args_path(a), err);
  json_decref(cfg);
  if (m && cb_module_set_kind(m, "ResNeXt", err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static const cb_plugin_entry entries[] = {
    {"BACKBONES", "ResNeXt", build_resnext, NULL},
    {NULL, NULL, NULL, NULL},
};
CB_PLUGIN("resnext", "ResNeXt: ResNet with grouped Bottleneck convolutions", entries);
