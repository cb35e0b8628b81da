/* ResNet's `block`: the block every stage is built from, its expansion and the blocks per stage
 * (mmdet's subclass overriding arch_settings and the block class, written as config). */
#include <string.h>

#include "resnet.h"

#define MAX_EXPANSION 64
#define MAX_BLOCKS 1024

/* Keys ResNet passes to every block itself (block_build.c), so a block config may not set them,
 * as Python refuses a keyword argument given twice. */
static const char *const passed_keys[] = {
    "inplanes",           "planes",   "stride",     "dilation",      "style",
    "conv_cfg",           "norm_cfg", "dcn",        "plugins",       "with_cp",
    "zero_init_residual", "groups",   "base_width", "base_channels", NULL,
};

static int refuse_passed_keys(cb_args *b, cb_error *err) {
  for (int i = 0; passed_keys[i]; i++)
    if (json_object_get(cb_args_json(b), passed_keys[i]))
      return cb_args_fail(b, passed_keys[i], err,
                          "ResNet passes %s to every block itself (got multiple values for "
                          "keyword argument '%s'); set it on the backbone, or remove it",
                          passed_keys[i], passed_keys[i]);
  return 0;
}

static void builtin_layout(resnet_cfg *cfg, bool basic) {
  cfg->builtin_block = true;
  cfg->basic = basic;
  cfg->block_type = basic ? "BasicBlock" : "Bottleneck";
  cfg->expansion = block_expansion(basic ? BLOCK_BASIC : BLOCK_BOTTLENECK);
}

/* The type must name a RES_BLOCKS entry; an unknown one gets the registry's own message, which
 * lists the known names (cb_build stops before building anything). */
static int read_type(cb_args *b, resnet_cfg *cfg, cb_error *err) {
  const char *type;
  if (cb_args_string(b, "type", NULL, &type, err)) return -1;
  if (!type) return cb_args_fail(b, "type", err, "required (a name in the RES_BLOCKS registry)");
  if (!cb_registry_has("RES_BLOCKS", type)) {
    cb_build("RES_BLOCKS", cb_args_json(b), NULL, cb_args_path(b), err);
    return -1;
  }
  bool basic = strcmp(type, "BasicBlock") == 0;
  if (basic || strcmp(type, "Bottleneck") == 0) builtin_layout(cfg, basic);
  cfg->block_type = type;
  return 0;
}

static int read_expansion(cb_args *b, resnet_cfg *cfg, cb_error *err) {
  long long v;
  if (!cfg->builtin_block && !cb_args_has(b, "expansion"))
    return cb_args_fail(b, "expansion", err,
                        "required for block type '%s' (its output channels per plane: 4 for "
                        "a bottleneck, 1 for a basic block)",
                        cfg->block_type);
  if (cb_args_int(b, "expansion", cfg->expansion, &v, err)) return -1;
  if (cfg->builtin_block && v != cfg->expansion)
    return cb_args_fail(b, "expansion", err, "%s's expansion is %d, found %lld", cfg->block_type,
                        cfg->expansion, v);
  if (v < 1 || v > MAX_EXPANSION)
    return cb_args_fail(b, "expansion", err, "expected an integer from 1 to %d, found %lld",
                        MAX_EXPANSION, v);
  cfg->expansion = (int)v;
  return 0;
}

/* One list of blocks per stage, as an arch_settings entry: 4 counts, of which the first
 * num_stages are used. */
static int read_counts(json_t *list, const char *path, resnet_cfg *cfg, cb_error *err) {
  if (!json_is_array(list))
    return cb_fail(err, "%s: expected a list of block counts, one per stage, found %s", path,
                   cb_json_kind(list));
  size_t n = json_array_size(list);
  if (n < (size_t)cfg->num_stages || n > RESNET_MAX_STAGES) {
    if (cfg->num_stages == RESNET_MAX_STAGES)
      return cb_fail(err, "%s: expected %d block counts (one per stage), found %zu", path,
                     RESNET_MAX_STAGES, n);
    return cb_fail(err,
                   "%s: expected %d to %d block counts (one per stage, num_stages = %d), "
                   "found %zu",
                   path, cfg->num_stages, RESNET_MAX_STAGES, cfg->num_stages, n);
  }
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(list, i);
    long long c = json_is_integer(v) ? json_integer_value(v) : 0;
    if (c < 1 || c > MAX_BLOCKS) {
      char found[64];
      if (json_is_integer(v))
        snprintf(found, sizeof found, "%lld", c);
      else
        snprintf(found, sizeof found, "%s", cb_json_kind(v));
      return cb_fail(err, "%s: item %zu: expected a positive integer up to %d, found %s", path, i,
                     MAX_BLOCKS, found);
    }
    cfg->stage_blocks[i] = (int)c;
  }
  return 0;
}

/* stage_blocks as {"depth": [counts]}: the depth must be one of its keys. */
static int read_depth_table(cb_args *a, json_t *table, const char *path, resnet_cfg *cfg,
                            cb_error *err) {
  char depth[16], sub[640], known[256] = "";
  snprintf(depth, sizeof depth, "%d", cfg->depth);
  json_t *list = json_object_get(table, depth);
  if (list) {
    snprintf(sub, sizeof sub, "%s.%s", path, depth);
    return read_counts(list, sub, cfg, err);
  }
  const char *key;
  json_t *v;
  json_object_foreach(table, key, v) {
    size_t used = strlen(known);
    snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", key);
  }
  return cb_args_fail(a, "depth", err,
                      "invalid depth %d for resnet with block type '%s': expected one of the "
                      "depths of block.stage_blocks (%s)",
                      cfg->depth, cfg->block_type, *known ? known : "none given");
}

static int read_stage_blocks(cb_args *a, cb_args *b, resnet_cfg *cfg, cb_error *err) {
  json_t *v = cb_args_value(b, "stage_blocks");
  char path[600];
  snprintf(path, sizeof path, "%s.stage_blocks", cb_args_path(b));
  if (json_is_object(v)) return read_depth_table(a, v, path, cfg, err);
  if (v && !json_is_null(v)) return read_counts(v, path, cfg, err);
  const int *table = resnet_stage_blocks(cfg->depth);
  if (!table)
    return cb_args_fail(a, "depth", err,
                        "invalid depth %d for resnet: expected one of 18, 34, 50, 101, 152, or "
                        "give the block's own stage_blocks",
                        cfg->depth);
  memcpy(cfg->stage_blocks, table, sizeof cfg->stage_blocks);
  return 0;
}

static int read_block_args(cb_args *a, cb_args *b, resnet_cfg *cfg, cb_error *err) {
  if (read_type(b, cfg, err) || read_expansion(b, cfg, err)) return -1;
  if (refuse_passed_keys(b, err)) return -1;
  return read_stage_blocks(a, b, cfg, err);
}

int resnet_block_read(cb_args *a, resnet_cfg *cfg, cb_error *err) {
  if (cb_args_object(a, "block", &cfg->block, err)) return -1;
  if (!cfg->block) {
    builtin_layout(cfg, cfg->depth < 50);
    memcpy(cfg->stage_blocks, resnet_stage_blocks(cfg->depth), sizeof cfg->stage_blocks);
    return 0;
  }
  char path[600];
  snprintf(path, sizeof path, "%s.block", cfg->path);
  cb_args *b = cb_args_new(cfg->block, path, err);
  if (!b) return -1;
  int rc = read_block_args(a, b, cfg, err);
  cb_args_free(b);
  return rc;
}
