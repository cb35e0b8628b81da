/* mmseg's ResNet backbone (ResNetV1b), registered as BACKBONES "ResNet". */
#include <stdlib.h>
#include <string.h>

#include "resnet.h"

typedef struct resnet {
  int num_stages, frozen_stages;
  bool out_index[RESNET_MAX_STAGES];
  bool deep_stem, norm_eval;
  char norm1[RESNET_NAME];
  json_t *init_cfg; /* NULL: mmseg's default initialisation */
  char *init_path;  /* names init_cfg in messages */
} resnet;

static void resnet_destroy(void *impl) {
  resnet *r = impl;
  if (!r) return;
  json_decref(r->init_cfg);
  free(r->init_path);
  free(r);
}

static cb_module *layer(const cb_module *m, int stage) {
  char name[32];
  snprintf(name, sizeof name, "layer%d", stage + 1);
  return cb_module_child(m, name);
}

static cb_tensor *run(cb_module *m, const char *child, cb_tensor *x, cb_error *err) {
  if (!x) return NULL;
  cb_tensor *y = cb_module_forward(cb_module_child(m, child), x, err);
  cb_tensor_free(x);
  return y;
}

static cb_tensor *stem_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  resnet *r = m->impl;
  cb_tensor *h;
  if (r->deep_stem) {
    h = cb_module_forward(cb_module_child(m, "stem"), x, err);
  } else {
    h = run(m, r->norm1, cb_module_forward(cb_module_child(m, "conv1"), x, err), err);
    if (h) cb_relu_inplace(h);
  }
  return run(m, "maxpool", h, err);
}

/* Outputs of the out_indices stages, in stage order. */
static int resnet_forward_multi(cb_module *m, const cb_tensor *x, cb_tensor_list *outs,
                                cb_error *err) {
  resnet *r = m->impl;
  cb_tensor *h = stem_forward(m, x, err);
  bool listed = false; /* h is owned by outs */
  for (int i = 0; h && i < r->num_stages; i++) {
    cb_tensor *next = cb_module_forward(layer(m, i), h, err);
    if (!listed) cb_tensor_free(h);
    h = next;
    listed = false;
    if (h && r->out_index[i]) {
      if (cb_tensor_list_push(outs, h, err)) return -1;
      listed = true;
    }
  }
  if (!h) return -1;
  if (!listed) cb_tensor_free(h);
  return 0;
}

static void freeze(cb_module *m) {
  if (!m) return;
  cb_module_train(m, false);
  cb_module_set_requires_grad(m, false);
}

/* _freeze_stages: the 7x7 stem switches only its norm to eval (conv1 just stops grads). */
static void freeze_stages(cb_module *m) {
  resnet *r = m->impl;
  if (r->frozen_stages >= 0) {
    if (r->deep_stem) {
      freeze(cb_module_child(m, "stem"));
    } else {
      freeze(cb_module_child(m, r->norm1));
      cb_module_set_requires_grad(cb_module_child(m, "conv1"), false);
    }
  }
  for (int i = 0; i < r->frozen_stages; i++)
    freeze(layer(m, i));
}

static int batch_norm_to_eval(const char *name, cb_module *m, void *ud) {
  (void)name;
  (void)ud;
  if (cb_module_is(m, "_BatchNorm")) cb_module_train(m, false);
  return 0;
}

static void resnet_train(cb_module *m, bool mode) {
  resnet *r = m->impl;
  cb_module_train_default(m, mode);
  freeze_stages(m);
  if (mode && r->norm_eval) cb_module_visit(m, batch_norm_to_eval, NULL);
}

static bool is_pretrained(json_t *entry) {
  const char *type = json_string_value(json_object_get(entry, "type"));
  return type && strcmp(type, "Pretrained") == 0;
}

/* Entries of init_cfg that are (want_pretrained) or are not Pretrained, in order. */
static int apply_init_entries(cb_module *m, json_t *init_cfg, const char *path,
                              bool want_pretrained, cb_rng *rng, cb_error *err) {
  if (!json_is_array(init_cfg))
    return is_pretrained(init_cfg) == want_pretrained ? cb_init_apply(m, init_cfg, path, rng, err)
                                                      : 0;
  size_t i;
  json_t *entry;
  char sub[512];
  json_array_foreach(init_cfg, i, entry) {
    if (is_pretrained(entry) != want_pretrained) continue;
    snprintf(sub, sizeof sub, "%s[%zu]", path, i);
    if (cb_init_apply(m, entry, sub, rng, err)) return -1;
  }
  return 0;
}

/* mmseg's default: Kaiming on Conv2d, Constant 1 on _BatchNorm and GroupNorm. */
static json_t *default_init_cfg(void) {
  return json_pack("[{s:s, s:s}, {s:s, s:i, s:[s, s]}]", "type", "Kaiming", "layer", "Conv2d",
                   "type", "Constant", "val", 1, "layer", "_BatchNorm", "GroupNorm");
}

/* As mmengine's BaseModule.init_weights: init_cfg (all but Pretrained), the children (the
 * blocks apply zero_init_residual), then Pretrained. */
static int resnet_init_weights(cb_module *m, cb_rng *rng, cb_error *err) {
  resnet *r = m->impl;
  json_t *cfg = r->init_cfg ? json_incref(r->init_cfg) : default_init_cfg();
  if (!cfg) return cb_fail(err, "%s: out of memory", r->init_path);
  int rc = apply_init_entries(m, cfg, r->init_path, false, rng, err);
  for (int i = 0; !rc && i < m->n_children; i++)
    rc = cb_module_init_weights(m->children[i], rng, err);
  if (!rc) rc = apply_init_entries(m, cfg, r->init_path, true, rng, err);
  json_decref(cfg);
  return rc;
}

/* Stem, max pool and stages; the out_indices stages are the plan's outputs. */
static int resnet_lower(cb_module *m, cb_plan_builder *b, int x, int *output, cb_error *err) {
  resnet *r = m->impl;
  int h;
  if (r->deep_stem) {
    if (cb_plan_lower_child(b, m, "stem", x, &h, err)) return -1;
  } else if (cb_plan_lower_child(b, m, "conv1", x, &h, err) ||
             cb_plan_lower_child(b, m, r->norm1, h, &h, err) || cb_plan_relu(b, h, &h, err)) {
    return -1;
  }
  if (cb_plan_lower_child(b, m, "maxpool", h, &h, err)) return -1;
  for (int i = 0; i < r->num_stages; i++) {
    char name[32];
    snprintf(name, sizeof name, "layer%d", i + 1);
    if (cb_plan_lower_child(b, m, name, h, &h, err)) return -1;
    if (r->out_index[i] && cb_plan_mark_output(b, h, err)) return -1;
  }
  *output = h;
  return 0;
}

static const char *const resnet_bases[] = {"BaseModule", NULL};

static const cb_module_ops resnet_ops = {
    .kind = "ResNet",
    .bases = resnet_bases,
    .forward_multi = resnet_forward_multi,
    .train = resnet_train,
    .init_weights = resnet_init_weights,
    .destroy = resnet_destroy,
    .lower = resnet_lower,
};

static json_t *pretrained_init_cfg(const char *checkpoint) {
  return json_pack("{s:s, s:s}", "type", "Pretrained", "checkpoint", checkpoint);
}

static resnet *resnet_impl_new(const resnet_cfg *cfg, cb_error *err) {
  resnet *r = calloc(1, sizeof *r);
  char path[512];
  snprintf(path, sizeof path, "%s.%s", cfg->path, cfg->pretrained ? "pretrained" : "init_cfg");
  if (r) {
    r->num_stages = cfg->num_stages;
    r->frozen_stages = cfg->frozen_stages;
    memcpy(r->out_index, cfg->out_index, sizeof r->out_index);
    r->deep_stem = cfg->deep_stem;
    r->norm_eval = cfg->norm_eval;
    r->init_path = strdup(path);
    if (cfg->pretrained)
      r->init_cfg = pretrained_init_cfg(cfg->pretrained);
    else if (cfg->init_cfg)
      r->init_cfg = json_deep_copy(cfg->init_cfg);
  }
  if (!r || !r->init_path || ((cfg->pretrained || cfg->init_cfg) && !r->init_cfg)) {
    resnet_destroy(r);
    cb_fail(err, "%s: out of memory", cfg->path);
    return NULL;
  }
  return r;
}

static int add_layers(cb_module *m, const resnet_cfg *cfg, cb_error *err) {
  int inplanes = cfg->stem_channels;
  bool dcn_used = false;
  for (int i = 0; i < cfg->num_stages; i++) {
    char name[32];
    snprintf(name, sizeof name, "layer%d", i + 1);
    cb_module *res_layer = res_layer_new(cfg, i, inplanes, &dcn_used, err);
    if (!res_layer || cb_module_add_child(m, name, res_layer, err)) return -1;
    inplanes = (cfg->base_channels << i) * cfg->expansion;
  }
  return 0;
}

static cb_module *resnet_new(const resnet_cfg *cfg, cb_error *err) {
  resnet *r = resnet_impl_new(cfg, err);
  if (!r) return NULL;
  cb_module *m = cb_module_new(&resnet_ops, r, err);
  if (!m) {
    resnet_destroy(r);
    return NULL;
  }
  if (stem_add(m, cfg, r->norm1, sizeof r->norm1, err) || add_layers(m, cfg, err)) {
    cb_module_free(m);
    return NULL;
  }
  freeze_stages(m);
  return m;
}

static cb_module *build_resnet(cb_args *args, cb_error *err) {
  resnet_cfg cfg;
  json_t *owned_norm = NULL;
  cb_module *m = NULL;
  if (resnet_cfg_read(args, &cfg, &owned_norm, err) == 0) {
    if (cfg.pretrained)
      cb_warn("%s.pretrained: DeprecationWarning: pretrained is a deprecated, please use "
              "\"init_cfg\" instead",
              cfg.path);
    m = resnet_new(&cfg, err);
  }
  json_decref(owned_norm);
  return m;
}

static const cb_plugin_entry entries[] = {
    {"BACKBONES", "ResNet", build_resnet, NULL},
    {"RES_BLOCKS", "BasicBlock", build_basic_block_entry, NULL},
    {"RES_BLOCKS", "Bottleneck", build_bottleneck_entry, NULL},
    {NULL},
};
CB_PLUGIN("resnet", "mmseg's ResNet (V1b) backbone with BasicBlock / Bottleneck", entries);
