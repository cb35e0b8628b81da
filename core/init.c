#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cbrick/init.h"
#include "cbrick/io.h"
#include "cbrick/checkpoint.h"
#include "cbrick/args.h"
#include "weights_internal.h"

/* ---- random numbers: PCG32 (O'Neill), seeded as pcg32_srandom ---- */

#define PCG_MULT 6364136223846793005ULL
#define PCG_STREAM 0xda3e39cb94b95bdbULL

void cb_rng_seed(cb_rng *rng, uint64_t seed) {
  rng->state = 0;
  rng->inc = (PCG_STREAM << 1u) | 1u;
  cb_rng_u32(rng);
  rng->state += seed;
  cb_rng_u32(rng);
}

uint32_t cb_rng_u32(cb_rng *rng) {
  uint64_t old = rng->state;
  rng->state = old * PCG_MULT + rng->inc;
  uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
  uint32_t rot = (uint32_t)(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

double cb_rng_uniform(cb_rng *rng) {
  uint64_t hi = cb_rng_u32(rng) >> 5, lo = cb_rng_u32(rng) >> 6;
  return (double)(hi * 67108864ULL + lo) / 9007199254740992.0;
}

double cb_rng_normal(cb_rng *rng) {
  double u1 = 1.0 - cb_rng_uniform(rng); /* (0, 1] keeps log finite */
  double u2 = cb_rng_uniform(rng);
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* ---- initialisers on one tensor ---- */

static int64_t f32_count(const cb_tensor *t) {
  return t && t->dtype == CB_F32 ? cb_tensor_numel(t) : 0;
}

void cb_init_constant(cb_tensor *t, float value) {
  int64_t n = f32_count(t);
  for (int64_t i = 0; i < n; i++)
    cb_f32(t)[i] = value;
}

void cb_init_normal(cb_tensor *t, double mean, double std, cb_rng *rng) {
  int64_t n = f32_count(t);
  for (int64_t i = 0; i < n; i++)
    cb_f32(t)[i] = (float)(mean + std * cb_rng_normal(rng));
}

void cb_init_uniform(cb_tensor *t, double a, double b, cb_rng *rng) {
  int64_t n = f32_count(t);
  for (int64_t i = 0; i < n; i++)
    cb_f32(t)[i] = (float)(a + (b - a) * cb_rng_uniform(rng));
}

/* PyTorch's _calculate_fan_in_and_fan_out; tensors under 2-D use their length for both. */
static void fans(const cb_tensor *t, double *fan_in, double *fan_out) {
  if (t->ndim < 2) {
    *fan_in = *fan_out = (double)cb_tensor_numel(t);
    return;
  }
  double receptive = 1;
  for (int i = 2; i < t->ndim; i++)
    receptive *= (double)t->shape[i];
  *fan_in = (double)t->shape[1] * receptive;
  *fan_out = (double)t->shape[0] * receptive;
}

/* torch.nn.init.calculate_gain; -1 for an unknown nonlinearity. */
static double nonlinearity_gain(const char *name, double a) {
  static const char *const unit[] = {"linear",           "conv1d",           "conv2d",
                                     "conv3d",           "conv_transpose1d", "conv_transpose2d",
                                     "conv_transpose3d", "sigmoid"};
  for (size_t i = 0; i < sizeof unit / sizeof *unit; i++)
    if (strcmp(name, unit[i]) == 0) return 1.0;
  if (strcmp(name, "tanh") == 0) return 5.0 / 3.0;
  if (strcmp(name, "relu") == 0) return sqrt(2.0);
  if (strcmp(name, "leaky_relu") == 0) return sqrt(2.0 / (1.0 + a * a));
  if (strcmp(name, "selu") == 0) return 0.75;
  return -1.0;
}

static void init_scaled(cb_tensor *t, double std, bool uniform, cb_rng *rng) {
  if (uniform) {
    double bound = sqrt(3.0) * std;
    cb_init_uniform(t, -bound, bound, rng);
  } else {
    cb_init_normal(t, 0.0, std, rng);
  }
}

void cb_init_kaiming(cb_tensor *t, double a, bool fan_out, const char *nonlinearity, bool uniform,
                     cb_rng *rng) {
  if (!f32_count(t)) return;
  double fan_in, fan_o;
  fans(t, &fan_in, &fan_o);
  double gain = nonlinearity_gain(nonlinearity ? nonlinearity : "leaky_relu", a);
  if (gain < 0) gain = 1.0;
  init_scaled(t, gain / sqrt(fan_out ? fan_o : fan_in), uniform, rng);
}

void cb_init_xavier(cb_tensor *t, double gain, bool uniform, cb_rng *rng) {
  if (!f32_count(t)) return;
  double fan_in, fan_out;
  fans(t, &fan_in, &fan_out);
  init_scaled(t, gain * sqrt(2.0 / (fan_in + fan_out)), uniform, rng);
}

/* ---- init_cfg ---- */

typedef enum init_kind {
  INIT_CONSTANT,
  INIT_NORMAL,
  INIT_UNIFORM,
  INIT_KAIMING,
  INIT_XAVIER,
  INIT_PRETRAINED
} init_kind;

#define MAX_INIT_LAYERS 16

typedef struct initializer {
  init_kind kind;
  double val, mean, std, a, b, gain, bias;
  bool fan_out, uniform;
  const char *nonlinearity;
  const char *checkpoint, *prefix;
  json_t *revise_keys; /* borrowed; NULL: mmengine's default */
  int n_layers;
  const char *layers[MAX_INIT_LAYERS];
} initializer;

static const char *const init_types[] = {"Constant", "Normal",       "Uniform",   "Kaiming",
                                         "Xavier",   "Caffe2Xavier", "Pretrained"};

static int read_layers(cb_args *a, initializer *in, cb_error *err) {
  json_t *v = cb_args_value(a, "layer");
  in->n_layers = 0;
  if (!v || json_is_null(v)) return 0;
  if (json_is_string(v)) {
    in->layers[in->n_layers++] = json_string_value(v);
    return 0;
  }
  if (!json_is_array(v))
    return cb_args_fail(a, "layer", err, "expected a class name or a list of them");
  if (json_array_size(v) > MAX_INIT_LAYERS)
    return cb_args_fail(a, "layer", err, "expected at most %d names", MAX_INIT_LAYERS);
  size_t i;
  json_t *item;
  json_array_foreach(v, i, item) {
    if (!json_is_string(item))
      return cb_args_fail(a, "layer", err, "item %zu: expected a class name", i);
    in->layers[in->n_layers++] = json_string_value(item);
  }
  return 0;
}

static int read_bias(cb_args *a, initializer *in, cb_error *err) {
  double prob;
  if (cb_args_double(a, "bias", 0.0, &in->bias, err)) return -1;
  if (!cb_args_has(a, "bias_prob")) return cb_args_double(a, "bias_prob", 0.0, &prob, err);
  if (cb_args_double(a, "bias_prob", 0.0, &prob, err)) return -1;
  if (!(prob > 0.0 && prob < 1.0))
    return cb_args_fail(a, "bias_prob", err, "expected a probability in (0, 1), found %g", prob);
  in->bias = -log((1.0 - prob) / prob);
  return 0;
}

static int read_choice(cb_args *a, const char *key, const char *def, const char *one,
                       const char *other, bool *is_other, cb_error *err) {
  const char *s;
  if (cb_args_string(a, key, def, &s, err)) return -1;
  if (strcmp(s, one) != 0 && strcmp(s, other) != 0)
    return cb_args_fail(a, key, err, "expected '%s' or '%s', found '%s'", one, other, s);
  *is_other = strcmp(s, other) == 0;
  return 0;
}

static int read_kaiming(cb_args *a, initializer *in, bool caffe2, cb_error *err) {
  if (caffe2) {
    in->a = 1.0;
    in->fan_out = false;
    in->nonlinearity = "leaky_relu";
    in->uniform = true;
    return 0;
  }
  if (cb_args_double(a, "a", 0.0, &in->a, err)) return -1;
  if (read_choice(a, "mode", "fan_out", "fan_in", "fan_out", &in->fan_out, err)) return -1;
  if (cb_args_string(a, "nonlinearity", "relu", &in->nonlinearity, err)) return -1;
  if (nonlinearity_gain(in->nonlinearity, in->a) < 0)
    return cb_args_fail(a, "nonlinearity", err, "unknown nonlinearity '%s'", in->nonlinearity);
  return read_choice(a, "distribution", "normal", "normal", "uniform", &in->uniform, err);
}

/* revise_keys: a list of [pattern, replacement] string pairs (null: the default). */
static int read_revise_keys(cb_args *a, initializer *in, cb_error *err) {
  json_t *v = cb_args_value(a, "revise_keys");
  in->revise_keys = v && !json_is_null(v) ? v : NULL;
  if (!in->revise_keys) return 0;
  if (!json_is_array(v))
    return cb_args_fail(a, "revise_keys", err, "expected a list of [pattern, replacement] pairs");
  size_t i;
  json_t *pair;
  json_array_foreach(v, i, pair) {
    if (!json_is_array(pair) || json_array_size(pair) != 2)
      return cb_fail(err, "%s.revise_keys[%zu]: expected [pattern, replacement]", cb_args_path(a),
                     i);
    for (size_t k = 0; k < 2; k++)
      if (!json_is_string(json_array_get(pair, k)))
        return cb_fail(err, "%s.revise_keys[%zu][%zu]: expected a string", cb_args_path(a), i, k);
  }
  return 0;
}

static int read_kind_args(cb_args *a, const char *type, initializer *in, cb_error *err) {
  if (strcmp(type, "Constant") == 0) {
    in->kind = INIT_CONSTANT;
    return cb_args_has(a, "val") ? cb_args_double(a, "val", 0.0, &in->val, err)
                                 : cb_args_fail(a, "val", err, "required by Constant, but missing");
  }
  if (strcmp(type, "Normal") == 0) {
    in->kind = INIT_NORMAL;
    if (cb_args_double(a, "mean", 0.0, &in->mean, err)) return -1;
    return cb_args_double(a, "std", 1.0, &in->std, err);
  }
  if (strcmp(type, "Uniform") == 0) {
    in->kind = INIT_UNIFORM;
    if (cb_args_double(a, "a", 0.0, &in->a, err)) return -1;
    return cb_args_double(a, "b", 1.0, &in->b, err);
  }
  if (strcmp(type, "Kaiming") == 0 || strcmp(type, "Caffe2Xavier") == 0) {
    in->kind = INIT_KAIMING;
    return read_kaiming(a, in, strcmp(type, "Caffe2Xavier") == 0, err);
  }
  if (strcmp(type, "Xavier") == 0) {
    in->kind = INIT_XAVIER;
    if (cb_args_double(a, "gain", 1.0, &in->gain, err)) return -1;
    return read_choice(a, "distribution", "normal", "normal", "uniform", &in->uniform, err);
  }
  in->kind = INIT_PRETRAINED;
  cb_args_value(a, "map_location");
  if (cb_args_string(a, "checkpoint", NULL, &in->checkpoint, err)) return -1;
  if (!in->checkpoint) return cb_args_fail(a, "checkpoint", err, "required, but missing");
  if (read_revise_keys(a, in, err)) return -1;
  return cb_args_string(a, "prefix", NULL, &in->prefix, err);
}

static int read_type(cb_args *a, const char **type, cb_error *err) {
  int n = (int)(sizeof init_types / sizeof *init_types);
  if (cb_args_string(a, "type", NULL, type, err)) return -1;
  if (!*type) return cb_args_fail(a, "type", err, "required, but missing");
  for (int i = 0; i < n; i++)
    if (strcmp(*type, init_types[i]) == 0) return 0;
  const char *hint = cb_closest_name(*type, init_types, n);
  return cb_args_fail(a, "type", err,
                      "unknown initializer '%s'%s%s%s (known: Constant, Normal, Uniform, "
                      "Kaiming, Xavier, Caffe2Xavier, Pretrained)",
                      *type, hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
}

/* Reads one init_cfg entry (without its override) into in; strings stay borrowed from cfg. */
static int parse_initializer(json_t *cfg, const char *path, initializer *in, cb_error *err) {
  cb_args *a = cb_args_new(cfg, path, err);
  if (!a) return -1;
  const char *type;
  memset(in, 0, sizeof *in);
  cb_args_value(a, "override");
  int rc = read_type(a, &type, err);
  if (!rc) rc = read_layers(a, in, err);
  if (!rc) rc = read_bias(a, in, err);
  if (!rc) rc = read_kind_args(a, type, in, err);
  if (!rc) rc = cb_args_finish(a, err);
  cb_args_free(a);
  return rc;
}

static void init_tensor(const initializer *in, cb_tensor *t, cb_rng *rng) {
  switch (in->kind) {
  case INIT_CONSTANT:
    cb_init_constant(t, (float)in->val);
    break;
  case INIT_NORMAL:
    cb_init_normal(t, in->mean, in->std, rng);
    break;
  case INIT_UNIFORM:
    cb_init_uniform(t, in->a, in->b, rng);
    break;
  case INIT_KAIMING:
    cb_init_kaiming(t, in->a, in->fan_out, in->nonlinearity, in->uniform, rng);
    break;
  case INIT_XAVIER:
    cb_init_xavier(t, in->gain, in->uniform, rng);
    break;
  case INIT_PRETRAINED:
    break;
  }
}

/* mmcv's constant_init / normal_init / ...: the module's own weight, then its bias. */
static void init_module(const initializer *in, cb_module *m, cb_rng *rng) {
  cb_param *w = cb_module_param(m, "weight");
  cb_param *b = cb_module_param(m, "bias");
  if (w && !w->is_buffer) init_tensor(in, w->tensor, rng);
  if (b && !b->is_buffer) cb_init_constant(b->tensor, (float)in->bias);
}

static bool matches_layer(const initializer *in, const cb_module *m) {
  for (int i = 0; i < in->n_layers; i++)
    if (cb_module_is(m, in->layers[i])) return true;
  return false;
}

/* nn.Module.apply order: children first, then the module itself. */
static void apply_tree(const initializer *in, cb_module *m, bool whole, cb_rng *rng) {
  for (int i = 0; i < m->n_children; i++)
    apply_tree(in, m->children[i], whole, rng);
  if (whole || matches_layer(in, m)) init_module(in, m, rng);
}

/* The checkpoint's keys after revise_keys (mmengine's default strips a leading `module.`),
 * as views of file's tensors. */
static cb_weights *revise_keys(const initializer *in, const cb_weights *file, const char *path,
                               cb_error *err) {
  static const cb_key_rule module_rule = {"^module\\.", ""};
  if (!in->revise_keys) {
    cb_weights *w = cb_weights_revise(file, &module_rule, 1, true, err);
    if (!w) cb_error_prefix(err, "%s: default ", path);
    return w;
  }
  int n = (int)json_array_size(in->revise_keys);
  cb_key_rule *rules = calloc((size_t)n + 1, sizeof *rules);
  if (!rules) {
    cb_fail(err, "%s.revise_keys: out of memory", path);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    json_t *pair = json_array_get(in->revise_keys, (size_t)i);
    rules[i].pattern = json_string_value(json_array_get(pair, 0));
    rules[i].replacement = json_string_value(json_array_get(pair, 1));
  }
  cb_weights *w = cb_weights_revise(file, rules, n, true, err);
  free(rules);
  if (!w) cb_error_prefix(err, "%s.", path);
  return w;
}

/* Only the `prefix.` keys of w, stripped, as views of w's tensors. */
static cb_weights *select_prefix(const initializer *in, const cb_weights *w, const char *path,
                                 cb_error *err) {
  cb_weights *out = cb_weights_new(err);
  size_t plen = strlen(in->prefix);
  int kept = 0;
  for (int i = 0; out && i < cb_weights_count(w); i++) {
    const char *name = cb_weights_name(w, i);
    if (strncmp(name, in->prefix, plen) != 0 || name[plen] != '.') continue;
    if (cb_weights_add_borrowed(out, name + plen + 1, cb_weights_tensor(w, i), err)) {
      cb_weights_free(out);
      return NULL;
    }
    kept++;
  }
  if (out && !kept) {
    cb_weights_free(out);
    cb_fail(err, "%s.prefix: no key of the checkpoint starts with '%s.'%s", path, in->prefix,
            in->revise_keys ? " (after revise_keys)" : "");
    return NULL;
  }
  return out;
}

/* The file's tensors are never copied on the way: revised and selected keys share them. */
static int load_pretrained(const initializer *in, cb_module *m, const char *path, cb_error *err) {
  cb_weights *file = cb_checkpoint_read(in->checkpoint, err);
  if (!file) return cb_error_prefix(err, "%s.checkpoint: ", path);
  cb_weights *revised = revise_keys(in, file, path, err);
  cb_weights *w = revised && in->prefix ? select_prefix(in, revised, path, err) : revised;
  int rc = w ? cb_module_load_weights(m, w, NULL, false, stderr, err) : -1;
  if (w && rc) cb_error_prefix(err, "%s: loading '%s': ", path, in->checkpoint);
  if (w != revised) cb_weights_free(w);
  cb_weights_free(revised);
  cb_weights_free(file);
  return rc ? -1 : 0;
}

/* A copy of cfg without the listed keys. */
static json_t *without_keys(json_t *cfg, const char *k1, const char *k2) {
  json_t *copy = json_deep_copy(cfg);
  if (copy) {
    json_object_del(copy, k1);
    if (k2) json_object_del(copy, k2);
  }
  return copy;
}

static int child_missing(cb_module *m, const char *name, const char *path, cb_error *err) {
  const char *hint = cb_closest_name(name, (const char *const *)m->child_names, m->n_children);
  return cb_fail(err, "%s.name: the module has no child '%s'%s%s%s", path, name,
                 hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
}

/* One override entry: its own initializer, or the outer one when it has only `name`,
 * applied to the whole named child. */
static int apply_override(cb_module *m, json_t *entry, json_t *outer, const char *path, cb_rng *rng,
                          cb_error *err) {
  if (!json_is_object(entry)) return cb_fail(err, "%s: expected an object with \"name\"", path);
  const char *name = json_string_value(json_object_get(entry, "name"));
  if (!name) return cb_fail(err, "%s: `override` must contain the key \"name\"", path);
  json_t *own = without_keys(entry, "name", NULL);
  if (!own) return cb_fail(err, "%s: out of memory", path);
  if (json_object_size(own) == 0) {
    json_decref(own);
    own = without_keys(outer, "override", "layer");
  } else if (!json_object_get(own, "type")) {
    json_decref(own);
    return cb_fail(err, "%s: `override` needs a \"type\" besides \"name\"", path);
  }
  cb_module *child = cb_module_child(m, name);
  initializer in = {.kind = INIT_CONSTANT};
  int rc = !own     ? cb_fail(err, "%s: out of memory", path)
           : !child ? child_missing(m, name, path, err)
                    : parse_initializer(own, path, &in, err);
  if (!rc && in.kind == INIT_PRETRAINED)
    rc = load_pretrained(&in, child, path, err);
  else if (!rc)
    apply_tree(&in, child, true, rng);
  json_decref(own);
  return rc;
}

static int apply_overrides(cb_module *m, json_t *cfg, const char *path, cb_rng *rng,
                           cb_error *err) {
  json_t *ov = json_object_get(cfg, "override");
  char sub[512];
  if (!ov || json_is_null(ov)) return 0;
  if (json_is_object(ov)) {
    snprintf(sub, sizeof sub, "%s.override", path);
    return apply_override(m, ov, cfg, sub, rng, err);
  }
  if (!json_is_array(ov)) return cb_fail(err, "%s.override: expected an object or a list", path);
  size_t i;
  json_t *entry;
  json_array_foreach(ov, i, entry) {
    snprintf(sub, sizeof sub, "%s.override[%zu]", path, i);
    if (apply_override(m, entry, cfg, sub, rng, err)) return -1;
  }
  return 0;
}

static int apply_one(cb_module *m, json_t *cfg, const char *path, cb_rng *rng, cb_error *err) {
  initializer in;
  if (!json_is_object(cfg))
    return cb_fail(err, "%s: expected an object with \"type\", found another value", path);
  if (parse_initializer(cfg, path, &in, err)) return -1;
  if (in.kind == INIT_PRETRAINED) return load_pretrained(&in, m, path, err);
  apply_tree(&in, m, false, rng);
  return apply_overrides(m, cfg, path, rng, err);
}

int cb_init_apply(cb_module *m, json_t *init_cfg, const char *path, cb_rng *rng, cb_error *err) {
  cb_rng fallback;
  if (!path) path = "init_cfg";
  if (!rng) {
    cb_rng_seed(&fallback, 0);
    rng = &fallback;
  }
  if (!init_cfg || json_is_null(init_cfg)) return 0;
  if (!json_is_array(init_cfg)) return apply_one(m, init_cfg, path, rng, err);
  size_t i;
  json_t *entry;
  char sub[512];
  json_array_foreach(init_cfg, i, entry) {
    snprintf(sub, sizeof sub, "%s[%zu]", path, i);
    if (apply_one(m, entry, sub, rng, err)) return -1;
  }
  return 0;
}

int cb_module_init_weights(cb_module *m, cb_rng *rng, cb_error *err) {
  cb_rng fallback;
  if (!rng) {
    cb_rng_seed(&fallback, 0);
    rng = &fallback;
  }
  if (m->ops && m->ops->init_weights) return m->ops->init_weights(m, rng, err);
  for (int i = 0; i < m->n_children; i++)
    if (cb_module_init_weights(m->children[i], rng, err)) return -1;
  return 0;
}
