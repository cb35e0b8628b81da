/* BasicBlock: conv3x3 - norm - relu - conv3x3 - norm, plus the identity, relu. */
#include "resnet.h"

static const cb_module_ops basic_ops = {
    .kind = "BasicBlock",
    .forward = block_forward,
    .init_weights = block_init_weights,
    .lower = block_lower,
};

/* conv2 is never dilated (as upstream); with dcn it is built from the dcn config. */
static int add_layers(cb_module *m, const block_spec *s, char (*paths)[512], cb_error *err) {
  const resnet_cfg *cfg = s->cfg;
  cb_conv_spec c1 = {s->inplanes, s->planes, 3, s->stride, s->dilation, s->dilation, 1, false};
  cb_conv_spec c2 = {s->planes, s->planes, 3, 1, 1, 1, 1, false};
  if (s->dcn && cfg->conv_cfg)
    return cb_fail(err, "%s: must be null when dcn is used (conv_cfg must be None for DCN)",
                   paths[0]);
  if (block_add_conv(m, cfg->conv_cfg, paths[0], "conv1", &c1, err)) return -1;
  if (block_add_norm(m, cfg, paths[1], s->planes, 1, err)) return -1;
  if (block_add_conv(m, s->dcn ? s->dcn : cfg->conv_cfg, s->dcn ? paths[2] : paths[0], "conv2", &c2,
                     err))
    return -1;
  if (block_add_norm(m, cfg, paths[1], s->planes, 2, err)) return -1;
  return block_add_relu(m, cfg->path, err);
}

cb_module *basic_block_new(const block_spec *spec, cb_module *downsample, const char *path,
                           cb_error *err) {
  cb_module *m =
      block_with_layers(&basic_ops, BLOCK_BASIC, spec, downsample, path, add_layers, err);
  if (m && (block_add_plugins(m, spec, AFTER_CONV1, spec->planes, path, err) ||
            block_add_plugins(m, spec, AFTER_CONV2, spec->planes, path, err))) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}
