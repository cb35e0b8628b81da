#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick.h"

/* mmcv's GeneralizedAttention ("An Empirical Study of Spatial Attention Mechanisms
 * in Deep Networks"). attention_type bits: 0 query-key content, 1 query content and
 * relative position, 2 key content only (appr_bias), 3 relative position only
 * (geom_bias). With bit 1 and not bit 3 the y-position term uses the transposed
 * query map (square maps only), and '0010' alone is computed for one query and
 * broadcast, as mmcv does. */

typedef struct ga_impl {
  int in_channels, num_heads, qk_dim, v_dim, pos_dim;
  int kv_stride, q_stride, spatial_range, max_len, max_len_kv;
  double magnitude;
  bool bit[4];
  char type[5];
} ga_impl;

static int out_c(const ga_impl *g) {
  return g->qk_dim * g->num_heads;
}
static bool saliency_only(const ga_impl *g) {
  return g->bit[2] && !g->bit[0] && !g->bit[1] && !g->bit[3];
}

/* Adds a freshly built child; a NULL child keeps the builder's message. */
static int adopt(cb_module *m, const char *name, cb_module *child, cb_error *err) {
  return child ? cb_module_add_child(m, name, child, err) : -1;
}

/* ---- Linear without bias (appr_geom_fc_x / _y) ---- */

typedef struct linear_impl {
  int in, out;
} linear_impl;

/* y[..., out] = x[..., in] W^T */
static cb_tensor *linear_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const linear_impl *l = m->impl;
  if (x->dtype != CB_F32 || x->ndim < 1 || x->shape[x->ndim - 1] != l->in) {
    cb_fail(err, "Linear: expected a float32 input whose last dimension is %d", l->in);
    return NULL;
  }
  int64_t shape[CB_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = l->out;
  cb_tensor *y = cb_tensor_new(CB_F32, x->ndim, shape, err);
  if (!y) return NULL;
  const int rows = (int)(cb_tensor_numel(x) / l->in);
  cb_gemm(false, true, rows, l->out, l->in, 1.0f, cb_f32(x), l->in,
          cb_f32(cb_module_param(m, "weight")->tensor), l->in, 0.0f, cb_f32(y), l->out);
  return y;
}

static void linear_extra_repr(const cb_module *m, char *buf, size_t cap) {
  const linear_impl *l = m->impl;
  snprintf(buf, cap, "in_features=%d, out_features=%d, bias=False", l->in, l->out);
}

static const cb_module_ops linear_ops = {
    .kind = "Linear", .forward = linear_forward, .extra_repr = linear_extra_repr};

static cb_module *new_linear(int in, int out, cb_error *err) {
  linear_impl *l = calloc(1, sizeof *l);
  if (!l) {
    cb_fail(err, "Linear: out of memory");
    return NULL;
  }
  *l = (linear_impl){in, out};
  cb_module *m = cb_module_new(&linear_ops, l, err);
  if (!m) {
    free(l);
    return NULL;
  }
  const int64_t shape[2] = {out, in};
  if (!cb_module_add_param(m, "weight", 2, shape, err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- position embedding ---- */

/* [len_q, len_kv, D/2]: sines then cosines of (i*q_stride - j*kv_stride) * magnitude
 * over 1000^(4f/D), f < D/4, in float32 as mmcv computes them. */
static void position_embedding(const ga_impl *g, int len_q, int len_kv, float *emb) {
  const int quarter = g->pos_dim / 4, half = g->pos_dim / 2;
  const float step = (float)(4.0 / g->pos_dim);
  for (int i = 0; i < len_q; i++)
    for (int j = 0; j < len_kv; j++) {
      const float diff =
          ((float)i * (float)g->q_stride - (float)j * (float)g->kv_stride) * (float)g->magnitude;
      float *e = emb + ((size_t)i * len_kv + j) * half;
      for (int f = 0; f < quarter; f++) {
        const float v = diff / powf(1000.0f, step * (float)f);
        e[f] = sinf(v);
        e[quarter + f] = cosf(v);
      }
    }
}

/* appr_geom_fc(embedding) / sqrt(2): [len_q, len_kv, out_c]. */
static cb_tensor *position_features(cb_module *m, const char *fc, int len_q, int len_kv,
                                    cb_error *err) {
  const ga_impl *g = m->impl;
  const int64_t shape[3] = {len_q, len_kv, g->pos_dim / 2};
  cb_tensor *emb = cb_tensor_new(CB_F32, 3, shape, err);
  if (!emb) return NULL;
  position_embedding(g, len_q, len_kv, cb_f32(emb));
  cb_tensor *feat = cb_module_forward(cb_module_child(m, fc), emb, err);
  cb_tensor_free(emb);
  if (!feat) return NULL;
  const float root2 = sqrtf(2.0f);
  for (int64_t i = 0; i < cb_tensor_numel(feat); i++)
    cb_f32(feat)[i] /= root2;
  return feat;
}

/* ---- energy of one image and head ---- */

typedef struct ga_frame {
  int h, w, hk, wk;         /* query and key/value map sizes */
  const float *q, *k;       /* [d x h*w], [d x hk*wk] of this head, or NULL */
  const float *pfx, *pfy;   /* [w, wk, out_c], [h, hk, out_c] or NULL */
  const float *appr, *geom; /* [d] of this head, or NULL */
  int head;
} ga_frame;

static float dot_strided(const float *a, size_t a_stride, const float *b, int n) {
  float s = 0;
  for (int c = 0; c < n; c++)
    s += a[c * a_stride] * b[c];
  return s;
}

/* Query (optionally + bias) of every position: [d x P]. */
static void query_plus(const ga_frame *f, int d, const float *bias, float *out) {
  const int p = f->h * f->w;
  for (int c = 0; c < d; c++)
    for (int i = 0; i < p; i++)
      out[(size_t)c * p + i] = f->q[(size_t)c * p + i] + (bias ? bias[c] : 0);
}

static void add_key_bias(const ga_frame *f, int d, int rows, float *e) {
  const int pk = f->hk * f->wk;
  for (int j = 0; j < pk; j++) {
    const float v = dot_strided(f->k + j, (size_t)pk, f->appr, d);
    for (int r = 0; r < rows; r++)
      e[(size_t)r * pk + j] += v;
  }
}

/* Bit 1: query . position features; the y term reads the query at (b, a) unless bit 3. */
static void add_query_position(const ga_impl *g, const ga_frame *f, float *qg, float *e) {
  const int d = g->qk_dim, p = f->h * f->w, pk = f->hk * f->wk, oc = out_c(g);
  query_plus(f, d, g->bit[3] ? f->geom : NULL, qg);
  float *ex = malloc(sizeof(float) * (f->wk + f->hk));
  if (!ex) return;
  float *ey = ex + f->wk;
  for (int a = 0; a < f->h; a++)
    for (int b = 0; b < f->w; b++) {
      const int pos = a * f->w + b, ypos = g->bit[3] ? pos : b * f->w + a;
      for (int x = 0; x < f->wk; x++)
        ex[x] = dot_strided(qg + pos, (size_t)p,
                            f->pfx + ((size_t)b * f->wk + x) * oc + (size_t)f->head * d, d);
      for (int y = 0; y < f->hk; y++)
        ey[y] = dot_strided(g->bit[3] ? qg + ypos : f->q + ypos, (size_t)p,
                            f->pfy + ((size_t)a * f->hk + y) * oc + (size_t)f->head * d, d);
      float *row = e + (size_t)pos * pk;
      for (int y = 0; y < f->hk; y++)
        for (int x = 0; x < f->wk; x++)
          row[y * f->wk + x] += ex[x] + ey[y];
    }
  free(ex);
}

static float dot(const float *a, const float *b, int n) {
  float s = 0;
  for (int i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

/* Bit 3 alone: geom_bias . position features, broadcast over the query. */
static void add_bias_position(const ga_impl *g, const ga_frame *f, float *e) {
  const int d = g->qk_dim, pk = f->hk * f->wk, oc = out_c(g);
  const size_t off = (size_t)f->head * d;
  for (int a = 0; a < f->h; a++)
    for (int b = 0; b < f->w; b++) {
      float *row = e + (size_t)(a * f->w + b) * pk;
      for (int y = 0; y < f->hk; y++) {
        const float vy = dot(f->pfy + ((size_t)a * f->hk + y) * oc + off, f->geom, d);
        for (int x = 0; x < f->wk; x++)
          row[y * f->wk + x] += dot(f->pfx + ((size_t)b * f->wk + x) * oc + off, f->geom, d) + vy;
      }
    }
}

/* Energy [rows x Pk]; rows = h*w, or 1 for '0010'. scratch holds d * h * w floats. */
static void energy(const ga_impl *g, const ga_frame *f, float *scratch, float *e) {
  const int d = g->qk_dim, p = f->h * f->w, pk = f->hk * f->wk;
  const int rows = saliency_only(g) ? 1 : p;
  memset(e, 0, sizeof(float) * (size_t)rows * pk);
  if (g->bit[0]) {
    query_plus(f, d, g->bit[2] ? f->appr : NULL, scratch);
    cb_gemm(true, false, p, pk, d, 1.0f, scratch, p, f->k, pk, 0.0f, e, pk);
  } else if (g->bit[2]) {
    add_key_bias(f, d, rows, e);
  }
  if (g->bit[1])
    add_query_position(g, f, scratch, e);
  else if (g->bit[3])
    add_bias_position(g, f, e);
}

/* local_constraint_map entries set for query (a, b) become -inf. */
static void apply_local_constraint(cb_module *m, const ga_frame *f, int rows, float *e) {
  const ga_impl *g = m->impl;
  const uint8_t *map = cb_module_param(m, "local_constraint_map")->tensor->data;
  const int lk = g->max_len_kv, pk = f->hk * f->wk;
  for (int r = 0; r < rows; r++) {
    const int a = r / f->w, b = r % f->w;
    const uint8_t *plane = map + ((size_t)a * g->max_len + b) * lk * lk;
    for (int y = 0; y < f->hk; y++)
      for (int x = 0; x < f->wk; x++)
        if (plane[y * lk + x]) e[(size_t)r * pk + y * f->wk + x] = -INFINITY;
  }
}

/* ---- forward ---- */

typedef struct ga_maps {
  cb_tensor *x_q, *x_kv, *q, *k, *v, *pfx, *pfy;
} ga_maps;

static void free_maps(ga_maps *t, const cb_tensor *x) {
  if (t->x_q != x) cb_tensor_free(t->x_q);
  if (t->x_kv != x) cb_tensor_free(t->x_kv);
  cb_tensor_free(t->q);
  cb_tensor_free(t->k);
  cb_tensor_free(t->v);
  cb_tensor_free(t->pfx);
  cb_tensor_free(t->pfy);
}

static cb_tensor *child_forward(cb_module *m, const char *name, const cb_tensor *x, cb_error *err) {
  cb_module *child = cb_module_child(m, name);
  return child ? cb_module_forward(child, x, err) : (cb_tensor *)x;
}

static int check_sizes(const ga_impl *g, int h, int w, int hk, int wk, cb_error *err) {
  if (g->bit[1] && !g->bit[3] && h != w)
    return cb_fail(err,
                   "GeneralizedAttention: attention_type '%s' needs a square query map (mmcv "
                   "transposes it for the y-position term), found %d x %d",
                   g->type, h, w);
  if (g->spatial_range >= 0 &&
      (h > g->max_len || w > g->max_len || hk > g->max_len_kv || wk > g->max_len_kv))
    return cb_fail(err,
                   "GeneralizedAttention: the query map %d x %d (key map %d x %d) exceeds "
                   "local_constraint_map's %d x %d (%d x %d)",
                   h, w, hk, wk, g->max_len, g->max_len, g->max_len_kv, g->max_len_kv);
  return 0;
}

static int project_inputs(cb_module *m, const cb_tensor *x, ga_maps *t, cb_error *err) {
  const ga_impl *g = m->impl;
  if (!(t->x_q = child_forward(m, "q_downsample", x, err)) ||
      !(t->x_kv = child_forward(m, "kv_downsample", x, err)))
    return -1;
  const int h = (int)t->x_q->shape[2], w = (int)t->x_q->shape[3];
  const int hk = (int)t->x_kv->shape[2], wk = (int)t->x_kv->shape[3];
  if (check_sizes(g, h, w, hk, wk, err)) return -1;
  if ((g->bit[0] || g->bit[1]) &&
      !(t->q = cb_module_forward(cb_module_child(m, "query_conv"), t->x_q, err)))
    return -1;
  if ((g->bit[0] || g->bit[2]) &&
      !(t->k = cb_module_forward(cb_module_child(m, "key_conv"), t->x_kv, err)))
    return -1;
  if (!(t->v = cb_module_forward(cb_module_child(m, "value_conv"), t->x_kv, err))) return -1;
  if (g->bit[1] || g->bit[3]) {
    if (!(t->pfx = position_features(m, "appr_geom_fc_x", w, wk, err)) ||
        !(t->pfy = position_features(m, "appr_geom_fc_y", h, hk, err)))
      return -1;
  }
  return 0;
}

static const float *param_or_null(cb_module *m, const char *name) {
  cb_param *p = cb_module_param(m, name);
  return p ? cb_f32(p->tensor) : NULL;
}

/* Attention output [N, v_dim * heads, rows_h, rows_w] before proj_conv. */
static cb_tensor *attend(cb_module *m, const ga_maps *t, cb_error *err) {
  const ga_impl *g = m->impl;
  const int n_img = (int)t->x_q->shape[0], d = g->qk_dim, heads = g->num_heads;
  const int h = (int)t->x_q->shape[2], w = (int)t->x_q->shape[3];
  const int hk = (int)t->x_kv->shape[2], wk = (int)t->x_kv->shape[3];
  const int p = h * w, pk = hk * wk, rows = saliency_only(g) ? 1 : p, oc = out_c(g);
  cb_tensor *out =
      cb_tensor_new4(n_img, (int64_t)g->v_dim * heads, rows == 1 ? 1 : h, rows == 1 ? 1 : w, err);
  float *e = out ? malloc(sizeof(float) * ((size_t)rows * pk + (size_t)d * p)) : NULL;
  if (out && !e) cb_fail(err, "GeneralizedAttention: out of memory for %d x %d energies", rows, pk);
  const float *appr = param_or_null(m, "appr_bias"), *geom = param_or_null(m, "geom_bias");
  for (int n = 0; e && n < n_img; n++)
    for (int hd = 0; hd < heads; hd++) {
      const size_t qoff = ((size_t)n * oc + (size_t)hd * d);
      const ga_frame f = {h,
                          w,
                          hk,
                          wk,
                          t->q ? cb_f32(t->q) + qoff * p : NULL,
                          t->k ? cb_f32(t->k) + qoff * pk : NULL,
                          t->pfx ? cb_f32(t->pfx) : NULL,
                          t->pfy ? cb_f32(t->pfy) : NULL,
                          appr ? appr + (size_t)hd * d : NULL,
                          geom ? geom + (size_t)hd * d : NULL,
                          hd};
      energy(g, &f, e + (size_t)rows * pk, e);
      if (g->spatial_range >= 0) apply_local_constraint(m, &f, rows, e);
      cb_softmax_rows(e, rows, pk);
      const size_t voff = (size_t)n * g->v_dim * heads + (size_t)hd * g->v_dim;
      cb_gemm(false, true, g->v_dim, rows, pk, 1.0f, cb_f32(t->v) + voff * pk, pk, e, pk, 0.0f,
              cb_f32(out) + voff * rows, rows);
    }
  if (!e) {
    cb_tensor_free(out);
    return NULL;
  }
  free(e);
  return out;
}

/* gamma * out + x, out broadcast when it is 1 x 1 or resized when q-strided. */
static cb_tensor *residual(cb_module *m, const cb_tensor *x, cb_tensor *out, cb_error *err) {
  const float gamma = cb_f32(cb_module_param(m, "gamma")->tensor)[0];
  const int64_t hh = x->shape[2], ww = x->shape[3], len = hh * ww;
  cb_tensor *up = out;
  const bool single = out->shape[2] == 1 && out->shape[3] == 1;
  if (!single && (out->shape[2] != hh || out->shape[3] != ww) &&
      !(up = cb_resize_bilinear(out, hh, ww, err)))
    return NULL;
  cb_tensor *y = cb_tensor_clone(x, err);
  for (int64_t row = 0; y && row < x->shape[0] * x->shape[1]; row++)
    for (int64_t i = 0; i < len; i++)
      cb_f32(y)[row * len + i] += gamma * cb_f32(up)[single ? row : row * len + i];
  if (up != out) cb_tensor_free(up);
  return y;
}

static cb_tensor *ga_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const ga_impl *g = m->impl;
  if (x->dtype != CB_F32 || x->ndim != 4 || x->shape[1] != g->in_channels) {
    cb_fail(err, "GeneralizedAttention: expected a float32 N x %d x H x W input", g->in_channels);
    return NULL;
  }
  ga_maps t = {0};
  cb_tensor *att = project_inputs(m, x, &t, err) ? NULL : attend(m, &t, err);
  free_maps(&t, x);
  cb_tensor *proj = att ? cb_module_forward(cb_module_child(m, "proj_conv"), att, err) : NULL;
  cb_tensor_free(att);
  cb_tensor *y = proj ? residual(m, x, proj, err) : NULL;
  cb_tensor_free(proj);
  return y;
}

/* ---- init_weights ---- */

static int ga_init_weights(cb_module *m, struct cb_rng *rng, cb_error *err) {
  (void)err;
  const ga_impl *g = m->impl;
  static const char *const layers[] = {"query_conv",     "key_conv",       "value_conv",
                                       "appr_geom_fc_x", "appr_geom_fc_y", "proj_conv"};
  for (size_t i = 0; i < sizeof layers / sizeof *layers; i++) {
    cb_module *layer = cb_module_child(m, layers[i]);
    if (!layer) continue;
    cb_init_kaiming(cb_module_param(layer, "weight")->tensor, 1, false, "leaky_relu", true, rng);
    cb_param *bias = cb_module_param(layer, "bias");
    if (bias) cb_init_constant(bias->tensor, 0);
  }
  const double stdv = 1.0 / sqrt(g->qk_dim * 2.0);
  cb_param *appr = cb_module_param(m, "appr_bias"), *geom = cb_module_param(m, "geom_bias");
  if (appr) cb_init_uniform(appr->tensor, -stdv, stdv, rng);
  if (geom) cb_init_uniform(geom->tensor, -stdv, stdv, rng);
  cb_init_constant(cb_module_param(m, "gamma")->tensor, 0);
  return 0;
}

static void ga_extra_repr(const cb_module *m, char *buf, size_t cap) {
  (void)m;
  if (cap) buf[0] = '\0';
}

static const cb_module_ops ga_ops = {
    .kind = "GeneralizedAttention",
    .forward = ga_forward,
    .extra_repr = ga_extra_repr,
    .init_weights = ga_init_weights,
};

/* ---- construction ---- */

static int read_type(cb_args *a, ga_impl *g, cb_error *err) {
  const char *s;
  if (cb_args_string(a, "attention_type", "1111", &s, err)) return -1;
  bool ok = strlen(s) == 4;
  for (int i = 0; ok && i < 4; i++)
    ok = s[i] == '0' || s[i] == '1';
  if (!ok)
    return cb_args_fail(a, "attention_type", err,
                        "expected four '0'/'1' characters such as '1111' or '0010', found '%s'", s);
  for (int i = 0; i < 4; i++)
    g->bit[i] = s[i] == '1';
  memcpy(g->type, s, 5);
  return 0;
}

static int read_int_min(cb_args *a, const char *key, long long def, long long min, int *out,
                        cb_error *err) {
  long long v;
  if (cb_args_int(a, key, def, &v, err)) return -1;
  if (v < min || v > (1 << 20))
    return cb_args_fail(a, key, err, "expected an integer >= %lld, found %lld", min, v);
  *out = (int)v;
  return 0;
}

static int check_args(cb_args *a, ga_impl *g, cb_error *err) {
  if (g->in_channels < g->num_heads)
    return cb_args_fail(a, "num_heads", err,
                        "in_channels=%d gives no channel per head with num_heads=%d",
                        g->in_channels, g->num_heads);
  g->qk_dim = g->v_dim = g->in_channels / g->num_heads;
  if (g->pos_dim <= 0) g->pos_dim = g->in_channels;
  if ((g->bit[1] || g->bit[3]) && g->pos_dim % 4)
    return cb_args_fail(a, "position_embedding_dim", err,
                        "must be a multiple of 4 (sines and cosines of D/4 frequencies), found "
                        "%d%s",
                        g->pos_dim,
                        cb_args_has(a, "position_embedding_dim") && g->pos_dim != g->in_channels
                            ? ""
                            : " (in_channels, the default)");
  if (g->spatial_range < 0) return 0;
  if (g->in_channels != 256 && g->in_channels != 512)
    return cb_args_fail(a, "spatial_range", err,
                        "local_constraint_map is sized for in_channels 256 or 512 only (as in "
                        "mmcv), found in_channels=%d",
                        g->in_channels);
  g->max_len = g->in_channels == 256 ? 84 : 42;
  g->max_len_kv = (int)((g->max_len - 1.0) / g->kv_stride + 1);
  return 0;
}

static int read_ga_args(cb_args *a, ga_impl *g, cb_error *err) {
  long long in_channels, spatial_range, pos_dim;
  if (cb_args_int_required(a, "in_channels", &in_channels, err) ||
      cb_args_int(a, "spatial_range", -1, &spatial_range, err) ||
      read_int_min(a, "num_heads", 9, 1, &g->num_heads, err) ||
      cb_args_int(a, "position_embedding_dim", -1, &pos_dim, err) ||
      cb_args_double(a, "position_magnitude", 1, &g->magnitude, err) ||
      read_int_min(a, "kv_stride", 2, 1, &g->kv_stride, err) ||
      read_int_min(a, "q_stride", 1, 1, &g->q_stride, err) || read_type(a, g, err))
    return -1;
  if (in_channels < 1 || in_channels > (1 << 20))
    return cb_args_fail(a, "in_channels", err, "expected a positive channel count, found %lld",
                        in_channels);
  if (spatial_range > (1 << 20) || spatial_range < -(1 << 20))
    return cb_args_fail(a, "spatial_range", err, "out of range: %lld", spatial_range);
  if (pos_dim > (1 << 20))
    return cb_args_fail(a, "position_embedding_dim", err, "out of range: %lld", pos_dim);
  g->in_channels = (int)in_channels;
  g->spatial_range = (int)spatial_range;
  g->pos_dim = (int)pos_dim;
  return check_args(a, g, err);
}

static int floor_div(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* 1 outside each query's window of +-spatial_range (in key/value strides), else 0. */
static void fill_local_constraint(const ga_impl *g, uint8_t *map) {
  const int len = g->max_len, lk = g->max_len_kv, r = g->spatial_range, s = g->kv_stride;
  memset(map, 1, (size_t)len * len * lk * lk);
  for (int iy = 0; iy < len; iy++)
    for (int ix = 0; ix < len; ix++) {
      uint8_t *plane = map + ((size_t)iy * len + ix) * lk * lk;
      const int y0 = floor_div(iy - r, s) > 0 ? floor_div(iy - r, s) : 0;
      const int x0 = floor_div(ix - r, s) > 0 ? floor_div(ix - r, s) : 0;
      const int y1 = floor_div(iy + r + 1, s) + 1 < lk ? floor_div(iy + r + 1, s) + 1 : lk;
      const int x1 = floor_div(ix + r + 1, s) + 1 < lk ? floor_div(ix + r + 1, s) + 1 : lk;
      for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
          plane[y * lk + x] = 0;
    }
}

static int add_params(cb_module *m, const ga_impl *g, cb_error *err) {
  const int64_t bias_shape[1] = {out_c(g)}, one[1] = {1};
  if ((g->bit[2] && !cb_module_add_param(m, "appr_bias", 1, bias_shape, err)) ||
      (g->bit[3] && !cb_module_add_param(m, "geom_bias", 1, bias_shape, err)) ||
      !cb_module_add_param(m, "gamma", 1, one, err))
    return -1;
  if (g->spatial_range < 0) return 0;
  const int64_t shape[4] = {g->max_len, g->max_len, g->max_len_kv, g->max_len_kv};
  /* An nn.Parameter with requires_grad=False in mmcv. */
  cb_tensor *map = cb_module_add_param_typed(m, "local_constraint_map", CB_U8, 4, shape, err);
  if (!map) return -1;
  cb_module_param(m, "local_constraint_map")->requires_grad = false;
  fill_local_constraint(g, map->data);
  return 0;
}

static cb_module *conv1x1(int in, int out, bool bias, const char *path, const char *name,
                          cb_error *err) {
  char sub[512];
  snprintf(sub, sizeof sub, "%s.%s", path, name);
  const cb_conv_spec spec = {in, out, 1, 1, 0, 1, 1, bias};
  return cb_build_conv(NULL, sub, &spec, err);
}

static cb_module *downsample(int stride, const char *path, const char *name, cb_error *err) {
  char sub[512];
  snprintf(sub, sizeof sub, "%s.%s", path, name);
  json_t *cfg =
      json_pack("{s:s, s:i, s:i}", "type", "AvgPool2d", "kernel_size", 1, "stride", stride);
  cb_module *pool = cfg ? cb_build("POOLING_LAYERS", cfg, NULL, sub, err) : NULL;
  if (!cfg) cb_fail(err, "%s: out of memory", path);
  json_decref(cfg);
  return pool;
}

static int add_children(cb_module *m, const ga_impl *g, const char *path, cb_error *err) {
  const int c = g->in_channels, oc = out_c(g), vc = g->v_dim * g->num_heads;
  if ((g->bit[0] || g->bit[1]) &&
      adopt(m, "query_conv", conv1x1(c, oc, false, path, "query_conv", err), err))
    return -1;
  if ((g->bit[0] || g->bit[2]) &&
      adopt(m, "key_conv", conv1x1(c, oc, false, path, "key_conv", err), err))
    return -1;
  if (adopt(m, "value_conv", conv1x1(c, vc, false, path, "value_conv", err), err)) return -1;
  if ((g->bit[1] || g->bit[3]) &&
      (adopt(m, "appr_geom_fc_x", new_linear(g->pos_dim / 2, oc, err), err) ||
       adopt(m, "appr_geom_fc_y", new_linear(g->pos_dim / 2, oc, err), err)))
    return -1;
  if (adopt(m, "proj_conv", conv1x1(vc, c, true, path, "proj_conv", err), err)) return -1;
  if (g->q_stride > 1 &&
      adopt(m, "q_downsample", downsample(g->q_stride, path, "q_downsample", err), err))
    return -1;
  if (g->kv_stride > 1 &&
      adopt(m, "kv_downsample", downsample(g->kv_stride, path, "kv_downsample", err), err))
    return -1;
  return 0;
}

static cb_module *build_generalized_attention(cb_args *args, cb_error *err) {
  ga_impl *g = calloc(1, sizeof *g);
  if (!g) {
    cb_fail(err, "%s: out of memory", cb_args_path(args));
    return NULL;
  }
  cb_module *m = NULL;
  if (read_ga_args(args, g, err) || !(m = cb_module_new(&ga_ops, g, err))) {
    free(g);
    return NULL;
  }
  if (add_params(m, g, err) || add_children(m, g, cb_args_path(args), err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "GeneralizedAttention", build_generalized_attention, "gen_attention_block"},
    {NULL},
};

CB_PLUGIN("generalized_attention", "Generalized spatial attention (GeneralizedAttention)", entries);
