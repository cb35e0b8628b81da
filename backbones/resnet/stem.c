/* The input stem: conv7x7/2 - norm - relu, or (deep_stem) three conv3x3 with norms and relus
 * in a Sequential "stem"; then maxpool 3x3/2. */
#include "resnet.h"

static int add_named(cb_module *m, const char *name, cb_module *child, cb_error *err) {
  return child ? cb_module_add_child(m, name, child, err) : -1;
}

static int add_indexed(cb_module *seq, cb_module *child, cb_error *err) {
  char name[32];
  snprintf(name, sizeof name, "%d", seq->n_children);
  return add_named(seq, name, child, err);
}

/* conv3x3 - norm - relu appended to the stem Sequential. */
static int add_stem_unit(cb_module *seq, const resnet_cfg *cfg, int in, int out, int stride,
                         cb_error *err) {
  char conv_path[512], norm_path[512], name[RESNET_NAME];
  snprintf(conv_path, sizeof conv_path, "%s.conv_cfg", cfg->path);
  snprintf(norm_path, sizeof norm_path, "%s.norm_cfg", cfg->path);
  cb_conv_spec spec = {in, out, 3, stride, 1, 1, 1, false};
  if (add_indexed(seq, cb_build_conv(cfg->conv_cfg, conv_path, &spec, err), err)) return -1;
  if (add_indexed(seq, cb_build_norm(cfg->norm_cfg, norm_path, out, "", name, sizeof name, err),
                  err))
    return -1;
  return add_indexed(seq, build_relu(cfg->path, err), err);
}

static int add_deep_stem(cb_module *m, const resnet_cfg *cfg, cb_error *err) {
  int half = cfg->stem_channels / 2;
  cb_module *seq = cb_sequential_new(err);
  if (!seq) return -1;
  if (add_stem_unit(seq, cfg, cfg->in_channels, half, 2, err) ||
      add_stem_unit(seq, cfg, half, half, 1, err) ||
      add_stem_unit(seq, cfg, half, cfg->stem_channels, 1, err)) {
    cb_module_free(seq);
    return -1;
  }
  return cb_module_add_child(m, "stem", seq, err);
}

static int add_plain_stem(cb_module *m, const resnet_cfg *cfg, char *norm1_name, size_t cap,
                          cb_error *err) {
  char conv_path[512], norm_path[512];
  snprintf(conv_path, sizeof conv_path, "%s.conv_cfg", cfg->path);
  snprintf(norm_path, sizeof norm_path, "%s.norm_cfg", cfg->path);
  cb_conv_spec spec = {cfg->in_channels, cfg->stem_channels, 7, 2, 3, 1, 1, false};
  if (add_named(m, "conv1", cb_build_conv(cfg->conv_cfg, conv_path, &spec, err), err)) return -1;
  cb_module *norm =
      cb_build_norm(cfg->norm_cfg, norm_path, cfg->stem_channels, "1", norm1_name, cap, err);
  if (add_named(m, norm1_name, norm, err)) return -1;
  return add_named(m, "relu", build_relu(cfg->path, err), err);
}

static cb_module *build_max_pool(const char *path, cb_error *err) {
  return build_packed("POOLING_LAYERS",
                      json_pack("{s:s, s:i, s:i, s:i}", "type", "MaxPool2d", "kernel_size", 3,
                                "stride", 2, "padding", 1),
                      path, err);
}

int stem_add(cb_module *m, const resnet_cfg *cfg, char *norm1_name, size_t cap, cb_error *err) {
  norm1_name[0] = '\0';
  int rc =
      cfg->deep_stem ? add_deep_stem(m, cfg, err) : add_plain_stem(m, cfg, norm1_name, cap, err);
  return rc ? -1 : add_named(m, "maxpool", build_max_pool(cfg->path, err), err);
}
