/* SEBlock: squeeze-and-excitation (Hu et al., 2018) as a ResNet plugin layer.
 *
 *   y = x * sigmoid(conv2(relu(conv1(avg_pool(x)))))
 *
 * conv1 (C -> C/ratio) and conv2 (C/ratio -> C) are 1x1 convolutions with bias, built through
 * the CONV_LAYERS registry, so their state-dict keys are "<name>.conv1.weight", ... and a
 * config's conv_cfg can swap the convolution type. Built against <cbrick.h> alone:
 *
 *   cc -shared -fPIC $(pkg-config --cflags cbrick) se_block.c -o se_block.so */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cbrick.h>

typedef struct se_block {
  int channels, squeezed;
} se_block;

/* N x C x H x W -> N x C x 1 x 1, the mean of each plane. */
static cb_tensor *global_avg_pool(const cb_tensor *x, cb_error *err) {
  cb_tensor *y = cb_tensor_new4(x->shape[0], x->shape[1], 1, 1, err);
  if (!y) return NULL;
  const int64_t plane = x->shape[2] * x->shape[3];
  for (int64_t row = 0; row < x->shape[0] * x->shape[1]; row++) {
    double sum = 0;
    for (int64_t i = 0; i < plane; i++)
      sum += cb_f32(x)[row * plane + i];
    cb_f32(y)[row] = (float)(sum / (double)plane);
  }
  return y;
}

/* The N x C x 1 x 1 channel weights: sigmoid(conv2(relu(conv1(pooled)))). */
static cb_tensor *excite(cb_module *m, const cb_tensor *pooled, cb_error *err) {
  cb_tensor *hidden = cb_module_forward(cb_module_child(m, "conv1"), pooled, err);
  if (!hidden) return NULL;
  cb_relu_inplace(hidden);
  cb_tensor *gate = cb_module_forward(cb_module_child(m, "conv2"), hidden, err);
  cb_tensor_free(hidden);
  if (!gate) return NULL;
  for (int64_t i = 0; i < cb_tensor_numel(gate); i++)
    cb_f32(gate)[i] = 1.0f / (1.0f + expf(-cb_f32(gate)[i]));
  return gate;
}

static cb_tensor *se_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  const se_block *se = m->impl;
  if (x->dtype != CB_F32 || x->ndim != 4 || x->shape[1] != se->channels)
    return cb_fail(err, "SEBlock: expected a float32 N x %d x H x W input", se->channels), NULL;
  cb_tensor *pooled = global_avg_pool(x, err);
  cb_tensor *gate = pooled ? excite(m, pooled, err) : NULL;
  cb_tensor_free(pooled);
  cb_tensor *y = gate ? cb_tensor_clone(x, err) : NULL;
  if (y) {
    const int64_t plane = x->shape[2] * x->shape[3];
    for (int64_t row = 0; row < x->shape[0] * x->shape[1]; row++)
      for (int64_t i = 0; i < plane; i++)
        cb_f32(y)[row * plane + i] *= cb_f32(gate)[row];
  }
  cb_tensor_free(gate);
  return y;
}

static const cb_module_ops se_ops = {.kind = "SEBlock", .forward = se_forward};

/* A 1x1 convolution with bias from the CONV_LAYERS registry (conv_cfg may pick its type). */
static int add_conv1x1(cb_module *m, const char *name, int in, int out, json_t *conv_cfg,
                       const char *path, cb_error *err) {
  const cb_conv_spec spec = {.in_channels = in,
                             .out_channels = out,
                             .kernel_size = 1,
                             .stride = 1,
                             .dilation = 1,
                             .groups = 1,
                             .bias = true};
  cb_module *conv = cb_build_conv(conv_cfg, path, &spec, err);
  return conv ? cb_module_add_child(m, name, conv, err) : -1;
}

static cb_module *new_se_block(int channels, int squeezed, json_t *conv_cfg, const char *path,
                               cb_error *err) {
  se_block *se = malloc(sizeof *se);
  if (!se) {
    cb_fail(err, "%s: out of memory", path);
    return NULL;
  }
  se->channels = channels;
  se->squeezed = squeezed;
  cb_module *m = cb_module_new(&se_ops, se, err);
  if (!m) {
    free(se);
    return NULL;
  }
  /* Children in PyTorch's __init__ order, which is the state dict's order. */
  if (add_conv1x1(m, "conv1", channels, squeezed, conv_cfg, path, err) ||
      add_conv1x1(m, "conv2", squeezed, channels, conv_cfg, path, err)) {
    cb_module_free(m);
    return NULL;
  }
  return m;
}

static cb_module *build_se_block(cb_args *a, cb_error *err) {
  long long channels, ratio;
  json_t *conv_cfg;
  if (cb_args_int_required(a, "in_channels", &channels, err) ||
      cb_args_int(a, "ratio", 16, &ratio, err) || cb_args_object(a, "conv_cfg", &conv_cfg, err))
    return NULL;
  if (channels <= 0 || channels > 1 << 20) {
    cb_args_fail(a, "in_channels", err, "expected a positive channel count, found %lld", channels);
    return NULL;
  }
  if (ratio <= 0 || ratio > channels) {
    cb_args_fail(a, "ratio", err, "expected 1 .. in_channels (%lld), found %lld", channels, ratio);
    return NULL;
  }
  return new_se_block((int)channels, (int)(channels / ratio), conv_cfg, cb_args_path(a), err);
}

static const cb_plugin_entry entries[] = {
    {"PLUGIN_LAYERS", "SEBlock", build_se_block, "se_block"},
    {NULL, NULL, NULL, NULL},
};

CB_PLUGIN("se_block", "squeeze-and-excitation channel attention", entries);
