/* BasicBlock and Bottleneck as RES_BLOCKS entries: built from the arguments ResNet passes to
 * every block (block_build.c), so a config's `block` and a custom block that wraps one reach
 * them by name. */
#include <string.h>

#include "resnet.h"

static int read_positive(cb_args *a, const char *key, long long def, int *out, cb_error *err) {
  long long v;
  int rc = def < 0 ? cb_args_int_required(a, key, &v, err) : cb_args_int(a, key, def, &v, err);
  if (rc) return -1;
  if (v < 1 || v > 1 << 20)
    return cb_args_fail(a, key, err, "expected an integer from 1 to %d, found %lld", 1 << 20, v);
  *out = (int)v;
  return 0;
}

/* One plugins entry of this block: {cfg, position} (ResNet has taken out "stages"). */
static int check_plugin(json_t *entry, const char *path, const resnet_cfg *cfg, cb_error *err) {
  if (!json_is_object(entry)) return cb_fail(err, "%s: expected an object {cfg, position}", path);
  cb_args *p = cb_args_new(entry, path, err);
  if (!p) return -1;
  json_t *plugin_cfg;
  const char *pos;
  int rc =
      cb_args_object(p, "cfg", &plugin_cfg, err) || cb_args_string(p, "position", NULL, &pos, err);
  if (!rc && !plugin_cfg) rc = cb_args_fail(p, "cfg", err, "required, but missing");
  if (!rc && !pos) rc = cb_args_fail(p, "position", err, "required, but missing");
  if (!rc && !resnet_plugin_position_ok(cfg, pos))
    rc = cb_args_fail(p, "position", err, "expected %s, found '%s'",
                      cfg->basic ? "'after_conv1' or 'after_conv2' (BasicBlock)"
                                 : "'after_conv1', 'after_conv2' or 'after_conv3'",
                      pos);
  if (!rc) rc = cb_args_finish(p, err);
  cb_args_free(p);
  return rc ? -1 : 0;
}

static int read_plugins(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  json_t *v = cb_args_value(a, "plugins");
  if (!v || json_is_null(v)) return 0;
  if (!json_is_array(v))
    return cb_args_fail(a, "plugins", err, "expected a list of {cfg, position}, or null");
  size_t i;
  json_t *entry;
  char path[640];
  json_array_foreach(v, i, entry) {
    snprintf(path, sizeof path, "%s.plugins[%zu]", cfg->path, i);
    if (check_plugin(entry, path, cfg, err)) return -1;
  }
  cfg->plugins = v;
  return 0;
}

static int read_expansion(cb_args *a, const resnet_cfg *cfg, cb_error *err) {
  long long v;
  if (cb_args_int(a, "expansion", cfg->expansion, &v, err)) return -1;
  if (v != cfg->expansion)
    return cb_args_fail(a, "expansion", err, "%s's expansion is %d, found %lld",
                        cfg->basic ? "BasicBlock" : "Bottleneck", cfg->expansion, v);
  return 0;
}

/* ResNeXt's grouped 3x3 convolution (Bottleneck only). */
static int read_groups(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  cfg->groups = 1;
  if (cfg->basic) return 0;
  return read_positive(a, "groups", 1, &cfg->groups, err) ||
                 read_positive(a, "base_width", 4, &cfg->base_width, err) ||
                 read_positive(a, "base_channels", 64, &cfg->base_channels, err)
             ? -1
             : 0;
}

static int read_layers(cb_args *a, resnet_cfg *cfg, block_spec *s, cb_error *err) {
  if (read_positive(a, "inplanes", -1, &s->inplanes, err) ||
      read_positive(a, "planes", -1, &s->planes, err) || read_expansion(a, cfg, err) ||
      read_positive(a, "stride", 1, &s->stride, err) ||
      read_positive(a, "dilation", 1, &s->dilation, err))
    return -1;
  if (resnet_read_style(a, &cfg->caffe, err) || read_groups(a, cfg, err)) return -1;
  if (cb_args_object(a, "conv_cfg", &cfg->conv_cfg, err) ||
      cb_args_object(a, "norm_cfg", &cfg->norm_cfg, err) || cb_args_object(a, "dcn", &s->dcn, err))
    return -1;
  if (cb_args_bool(a, "with_cp", false, &cfg->with_cp, err) ||
      cb_args_bool(a, "zero_init_residual", false, &s->zero_init, err))
    return -1;
  return read_plugins(a, cfg, err);
}

static cb_module *build_entry(cb_args *a, block_type type, cb_error *err) {
  resnet_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.path = cb_args_path(a);
  cfg.basic = type == BLOCK_BASIC;
  cfg.builtin_block = true;
  cfg.expansion = block_expansion(type);
  block_spec spec = {.cfg = &cfg};
  if (read_layers(a, &cfg, &spec, err)) return NULL;
  json_t *bn = cfg.norm_cfg ? NULL : json_pack("{s:s, s:b}", "type", "BN", "requires_grad", 1);
  if (!cfg.norm_cfg && !bn) {
    cb_fail(err, "%s: out of memory", cfg.path);
    return NULL;
  }
  if (bn) cfg.norm_cfg = bn;
  cb_module *m = cfg.basic ? basic_block_new(&spec, NULL, cfg.path, err)
                           : bottleneck_new(&spec, NULL, cfg.path, err);
  json_decref(bn);
  return m;
}

cb_module *build_basic_block_entry(cb_args *a, cb_error *err) {
  return build_entry(a, BLOCK_BASIC, err);
}

cb_module *build_bottleneck_entry(cb_args *a, cb_error *err) {
  return build_entry(a, BLOCK_BOTTLENECK, err);
}
