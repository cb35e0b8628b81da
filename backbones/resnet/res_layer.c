/* ResLayer: one stage, a Sequential of blocks whose first block may downsample. */
#include "resnet.h"

static cb_tensor *res_layer_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  cb_tensor *cur = NULL;
  for (int i = 0; i < m->n_children; i++) {
    cb_tensor *next = cb_module_forward(m->children[i], cur ? cur : x, err);
    cb_tensor_free(cur);
    if (!next) return NULL;
    cur = next;
  }
  return cur ? cur : cb_tensor_clone(x, err);
}

int res_layer_lower(cb_module *m, cb_plan_builder *b, int input, int *output, cb_error *err) {
  int cur = input;
  for (int i = 0; i < m->n_children; i++)
    if (cb_plan_lower_child(b, m, m->child_names[i], cur, &cur, err)) return -1;
  *output = cur;
  return 0;
}

static const char *const res_layer_bases[] = {"Sequential", NULL};

static const cb_module_ops res_layer_ops = {
    .kind = "ResLayer",
    .bases = res_layer_bases,
    .forward = res_layer_forward,
    .lower = res_layer_lower,
};

static int add_indexed(cb_module *seq, cb_module *child, cb_error *err) {
  char name[32];
  snprintf(name, sizeof name, "%d", seq->n_children);
  return child ? cb_module_add_child(seq, name, child, err) : -1;
}

static cb_module *build_avg_pool(int stride, const char *path, cb_error *err) {
  return build_packed("POOLING_LAYERS",
                      json_pack("{s:s, s:i, s:i, s:b, s:b}", "type", "AvgPool2d", "kernel_size",
                                stride, "stride", stride, "ceil_mode", 1, "count_include_pad", 0),
                      path, err);
}

/* [AvgPool2d (avg_down)], conv1x1, norm. */
static cb_module *downsample_new(const resnet_cfg *cfg, int inplanes, int outplanes, int stride,
                                 cb_error *err) {
  char conv_path[512], norm_path[512], name[RESNET_NAME];
  snprintf(conv_path, sizeof conv_path, "%s.conv_cfg", cfg->path);
  snprintf(norm_path, sizeof norm_path, "%s.norm_cfg", cfg->path);
  cb_conv_spec spec = {inplanes, outplanes, 1, cfg->avg_down ? 1 : stride, 0, 1, 1, false};
  cb_module *seq = cb_sequential_new(err);
  if (!seq) return NULL;
  if ((cfg->avg_down && add_indexed(seq, build_avg_pool(stride, cfg->path, err), err)) ||
      add_indexed(seq, cb_build_conv(cfg->conv_cfg, conv_path, &spec, err), err) ||
      add_indexed(seq,
                  cb_build_norm(cfg->norm_cfg, norm_path, outplanes, "", name, sizeof name, err),
                  err)) {
    cb_module_free(seq);
    return NULL;
  }
  return seq;
}

/* The DCN config of the next block, or NULL for a plain conv2. fallback_on_stride is taken
 * from the config shared by all blocks, so only the first DCN block built sees it. */
static int block_dcn(const resnet_cfg *cfg, int stage, bool *dcn_used, json_t **out,
                     cb_error *err) {
  *out = NULL;
  if (!cfg->dcn || !cfg->stage_with_dcn[stage]) return 0;
  json_t *fallback = json_object_get(cfg->dcn, "fallback_on_stride");
  if (fallback && !json_is_boolean(fallback) && !json_is_null(fallback))
    return cb_fail(err, "%s.dcn.fallback_on_stride: expected true or false", cfg->path);
  bool first = !*dcn_used;
  *dcn_used = true;
  if (first && json_is_true(fallback)) return 0;
  *out = json_deep_copy(cfg->dcn);
  if (!*out) return cb_fail(err, "%s.dcn: out of memory", cfg->path);
  json_object_del(*out, "fallback_on_stride");
  return 0;
}

static int first_dilation(const resnet_cfg *cfg, int stage, bool last_stage) {
  if (last_stage && cfg->n_multi_grid) return cfg->multi_grid[0];
  int d = cfg->dilations[stage];
  return d > 1 && cfg->contract_dilation ? d / 2 : d;
}

static cb_module *block_new(const block_spec *spec, cb_module *downsample, cb_error *err) {
  const resnet_cfg *cfg = spec->cfg;
  if (cfg->block) return registered_block_new(spec, downsample, err);
  if (cfg->basic) return basic_block_new(spec, downsample, cfg->path, err);
  return bottleneck_new(spec, downsample, cfg->path, err);
}

static int add_block(cb_module *layer, block_spec *spec, cb_module *downsample, bool *dcn_used,
                     cb_error *err) {
  if (block_dcn(spec->cfg, spec->stage, dcn_used, &spec->dcn, err)) {
    cb_module_free(downsample);
    return -1;
  }
  cb_module *block = block_new(spec, downsample, err);
  json_decref(spec->dcn);
  spec->dcn = NULL;
  return add_indexed(layer, block, err);
}

cb_module *res_layer_new(const resnet_cfg *cfg, int stage, int inplanes, bool *dcn_used,
                         cb_error *err) {
  int planes = cfg->base_channels << stage, expansion = cfg->expansion;
  int num_blocks = cfg->stage_blocks[stage];
  int stride = cfg->strides[stage];
  bool last = stage == cfg->num_stages - 1;
  bool grid = last && cfg->n_multi_grid;
  block_spec spec = {cfg,
                     inplanes,
                     planes,
                     stride,
                     first_dilation(cfg, stage, last),
                     stage,
                     NULL,
                     cfg->zero_init_residual && !cfg->pretrained && !cfg->init_cfg};
  cb_module *layer = cb_module_new(&res_layer_ops, NULL, err);
  if (!layer) return NULL;
  cb_module *downsample = NULL;
  if (stride != 1 || inplanes != planes * expansion) {
    downsample = downsample_new(cfg, inplanes, planes * expansion, stride, err);
    if (!downsample) goto fail;
  }
  if (add_block(layer, &spec, downsample, dcn_used, err)) goto fail;
  spec.inplanes = planes * expansion;
  spec.stride = 1;
  for (int i = 1; i < num_blocks; i++) {
    spec.dilation = grid ? cfg->multi_grid[i] : cfg->dilations[stage];
    if (add_block(layer, &spec, NULL, dcn_used, err)) goto fail;
  }
  return layer;
fail:
  cb_module_free(layer);
  return NULL;
}
