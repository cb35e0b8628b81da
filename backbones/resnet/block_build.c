/* A block of the config's `block` type, built through the RES_BLOCKS registry with the
 * arguments mmseg's ResLayer passes to each block; ResNet then adds its downsample branch as
 * the block's child "downsample". */
#include <string.h>

#include "resnet.h"

static bool in_stage(json_t *entry, int stage) {
  json_t *stages = json_object_get(entry, "stages");
  return !stages || json_is_null(stages) || json_is_true(json_array_get(stages, (size_t)stage));
}

/* make_stage_plugins: this stage's plugins entries without "stages"; null when the backbone
 * has no plugins. */
static json_t *stage_plugins(const resnet_cfg *cfg, int stage) {
  if (!cfg->plugins) return json_null();
  json_t *out = json_array();
  size_t i;
  json_t *entry;
  json_array_foreach(cfg->plugins, i, entry) {
    if (!out) break;
    if (!in_stage(entry, stage)) continue;
    json_t *copy = json_deep_copy(entry);
    if (copy) json_object_del(copy, "stages");
    if (!copy || json_array_append_new(out, copy)) {
      json_decref(out);
      out = NULL;
    }
  }
  return out;
}

/* ResNeXt's Bottleneck arguments, passed only when the convolutions are grouped. */
static int add_groups(json_t *d, const resnet_cfg *cfg) {
  if (cfg->groups == 1) return 0;
  return json_object_set_new(d, "groups", json_integer(cfg->groups)) ||
         json_object_set_new(d, "base_width", json_integer(cfg->base_width)) ||
         json_object_set_new(d, "base_channels", json_integer(cfg->base_channels));
}

/* The keys every block receives; the built-in ones also take zero_init_residual (mmseg gives
 * only BasicBlock and Bottleneck the zero init of their last norm). */
static json_t *block_defaults(const block_spec *s) {
  const resnet_cfg *cfg = s->cfg;
  json_t *plugins = stage_plugins(cfg, s->stage);
  json_t *d =
      plugins ? json_pack("{s:i, s:i, s:i, s:i, s:i, s:s, s:O?, s:O, s:O?, s:O, s:b}", "inplanes",
                          s->inplanes, "planes", s->planes, "expansion", cfg->expansion, "stride",
                          s->stride, "dilation", s->dilation, "style",
                          cfg->caffe ? "caffe" : "pytorch", "conv_cfg", cfg->conv_cfg, "norm_cfg",
                          cfg->norm_cfg, "dcn", s->dcn, "plugins", plugins, "with_cp", cfg->with_cp)
              : NULL;
  json_decref(plugins);
  if (d && (add_groups(d, cfg) ||
            (cfg->builtin_block &&
             json_object_set_new(d, "zero_init_residual", json_boolean(s->zero_init))))) {
    json_decref(d);
    d = NULL;
  }
  return d;
}

/* Moves the last child to index to. */
static void move_last_child(cb_module *m, int to) {
  int last = m->n_children - 1;
  char *name = m->child_names[last];
  cb_module *child = m->children[last];
  memmove(&m->child_names[to + 1], &m->child_names[to],
          (size_t)(last - to) * sizeof *m->child_names);
  memmove(&m->children[to + 1], &m->children[to], (size_t)(last - to) * sizeof *m->children);
  m->child_names[to] = name;
  m->children[to] = child;
}

/* mmseg's blocks assign downsample right after relu, before their plugins: the built-in ones
 * keep that state-dict order. */
static int adopt_downsample(cb_module *m, cb_module *down, const char *path, cb_error *err) {
  if (cb_module_child(m, "downsample") || cb_module_param(m, "downsample")) {
    cb_module_free(down);
    return cb_fail(err,
                   "%s: block type '%s' has its own 'downsample', a name ResNet gives the "
                   "downsample branch it adds to the block",
                   path, cb_module_kind(m));
  }
  if (cb_module_add_child(m, "downsample", down, err)) return -1;
  if (!block_is_builtin(m)) return 0;
  for (int i = 0; i < m->n_children - 1; i++)
    if (strcmp(m->child_names[i], "relu") == 0) move_last_child(m, i + 1);
  return 0;
}

cb_module *registered_block_new(const block_spec *spec, cb_module *downsample, cb_error *err) {
  char path[600];
  snprintf(path, sizeof path, "%s.block", spec->cfg->path);
  json_t *cfg = json_deep_copy(spec->cfg->block);
  json_t *defaults = block_defaults(spec);
  cb_module *m = NULL;
  if (cfg && defaults) {
    json_object_del(cfg, "stage_blocks");
    m = cb_build("RES_BLOCKS", cfg, defaults, path, err);
  } else {
    cb_fail(err, "%s: out of memory", path);
  }
  json_decref(cfg);
  json_decref(defaults);
  if (!m) {
    cb_module_free(downsample);
    return NULL;
  }
  if (downsample && adopt_downsample(m, downsample, path, err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}
