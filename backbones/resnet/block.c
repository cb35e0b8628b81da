/* What BasicBlock and Bottleneck share: building children through the registries,
 * plugins at a position, the residual sum and the block's init_cfg. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet.h"

int block_expansion(block_type type) {
  return type == BLOCK_BOTTLENECK ? 4 : 1;
}

static cb_module *block_module_new(const cb_module_ops *ops, block_type type, bool zero_init,
                                   cb_error *err) {
  res_block *b = calloc(1, sizeof *b);
  if (!b) {
    cb_fail(err, "%s: out of memory", ops->kind);
    return NULL;
  }
  b->type = type;
  b->zero_init = zero_init;
  cb_module *m = cb_module_new(ops, b, err);
  if (!m) free(b);
  return m;
}

cb_module *block_with_layers(const cb_module_ops *ops, block_type type, const block_spec *spec,
                             cb_module *downsample, const char *path, block_layers_fn add_layers,
                             cb_error *err) {
  char paths[3][512];
  snprintf(paths[0], sizeof paths[0], "%s.conv_cfg", path);
  snprintf(paths[1], sizeof paths[1], "%s.norm_cfg", path);
  snprintf(paths[2], sizeof paths[2], "%s.dcn", path);
  cb_module *m = block_module_new(ops, type, spec->zero_init, err);
  if (!m || add_layers(m, spec, paths, err)) {
    cb_module_free(downsample);
    cb_module_free(m);
    return NULL;
  }
  if (downsample && cb_module_add_child(m, "downsample", downsample, err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

int block_add_conv(cb_module *m, json_t *conv_cfg, const char *path, const char *name,
                   const cb_conv_spec *spec, cb_error *err) {
  cb_module *conv = cb_build_conv(conv_cfg, path, spec, err);
  return conv ? cb_module_add_child(m, name, conv, err) : -1;
}

int block_add_norm(cb_module *m, const resnet_cfg *cfg, const char *path, int channels, int index,
                   cb_error *err) {
  res_block *b = m->impl;
  char postfix[8];
  snprintf(postfix, sizeof postfix, "%d", index);
  cb_module *norm =
      cb_build_norm(cfg->norm_cfg, path, channels, postfix, b->norm[index - 1], RESNET_NAME, err);
  return norm ? cb_module_add_child(m, b->norm[index - 1], norm, err) : -1;
}

cb_module *build_packed(const char *registry, json_t *cfg, const char *path, cb_error *err) {
  if (!cfg) {
    cb_fail(err, "%s: out of memory", path);
    return NULL;
  }
  cb_module *module = cb_build(registry, cfg, NULL, path, err);
  json_decref(cfg);
  return module;
}

cb_module *build_relu(const char *path, cb_error *err) {
  return build_packed("ACTIVATION_LAYERS", json_pack("{s:s, s:b}", "type", "ReLU", "inplace", 1),
                      path, err);
}

int block_add_relu(cb_module *m, const char *path, cb_error *err) {
  cb_module *relu = build_relu(path, err);
  return relu ? cb_module_add_child(m, "relu", relu, err) : -1;
}

static bool plugin_in_stage(json_t *entry, int stage) {
  json_t *stages = json_object_get(entry, "stages");
  return !stages || json_is_null(stages) || json_is_true(json_array_get(stages, (size_t)stage));
}

static bool plugin_at(json_t *entry, plugin_position pos) {
  static const char *const names[] = {"after_conv1", "after_conv2", "after_conv3"};
  const char *p = json_string_value(json_object_get(entry, "position"));
  return p && strcmp(p, names[pos]) == 0;
}

/* The plugin's cfg without "postfix", whose value (string or integer) goes to postfix. */
static json_t *split_postfix(json_t *entry, char *postfix, size_t cap) {
  json_t *cfg = json_deep_copy(json_object_get(entry, "cfg"));
  json_t *v = cfg ? json_object_get(cfg, "postfix") : NULL;
  postfix[0] = '\0';
  if (json_is_string(v)) snprintf(postfix, cap, "%s", json_string_value(v));
  if (json_is_integer(v)) snprintf(postfix, cap, "%lld", (long long)json_integer_value(v));
  if (cfg) json_object_del(cfg, "postfix");
  return cfg;
}

static int add_plugin(cb_module *m, json_t *entry, plugin_position pos, int channels,
                      const char *path, cb_error *err) {
  res_block *b = m->impl;
  char postfix[64], name[RESNET_NAME];
  if (b->n_plugins[pos] == RESNET_MAX_PLUGINS)
    return cb_fail(err, "%s: more than %d plugins at one position", path, RESNET_MAX_PLUGINS);
  json_t *cfg = split_postfix(entry, postfix, sizeof postfix);
  json_t *extra = json_pack("{s:i}", "in_channels", channels);
  cb_module *plugin =
      cfg && extra ? cb_build_plugin(cfg, path, postfix, extra, name, sizeof name, err) : NULL;
  if (!cfg || !extra) cb_fail(err, "%s: out of memory", path);
  json_decref(cfg);
  json_decref(extra);
  if (!plugin) return -1;
  if (cb_module_child(m, name) || cb_module_param(m, name)) {
    cb_module_free(plugin);
    return cb_fail(err, "%s: duplicate plugin %s in one block (give each a different postfix)",
                   path, name);
  }
  snprintf(b->plugins[pos][b->n_plugins[pos]++], RESNET_NAME, "%s", name);
  return cb_module_add_child(m, name, plugin, err);
}

int block_add_plugins(cb_module *m, const block_spec *spec, plugin_position pos, int channels,
                      const char *path, cb_error *err) {
  json_t *plugins = spec->cfg->plugins;
  size_t i;
  json_t *entry;
  char sub[512];
  json_array_foreach(plugins, i, entry) {
    if (!plugin_at(entry, pos) || !plugin_in_stage(entry, spec->stage)) continue;
    snprintf(sub, sizeof sub, "%s.plugins[%zu].cfg", path, i);
    if (add_plugin(m, entry, pos, channels, sub, err)) return -1;
  }
  return 0;
}

/* conv1 .. conv3 for a Bottleneck, conv1 .. conv2 for a BasicBlock. */
static int block_convs(const res_block *b) {
  return b->type == BLOCK_BOTTLENECK ? 3 : 2;
}

static cb_tensor *run_child(cb_module *m, const char *child, cb_tensor *x, cb_error *err) {
  if (!x) return NULL;
  cb_tensor *y = cb_module_forward(cb_module_child(m, child), x, err);
  cb_tensor_free(x);
  return y;
}

/* Plugins at one position run one after the other, each on the previous one's output. */
static cb_tensor *run_plugins(cb_module *m, plugin_position pos, cb_tensor *x, cb_error *err) {
  res_block *b = m->impl;
  for (int i = 0; x && i < b->n_plugins[pos]; i++)
    x = run_child(m, b->plugins[pos][i], x, err);
  return x;
}

/* out += identity (or downsample(x)); relu. */
static cb_tensor *run_residual(cb_module *m, cb_tensor *out, const cb_tensor *x, cb_error *err) {
  if (!out) return NULL;
  cb_module *down = cb_module_child(m, "downsample");
  cb_tensor *identity = down ? cb_module_forward(down, x, err) : NULL;
  int rc = down && !identity ? -1 : cb_add_inplace(out, identity ? identity : x, err);
  cb_tensor_free(identity);
  if (rc) {
    cb_tensor_free(out);
    return NULL;
  }
  cb_relu_inplace(out);
  return out;
}

/* Each conv i: conv, its norm, ReLU (but after the last), the plugins after it; then the
 * residual sum and ReLU. */
cb_tensor *block_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  res_block *b = m->impl;
  int convs = block_convs(b);
  cb_tensor *out = NULL;
  for (int i = 0; i < convs; i++) {
    char conv[8];
    snprintf(conv, sizeof conv, "conv%d", i + 1);
    out =
        i == 0 ? cb_module_forward(cb_module_child(m, conv), x, err) : run_child(m, conv, out, err);
    out = run_child(m, b->norm[i], out, err);
    if (out && i < convs - 1) cb_relu_inplace(out);
    out = run_plugins(m, (plugin_position)i, out, err);
  }
  return run_residual(m, out, x, err);
}

/* The block's init_cfg (zero_init_residual: Constant 0 on its last norm), then its children. */
int block_init_weights(cb_module *m, cb_rng *rng, cb_error *err) {
  res_block *b = m->impl;
  if (b->zero_init) {
    const char *last = b->norm[block_convs(b) - 1];
    json_t *cfg =
        json_pack("{s:s, s:i, s:{s:s}}", "type", "Constant", "val", 0, "override", "name", last);
    int rc = cfg ? cb_init_apply(m, cfg, "zero_init_residual", rng, err)
                 : cb_fail(err, "zero_init_residual: out of memory");
    json_decref(cfg);
    if (rc) return -1;
  }
  for (int i = 0; i < m->n_children; i++)
    if (cb_module_init_weights(m->children[i], rng, err)) return -1;
  return 0;
}

static int lower_plugins(cb_plan_builder *b, cb_module *m, plugin_position pos, int in, int *out,
                         cb_error *err) {
  res_block *blk = m->impl;
  *out = in;
  for (int i = 0; i < blk->n_plugins[pos]; i++)
    if (cb_plan_lower_child(b, m, blk->plugins[pos][i], *out, out, err)) return -1;
  return 0;
}

/* relu(out + identity): the identity (or downsample) path comes after the main path, so the
 * sum can be folded into the main path's last convolution or the downsample's. */
static int lower_residual(cb_plan_builder *b, cb_module *m, int out, int x, int *output,
                          cb_error *err) {
  int identity = x;
  if (cb_module_child(m, "downsample") &&
      cb_plan_lower_child(b, m, "downsample", x, &identity, err))
    return -1;
  int sum;
  if (cb_plan_add(b, out, identity, &sum, err)) return -1;
  return cb_plan_relu(b, sum, output, err);
}

/* block_forward as plan nodes. */
int block_lower(cb_module *m, cb_plan_builder *b, int x, int *output, cb_error *err) {
  res_block *blk = m->impl;
  int convs = block_convs(blk), h = x;
  for (int i = 0; i < convs; i++) {
    char conv[8];
    snprintf(conv, sizeof conv, "conv%d", i + 1);
    if (cb_plan_lower_child(b, m, conv, h, &h, err) ||
        cb_plan_lower_child(b, m, blk->norm[i], h, &h, err) ||
        (i < convs - 1 && cb_plan_relu(b, h, &h, err)) ||
        lower_plugins(b, m, (plugin_position)i, h, &h, err))
      return -1;
  }
  return lower_residual(b, m, h, x, output, err);
}

/* BasicBlock and Bottleneck, the blocks built by this file's helpers. */
bool block_is_builtin(const cb_module *m) {
  return m->ops->init_weights == block_init_weights;
}
