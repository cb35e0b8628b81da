/* Bottleneck: conv1x1 - conv3x3 - conv1x1 (x4 channels), each with a norm; the stride sits on
 * the 3x3 conv ("pytorch") or on the first 1x1 conv ("caffe"). */
#include "resnet.h"

static const cb_module_ops bottleneck_ops = {
    .kind = "Bottleneck",
    .forward = block_forward,
    .init_weights = block_init_weights,
    .lower = block_lower,
};

/* The channels of conv1/conv2: planes, or ResNeXt's grouped width (at least groups, since
 * planes >= base_channels). */
static int bottleneck_width(const block_spec *s) {
  const resnet_cfg *cfg = s->cfg;
  if (cfg->groups == 1) return s->planes;
  return (int)((long long)s->planes * cfg->base_width / cfg->base_channels) * cfg->groups;
}

static int add_layers(cb_module *m, const block_spec *s, char (*paths)[512], cb_error *err) {
  const resnet_cfg *cfg = s->cfg;
  int conv1_stride = cfg->caffe ? s->stride : 1, conv2_stride = cfg->caffe ? 1 : s->stride;
  int width = bottleneck_width(s);
  cb_conv_spec c1 = {s->inplanes, width, 1, conv1_stride, 0, 1, 1, false};
  cb_conv_spec c2 = {width, width, 3, conv2_stride, s->dilation, s->dilation, cfg->groups, false};
  cb_conv_spec c3 = {width, s->planes * 4, 1, 1, 0, 1, 1, false};
  if (s->dcn && cfg->conv_cfg)
    return cb_fail(err, "%s: must be null when dcn is used (conv_cfg must be None for DCN)",
                   paths[0]);
  if (block_add_conv(m, cfg->conv_cfg, paths[0], "conv1", &c1, err)) return -1;
  if (block_add_norm(m, cfg, paths[1], width, 1, err)) return -1;
  if (block_add_conv(m, s->dcn ? s->dcn : cfg->conv_cfg, s->dcn ? paths[2] : paths[0], "conv2", &c2,
                     err))
    return -1;
  if (block_add_norm(m, cfg, paths[1], width, 2, err)) return -1;
  if (block_add_conv(m, cfg->conv_cfg, paths[0], "conv3", &c3, err)) return -1;
  if (block_add_norm(m, cfg, paths[1], s->planes * 4, 3, err)) return -1;
  return block_add_relu(m, cfg->path, err);
}

cb_module *bottleneck_new(const block_spec *spec, cb_module *downsample, const char *path,
                          cb_error *err) {
  cb_module *m =
      block_with_layers(&bottleneck_ops, BLOCK_BOTTLENECK, spec, downsample, path, add_layers, err);
  if (m && (block_add_plugins(m, spec, AFTER_CONV1, bottleneck_width(spec), path, err) ||
            block_add_plugins(m, spec, AFTER_CONV2, bottleneck_width(spec), path, err) ||
            block_add_plugins(m, spec, AFTER_CONV3, spec->planes * 4, path, err))) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}
