#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick.h"

/* mmcv's NonLocal2d: y = x + conv_out(f(theta(x), phi(x)) g(x)), with the pairwise
 * function f chosen by `mode`. */

typedef enum nl_mode {
  NL_GAUSSIAN,
  NL_EMBEDDED_GAUSSIAN,
  NL_DOT_PRODUCT,
  NL_CONCATENATION
} nl_mode;

static const char *const nl_mode_names[] = {"gaussian", "embedded_gaussian", "dot_product",
                                            "concatenation"};

typedef struct nl_impl {
  int in_channels, inter_channels, reduction;
  bool use_scale, sub_sample, zeros_init, has_norm;
  double std;
  nl_mode mode;
} nl_impl;

/* Adds a freshly built child; a NULL child keeps the builder's message. */
static int adopt(cb_module *m, const char *name, cb_module *child, cb_error *err) {
  return child ? cb_module_add_child(m, name, child, err) : -1;
}

/* ---- ConvModule (conv, then an optional norm, then an optional activation) ---- */

static const cb_module_ops conv_module_ops = {
    .kind = "ConvModule",
    .forward = cb_sequential_forward,
};

typedef struct conv_module_spec {
  int in, out;
  bool bias;
  json_t *conv_cfg, *norm_cfg, *act_cfg; /* may be NULL */
} conv_module_spec;

static cb_module *conv_module(const conv_module_spec *s, const char *path, cb_error *err) {
  char sub[512], norm_name[64];
  cb_module *m = cb_module_new(&conv_module_ops, NULL, err);
  if (!m) return NULL;
  const cb_conv_spec spec = {s->in, s->out, 1, 1, 0, 1, 1, s->bias};
  snprintf(sub, sizeof sub, "%s.conv", path);
  if (adopt(m, "conv", cb_build_conv(s->conv_cfg, sub, &spec, err), err)) goto fail;
  if (s->norm_cfg) {
    snprintf(sub, sizeof sub, "%s.norm_cfg", path);
    cb_module *norm = cb_build_norm(s->norm_cfg, sub, s->out, "", norm_name, sizeof norm_name, err);
    if (adopt(m, norm_name, norm, err)) goto fail;
  }
  if (s->act_cfg) {
    snprintf(sub, sizeof sub, "%s.act_cfg", path);
    if (adopt(m, "activate", cb_build("ACTIVATION_LAYERS", s->act_cfg, NULL, sub, err), err))
      goto fail;
  }
  return m;
fail:
  cb_module_free(m);
  return NULL;
}

static cb_module *max_pool_2x2(const char *path, cb_error *err) {
  json_t *cfg = json_pack("{s:s, s:[ii]}", "type", "MaxPool2d", "kernel_size", 2, 2);
  cb_module *pool = cfg ? cb_build("POOLING_LAYERS", cfg, NULL, path, err) : NULL;
  if (!cfg) cb_fail(err, "%s: out of memory", path);
  json_decref(cfg);
  return pool;
}

/* Sequential(module, MaxPool2d(kernel_size=(2, 2))) when sub-sampling. */
static cb_module *with_pool(cb_module *inner, const char *path, cb_error *err) {
  if (!inner) return NULL;
  char sub[528];
  snprintf(sub, sizeof sub, "%s.1", path);
  cb_module *seq = cb_sequential_new(err);
  if (!seq) {
    cb_module_free(inner);
    return NULL;
  }
  if (adopt(seq, "0", inner, err) || adopt(seq, "1", max_pool_2x2(sub, err), err)) {
    cb_module_free(seq);
    return NULL;
  }
  return seq;
}

/* ---- forward ---- */

/* concat_project on [theta_i; phi_j]: relu(w_theta . theta_i + w_phi . phi_j). */
static void concatenation(cb_module *m, const float *theta, const float *phi, int inter, int q,
                          int k, float *pw) {
  const cb_module *proj = cb_module_find(m, "concat_project.conv");
  const float *w = cb_f32(cb_module_param(proj, "weight")->tensor);
  for (int i = 0; i < q; i++) {
    double a = 0;
    for (int c = 0; c < inter; c++)
      a += (double)w[c] * theta[(size_t)c * q + i];
    for (int j = 0; j < k; j++) {
      double v = a;
      for (int c = 0; c < inter; c++)
        v += (double)w[inter + c] * phi[(size_t)c * k + j];
      pw[(size_t)i * k + j] = v > 0 ? (float)v : 0.0f;
    }
  }
}

/* Pairwise weights [q x k] from theta [depth x q] and phi [depth x k]. */
static void pairwise(cb_module *m, const float *theta, const float *phi, int depth, int q, int k,
                     float *pw) {
  const nl_impl *nl = m->impl;
  if (nl->mode == NL_CONCATENATION) {
    concatenation(m, theta, phi, depth, q, k, pw);
  } else {
    cb_gemm(true, false, q, k, depth, 1.0f, theta, q, phi, k, 0.0f, pw, k);
  }
  if (nl->mode == NL_DOT_PRODUCT || nl->mode == NL_CONCATENATION) {
    for (size_t i = 0; i < (size_t)q * k; i++)
      pw[i] /= (float)k;
    return;
  }
  if (nl->mode == NL_EMBEDDED_GAUSSIAN && nl->use_scale) {
    const float scale = sqrtf((float)depth);
    for (size_t i = 0; i < (size_t)q * k; i++)
      pw[i] /= scale;
  }
  cb_softmax_rows(pw, q, k);
}

typedef struct nl_maps {
  cb_tensor *g, *theta, *phi; /* theta/phi borrow x in gaussian mode */
} nl_maps;

static void free_maps(nl_maps *t, const cb_tensor *x) {
  cb_tensor_free(t->g);
  if (t->theta != x) cb_tensor_free(t->theta);
  if (t->phi != x) cb_tensor_free(t->phi);
}

static int embed(cb_module *m, const cb_tensor *x, nl_maps *t, cb_error *err) {
  t->g = cb_module_forward(cb_module_child(m, "g"), x, err);
  if (!t->g) return -1;
  cb_module *theta = cb_module_child(m, "theta"), *phi = cb_module_child(m, "phi");
  t->theta = theta ? cb_module_forward(theta, x, err) : (cb_tensor *)x;
  if (!t->theta) return -1;
  t->phi = phi ? cb_module_forward(phi, x, err) : (cb_tensor *)x;
  return t->phi ? 0 : -1;
}

static cb_tensor *attend(cb_module *m, const cb_tensor *x, const nl_maps *t, cb_error *err) {
  const nl_impl *nl = m->impl;
  const int q = (int)(x->shape[2] * x->shape[3]);
  const int k = (int)(t->phi->shape[2] * t->phi->shape[3]);
  const int depth = (int)t->theta->shape[1], inter = nl->inter_channels;
  if (t->g->shape[2] * t->g->shape[3] != k) {
    cb_fail(err, "NonLocal2d: g and phi give different numbers of positions");
    return NULL;
  }
  cb_tensor *y = cb_tensor_new4(x->shape[0], inter, x->shape[2], x->shape[3], err);
  float *pw = y ? calloc((size_t)q * k, sizeof(float)) : NULL;
  if (y && !pw) cb_fail(err, "NonLocal2d: out of memory for %d x %d pairwise weights", q, k);
  for (int64_t n = 0; pw && n < x->shape[0]; n++) {
    pairwise(m, cb_f32(t->theta) + n * (size_t)depth * q, cb_f32(t->phi) + n * (size_t)depth * k,
             depth, q, k, pw);
    /* y^T [inter x q] = g [inter x k] . pw^T */
    cb_gemm(false, true, inter, q, k, 1.0f, cb_f32(t->g) + n * (size_t)inter * k, k, pw, k, 0.0f,
            cb_f32(y) + n * (size_t)inter * q, q);
  }
  if (!pw) {
    cb_tensor_free(y);
    return NULL;
  }
  free(pw);
  return y;
}

static cb_tensor *nl_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const nl_impl *nl = m->impl;
  if (x->dtype != CB_F32 || x->ndim != 4 || x->shape[1] != nl->in_channels) {
    cb_fail(err, "NonLocal2d: expected a float32 N x %d x H x W input", nl->in_channels);
    return NULL;
  }
  nl_maps t = {0};
  cb_tensor *y = embed(m, x, &t, err) ? NULL : attend(m, x, &t, err);
  free_maps(&t, x);
  cb_tensor *out = y ? cb_module_forward(cb_module_child(m, "conv_out"), y, err) : NULL;
  cb_tensor_free(y);
  if (out && cb_add_inplace(out, x, err)) {
    cb_tensor_free(out);
    return NULL;
  }
  return out;
}

/* ---- init_weights(std, zeros_init) ---- */

static void normal_init(cb_module *layer, double std, cb_rng *rng) {
  cb_param *w = cb_module_param(layer, "weight"), *b = cb_module_param(layer, "bias");
  if (w) cb_init_normal(w->tensor, 0, std, rng);
  if (b) cb_init_constant(b->tensor, 0);
}

static void constant_init(cb_module *layer, float value) {
  cb_param *w = cb_module_param(layer, "weight"), *b = cb_module_param(layer, "bias");
  if (w) cb_init_constant(w->tensor, value);
  if (b) cb_init_constant(b->tensor, 0);
}

static int nl_init_weights(cb_module *m, struct cb_rng *rng, cb_error *err) {
  (void)err;
  const nl_impl *nl = m->impl;
  const char *convs[3] = {nl->sub_sample ? "g.0.conv" : "g.conv", "theta.conv",
                          nl->sub_sample ? "phi.0.conv" : "phi.conv"};
  for (int i = 0; i < (nl->mode == NL_GAUSSIAN ? 1 : 3); i++)
    normal_init(cb_module_find(m, convs[i]), nl->std, rng);
  cb_module *conv_out = cb_module_child(m, "conv_out");
  cb_module *target = nl->has_norm ? conv_out->children[1] : conv_out->children[0];
  if (nl->zeros_init)
    constant_init(target, 0);
  else
    normal_init(target, nl->std, rng);
  return 0;
}

static void nl_extra_repr(const cb_module *m, char *buf, size_t cap) {
  (void)m;
  if (cap) buf[0] = '\0';
}

static const cb_module_ops nl_ops = {
    .kind = "NonLocal2d",
    .bases = (const char *const[]){"_NonLocalNd", NULL},
    .forward = nl_forward,
    .extra_repr = nl_extra_repr,
    .init_weights = nl_init_weights,
};

/* ---- construction ---- */

typedef struct nl_cfgs {
  json_t *conv_cfg, *norm_cfg, *conv_default;
} nl_cfgs;

static int read_mode(cb_args *a, nl_mode *mode, cb_error *err) {
  const char *s;
  if (cb_args_string(a, "mode", "embedded_gaussian", &s, err)) return -1;
  for (int i = 0; i < 4; i++)
    if (strcmp(s, nl_mode_names[i]) == 0) {
      *mode = (nl_mode)i;
      return 0;
    }
  const char *close = cb_closest_name(s, nl_mode_names, 4);
  return cb_args_fail(a, "mode", err,
                      "expected 'gaussian', 'embedded_gaussian', 'dot_product' or "
                      "'concatenation', found '%s'%s%s%s",
                      s, close ? " (did you mean '" : "", close ? close : "", close ? "'?)" : "");
}

static int read_nl_args(cb_args *a, nl_impl *nl, nl_cfgs *cfgs, cb_error *err) {
  long long in_channels, reduction;
  if (cb_args_int_required(a, "in_channels", &in_channels, err) ||
      cb_args_int(a, "reduction", 2, &reduction, err) ||
      cb_args_bool(a, "use_scale", true, &nl->use_scale, err) ||
      cb_args_object(a, "conv_cfg", &cfgs->conv_cfg, err) ||
      cb_args_object(a, "norm_cfg", &cfgs->norm_cfg, err) || read_mode(a, &nl->mode, err) ||
      cb_args_bool(a, "sub_sample", false, &nl->sub_sample, err) ||
      cb_args_double(a, "std", 0.01, &nl->std, err) ||
      cb_args_bool(a, "zeros_init", true, &nl->zeros_init, err))
    return -1;
  if (in_channels < 1 || in_channels > (1 << 20))
    return cb_args_fail(a, "in_channels", err, "expected a positive channel count, found %lld",
                        in_channels);
  if (reduction < 1 || reduction > (1 << 20))
    return cb_args_fail(a, "reduction", err, "expected a positive integer, found %lld", reduction);
  if (!(nl->std >= 0)) return cb_args_fail(a, "std", err, "expected >= 0, found %g", nl->std);
  nl->in_channels = (int)in_channels;
  nl->reduction = (int)reduction;
  nl->inter_channels = nl->in_channels / nl->reduction > 1 ? nl->in_channels / nl->reduction : 1;
  nl->has_norm = cfgs->norm_cfg != NULL;
  /* NonLocal2d's conv_cfg default is {"type": "Conv2d"}; null builds the same layer. */
  if (!cfgs->conv_cfg) cfgs->conv_cfg = cfgs->conv_default;
  return 0;
}

static cb_module *child_conv(const nl_impl *nl, const nl_cfgs *cfgs, int in, int out,
                             const char *path, const char *name, cb_error *err) {
  char sub[512];
  snprintf(sub, sizeof sub, "%s.%s", path, name);
  const conv_module_spec s = {in, out, true, cfgs->conv_cfg, NULL, NULL};
  cb_module *cm = conv_module(&s, sub, err);
  if (!nl->sub_sample || strcmp(name, "theta") == 0) return cm;
  return with_pool(cm, sub, err);
}

static int add_children(cb_module *m, const nl_impl *nl, const nl_cfgs *cfgs, const char *path,
                        cb_error *err) {
  char sub[512];
  const int c = nl->in_channels, inter = nl->inter_channels;
  if (adopt(m, "g", child_conv(nl, cfgs, c, inter, path, "g", err), err)) return -1;
  snprintf(sub, sizeof sub, "%s.conv_out", path);
  const conv_module_spec out = {inter, c, !nl->has_norm, cfgs->conv_cfg, cfgs->norm_cfg, NULL};
  if (adopt(m, "conv_out", conv_module(&out, sub, err), err)) return -1;
  if (nl->mode != NL_GAUSSIAN) {
    if (adopt(m, "theta", child_conv(nl, cfgs, c, inter, path, "theta", err), err) ||
        adopt(m, "phi", child_conv(nl, cfgs, c, inter, path, "phi", err), err))
      return -1;
  } else if (nl->sub_sample) {
    snprintf(sub, sizeof sub, "%s.phi", path);
    if (adopt(m, "phi", max_pool_2x2(sub, err), err)) return -1;
  }
  if (nl->mode != NL_CONCATENATION) return 0;
  json_t *relu = json_pack("{s:s}", "type", "ReLU");
  snprintf(sub, sizeof sub, "%s.concat_project", path);
  const conv_module_spec project = {inter * 2, 1, false, NULL, NULL, relu};
  int rc = relu ? adopt(m, "concat_project", conv_module(&project, sub, err), err)
                : cb_fail(err, "%s: out of memory", path);
  json_decref(relu);
  return rc;
}

static cb_module *build_non_local(cb_args *args, cb_error *err) {
  nl_impl *nl = calloc(1, sizeof *nl);
  nl_cfgs cfgs = {NULL, NULL, json_pack("{s:s}", "type", "Conv2d")};
  cb_module *m = NULL;
  if (!nl || !cfgs.conv_default) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
  } else if (read_nl_args(args, nl, &cfgs, err) || !(m = cb_module_new(&nl_ops, nl, err))) {
    /* nothing built */
  } else if (add_children(m, nl, &cfgs, cb_args_path(args), err)) {
    cb_module_free(m);
    m = NULL;
    nl = NULL; /* freed with m */
  }
  if (!m) free(nl);
  json_decref(cfgs.conv_default);
  return m;
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "NonLocal2d", build_non_local, "nonlocal_block"},
    {NULL},
};

CB_PLUGIN("non_local", "Non-local block (NonLocal2d)", entries);
