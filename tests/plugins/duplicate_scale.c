/* Registers a name that scale_layer.so registers too. */
#include <cbrick.h>

static cb_module *build_nothing(cb_args *a, cb_error *err) {
  (void)a;
  return cb_fail(err, "never built"), NULL;
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "OtherScale", build_nothing, NULL},
    {"PLUGIN_LAYERS", "Scale", build_nothing, NULL},
    {NULL, NULL, NULL, NULL},
};

CB_PLUGIN("duplicate_scale", "clashes with scale_layer", entries);
