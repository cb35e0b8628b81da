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
  return resnet_read_plugins(a, cfg, false, err);
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
