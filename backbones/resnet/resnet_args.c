#include <string.h>

#include "resnet.h"

static const int stage_blocks_18[] = {2, 2, 2, 2}, stage_blocks_34[] = {3, 4, 6, 3},
                 stage_blocks_101[] = {3, 4, 23, 3}, stage_blocks_152[] = {3, 8, 36, 3};

/* arch_settings: blocks per stage of each depth (50 shares 34's). */
const int *resnet_stage_blocks(int depth) {
  switch (depth) {
  case 18:
    return stage_blocks_18;
  case 34:
  case 50:
    return stage_blocks_34;
  case 101:
    return stage_blocks_101;
  case 152:
    return stage_blocks_152;
  default:
    return NULL;
  }
}

static int read_int(cb_args *a, const char *key, long long def, long long min, int *out,
                    cb_error *err) {
  long long v;
  if (cb_args_int(a, key, def, &v, err)) return -1;
  if (v < min || v > 1 << 20)
    return cb_args_fail(a, key, err, "expected an integer from %lld to %d, found %lld", min,
                        1 << 20, v);
  *out = (int)v;
  return 0;
}

/* A `block` may bring its own depths (stage_blocks); resnet_block_read checks depth then. */
static int read_depth(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  long long depth;
  if (cb_args_int_required(a, "depth", &depth, err)) return -1;
  if (cb_args_has(a, "block") && depth > 0 && depth <= 1 << 20) {
    cfg->depth = (int)depth;
    return 0;
  }
  if (!resnet_stage_blocks((int)depth) || depth != (int)depth)
    return cb_args_fail(a, "depth", err,
                        "invalid depth %lld for resnet: expected one of 18, 34, 50, 101, 152",
                        depth);
  cfg->depth = (int)depth;
  return 0;
}

static int read_num_stages(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  long long n;
  if (cb_args_int(a, "num_stages", 4, &n, err)) return -1;
  if (n < 1 || n > RESNET_MAX_STAGES)
    return cb_args_fail(a, "num_stages", err, "expected 1 to 4, found %lld", n);
  cfg->num_stages = (int)n;
  return 0;
}

/* strides / dilations: one positive integer per stage. */
static int read_per_stage(cb_args *a, const char *key, const long long *def, int *out,
                          int num_stages, cb_error *err) {
  long long v[RESNET_MAX_STAGES + 1];
  int n;
  if (cb_args_int_list(a, key, def, 4, v, RESNET_MAX_STAGES + 1, &n, err)) return -1;
  if (n != num_stages)
    return cb_args_fail(a, key, err, "expected one value per stage (num_stages = %d), found %d",
                        num_stages, n);
  for (int i = 0; i < n; i++) {
    if (v[i] < 1 || v[i] > 1024)
      return cb_args_fail(a, key, err, "item %d: expected a positive integer, found %lld", i, v[i]);
    out[i] = (int)v[i];
  }
  return 0;
}

static int read_out_indices(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  static const long long def[] = {0, 1, 2, 3};
  long long v[16];
  int n;
  if (cb_args_int_list(a, "out_indices", def, 4, v, 16, &n, err)) return -1;
  if (n == 0) return cb_args_fail(a, "out_indices", err, "expected at least one stage index");
  for (int i = 0; i < n; i++) {
    if (v[i] < 0 || v[i] >= cfg->num_stages)
      return cb_args_fail(a, "out_indices", err,
                          "item %d: expected a stage index from 0 to %d (num_stages - 1), "
                          "found %lld",
                          i, cfg->num_stages - 1, v[i]);
    cfg->out_index[v[i]] = true;
  }
  return 0;
}

int resnet_read_style(cb_args *a, bool *caffe, cb_error *err) {
  const char *style;
  if (cb_args_string(a, "style", "pytorch", &style, err)) return -1;
  if (strcmp(style, "pytorch") != 0 && strcmp(style, "caffe") != 0)
    return cb_args_fail(a, "style", err, "expected 'pytorch' or 'caffe', found '%s'", style);
  *caffe = strcmp(style, "caffe") == 0;
  return 0;
}

static int read_frozen(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  long long v;
  if (cb_args_int(a, "frozen_stages", -1, &v, err)) return -1;
  if (v < -1 || v > cfg->num_stages)
    return cb_args_fail(a, "frozen_stages", err,
                        "expected -1 (none) to %d (num_stages), found %lld", cfg->num_stages, v);
  cfg->frozen_stages = (int)v;
  return 0;
}

static int read_norm_cfg(cb_args *a, resnet_cfg *cfg, json_t **owned, cb_error *err) {
  if (cb_args_object(a, "norm_cfg", &cfg->norm_cfg, err)) return -1;
  if (cfg->norm_cfg) return 0;
  *owned = json_pack("{s:s, s:b}", "type", "BN", "requires_grad", 1);
  if (!*owned) return cb_args_fail(a, "norm_cfg", err, "out of memory");
  cfg->norm_cfg = *owned;
  return 0;
}

static int read_dcn(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  int n;
  if (cb_args_object(a, "dcn", &cfg->dcn, err)) return -1;
  if (cb_args_bool_list(a, "stage_with_dcn", cfg->stage_with_dcn, RESNET_MAX_STAGES, &n, err))
    return -1;
  if (!cb_args_has(a, "stage_with_dcn")) n = RESNET_MAX_STAGES; /* (False,) * 4 */
  if (cfg->dcn && n != cfg->num_stages)
    return cb_args_fail(a, "stage_with_dcn", err,
                        "expected one flag per stage (num_stages = %d) when dcn is set, found %d",
                        cfg->num_stages, n);
  if (n < cfg->num_stages)
    return cb_args_fail(a, "stage_with_dcn", err,
                        "expected one flag per stage (num_stages = %d), found %d", cfg->num_stages,
                        n);
  return 0;
}

static int read_multi_grid(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  long long v[RESNET_MAX_GRID];
  int n;
  if (cb_args_int_list(a, "multi_grid", NULL, 0, v, RESNET_MAX_GRID, &n, err)) return -1;
  if (!cb_args_has(a, "multi_grid")) return 0;
  int need = cfg->stage_blocks[cfg->num_stages - 1];
  if (n < need)
    return cb_args_fail(a, "multi_grid", err,
                        "expected a dilation for each of the %d blocks of the last stage, found %d",
                        need, n);
  for (int i = 0; i < n; i++) {
    if (v[i] < 1 || v[i] > 1024)
      return cb_args_fail(a, "multi_grid", err, "item %d: expected a positive integer, found %lld",
                          i, v[i]);
    cfg->multi_grid[i] = (int)v[i];
  }
  cfg->n_multi_grid = n;
  return 0;
}

/* A custom block takes any of the three and decides itself what it supports. */
static bool plugin_position_ok(const resnet_cfg *cfg, const char *pos) {
  return strcmp(pos, "after_conv1") == 0 || strcmp(pos, "after_conv2") == 0 ||
         (!cfg->basic && strcmp(pos, "after_conv3") == 0);
}

static int check_position(cb_args *a, const resnet_cfg *cfg, cb_error *err) {
  const char *pos = NULL;
  if (cb_args_string(a, "position", NULL, &pos, err)) return -1;
  if (!pos) return cb_args_fail(a, "position", err, "required, but missing");
  if (plugin_position_ok(cfg, pos)) return 0;
  return cb_args_fail(a, "position", err, "expected %s, found '%s'",
                      cfg->basic ? "'after_conv1' or 'after_conv2' (BasicBlock)"
                                 : "'after_conv1', 'after_conv2' or 'after_conv3'",
                      pos);
}

static int check_plugin_args(cb_args *a, const resnet_cfg *cfg, bool with_stages, cb_error *err) {
  json_t *pcfg;
  bool stages[RESNET_MAX_STAGES + 1];
  int n;
  if (cb_args_object(a, "cfg", &pcfg, err)) return -1;
  if (!pcfg) return cb_args_fail(a, "cfg", err, "required, but missing");
  if (check_position(a, cfg, err)) return -1;
  if (!with_stages) return cb_args_finish(a, err);
  if (cb_args_bool_list(a, "stages", stages, RESNET_MAX_STAGES + 1, &n, err)) return -1;
  if (cb_args_has(a, "stages") && n != cfg->num_stages)
    return cb_args_fail(a, "stages", err, "expected one flag per stage (num_stages = %d), found %d",
                        cfg->num_stages, n);
  return cb_args_finish(a, err);
}

/* One plugins entry: {cfg, position, stages?} (a block's entries have no stages). */
static int check_plugin(json_t *entry, const char *path, const resnet_cfg *cfg, bool with_stages,
                        cb_error *err) {
  cb_args *a = cb_args_new(entry, path, err);
  if (!a) return -1;
  int rc = check_plugin_args(a, cfg, with_stages, err);
  cb_args_free(a);
  return rc;
}

int resnet_read_plugins(cb_args *a, resnet_cfg *cfg, bool with_stages, cb_error *err) {
  json_t *v = cb_args_value(a, "plugins");
  if (!v || json_is_null(v)) return 0;
  if (!json_is_array(v))
    return cb_args_fail(a, "plugins", err, "expected a list of %s, or null",
                        with_stages ? "{cfg, position, stages}" : "{cfg, position}");
  size_t i;
  json_t *entry;
  char path[640];
  json_array_foreach(v, i, entry) {
    snprintf(path, sizeof path, "%s.plugins[%zu]", cfg->path, i);
    if (check_plugin(entry, path, cfg, with_stages, err)) return -1;
  }
  cfg->plugins = v;
  return 0;
}

static int read_init(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  if (cb_args_string(a, "pretrained", NULL, &cfg->pretrained, err)) return -1;
  json_t *init = cb_args_value(a, "init_cfg");
  if (init && !json_is_null(init) && !json_is_object(init) && !json_is_array(init))
    return cb_args_fail(a, "init_cfg", err, "expected an object, a list of them, or null");
  bool has_init = init && ((json_is_object(init) && json_object_size(init)) ||
                           (json_is_array(init) && json_array_size(init)));
  if (has_init && cfg->pretrained)
    return cb_args_fail(a, "init_cfg", err,
                        "init_cfg and pretrained cannot be set at the same time");
  cfg->init_cfg = has_init ? init : NULL;
  return 0;
}

/* ResNeXt's arguments: grouped 3x3 convs of width floor(planes * base_width /
 * base_channels) * groups, Bottleneck depths only. */
static int read_groups(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  if (read_int(a, "groups", 1, 1, &cfg->groups, err) ||
      read_int(a, "base_width", 4, 1, &cfg->base_width, err))
    return -1;
  if (cfg->groups != 1 && cfg->basic && cfg->block)
    return cb_args_fail(a, "groups", err,
                        "grouped convolutions need Bottleneck blocks, found block type "
                        "BasicBlock");
  if (cfg->groups != 1 && cfg->basic)
    return cb_args_fail(a, "groups", err,
                        "grouped convolutions need Bottleneck blocks (depth 50, 101 or 152), "
                        "found depth %d",
                        cfg->depth);
  return 0;
}

static int read_flags(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  if (cb_args_bool(a, "deep_stem", false, &cfg->deep_stem, err)) return -1;
  if (cb_args_bool(a, "avg_down", false, &cfg->avg_down, err)) return -1;
  if (cb_args_bool(a, "norm_eval", false, &cfg->norm_eval, err)) return -1;
  if (cb_args_bool(a, "contract_dilation", false, &cfg->contract_dilation, err)) return -1;
  if (cb_args_bool(a, "with_cp", false, &cfg->with_cp, err)) return -1;
  return cb_args_bool(a, "zero_init_residual", true, &cfg->zero_init_residual, err);
}

int resnet_cfg_read(cb_args *a, resnet_cfg *cfg, json_t **owned_norm, cb_error *err) {
  static const long long strides[] = {1, 2, 2, 2}, dilations[] = {1, 1, 1, 1};
  memset(cfg, 0, sizeof *cfg);
  *owned_norm = NULL;
  cfg->path = cb_args_path(a);
  if (read_depth(a, cfg, err)) return -1;
  if (read_int(a, "in_channels", 3, 1, &cfg->in_channels, err)) return -1;
  if (read_int(a, "stem_channels", 64, 1, &cfg->stem_channels, err)) return -1;
  if (read_int(a, "base_channels", 64, 1, &cfg->base_channels, err)) return -1;
  if (read_num_stages(a, cfg, err) || resnet_block_read(a, cfg, err)) return -1;
  if (read_per_stage(a, "strides", strides, cfg->strides, cfg->num_stages, err)) return -1;
  if (read_per_stage(a, "dilations", dilations, cfg->dilations, cfg->num_stages, err)) return -1;
  if (read_out_indices(a, cfg, err) || resnet_read_style(a, &cfg->caffe, err)) return -1;
  if (read_flags(a, cfg, err) || read_frozen(a, cfg, err)) return -1;
  if (read_groups(a, cfg, err)) return -1;
  if (cfg->deep_stem && cfg->stem_channels < 2)
    return cb_args_fail(a, "stem_channels", err, "expected at least 2 with deep_stem, found %d",
                        cfg->stem_channels);
  if (cb_args_object(a, "conv_cfg", &cfg->conv_cfg, err)) return -1;
  if (read_dcn(a, cfg, err) || read_multi_grid(a, cfg, err)) return -1;
  if (resnet_read_plugins(a, cfg, true, err) || read_init(a, cfg, err)) return -1;
  return read_norm_cfg(a, cfg, owned_norm, err);
}
