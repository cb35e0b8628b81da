/* A plugin whose init refuses to start. */
#include <cbrick.h>

static cb_module *build_nothing(cb_args *a, cb_error *err) {
  (void)a;
  return cb_fail(err, "never built"), NULL;
}

static int refuse(cb_error *err) {
  return cb_fail(err, "needs a device this machine lacks");
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "NeedsDevice", build_nothing, NULL},
    {NULL, NULL, NULL, NULL},
};

CB_PLUGIN_WITH_INIT("init_fails", "init returns an error", entries, refuse);
