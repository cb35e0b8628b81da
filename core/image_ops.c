#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbrick/image.h"

static int check_nchw(const cb_tensor *x, const char *what, cb_error *err) {
  if (x->dtype == CB_F32 && x->ndim == 4) return 0;
  return cb_fail(err, "%s: expected a float32 NxCxHxW tensor, found %d dimensions", what, x->ndim);
}

/* Source coordinate and weights of output index i (align_corners=False). */
static void bilinear_tap(int64_t i, int64_t in, int64_t out, int64_t *lo, int64_t *hi,
                         float *frac) {
  float src = ((float)i + 0.5f) * (float)in / (float)out - 0.5f;
  if (src < 0) src = 0;
  *lo = (int64_t)src;
  if (*lo > in - 1) *lo = in - 1;
  *hi = *lo + 1 < in ? *lo + 1 : in - 1;
  *frac = src - (float)*lo;
}

cb_tensor *cb_resize_bilinear(const cb_tensor *x, int64_t h, int64_t w, cb_error *err) {
  if (check_nchw(x, "resize", err)) return NULL;
  if (h <= 0 || w <= 0) {
    cb_fail(err, "resize: target %lldx%lld must be positive", (long long)h, (long long)w);
    return NULL;
  }
  int64_t n = x->shape[0], c = x->shape[1], ih = x->shape[2], iw = x->shape[3];
  cb_tensor *y = cb_tensor_new4(n, c, h, w, err);
  if (!y) return NULL;
  for (int64_t p = 0; p < n * c; p++) {
    const float *src = cb_f32(x) + p * ih * iw;
    float *dst = cb_f32(y) + p * h * w;
    for (int64_t oy = 0; oy < h; oy++) {
      int64_t y0, y1;
      float fy;
      bilinear_tap(oy, ih, h, &y0, &y1, &fy);
      for (int64_t ox = 0; ox < w; ox++) {
        int64_t x0, x1;
        float fx;
        bilinear_tap(ox, iw, w, &x0, &x1, &fx);
        float top = src[y0 * iw + x0] * (1 - fx) + src[y0 * iw + x1] * fx;
        float bottom = src[y1 * iw + x0] * (1 - fx) + src[y1 * iw + x1] * fx;
        dst[oy * w + ox] = top * (1 - fy) + bottom * fy;
      }
    }
  }
  return y;
}

cb_tensor *cb_pad_to(const cb_tensor *x, int64_t h, int64_t w, float value, cb_error *err) {
  if (check_nchw(x, "pad", err)) return NULL;
  int64_t n = x->shape[0], c = x->shape[1], ih = x->shape[2], iw = x->shape[3];
  if (h < ih || w < iw) {
    cb_fail(err, "pad: target %lldx%lld is smaller than the image %lldx%lld", (long long)h,
            (long long)w, (long long)ih, (long long)iw);
    return NULL;
  }
  cb_tensor *y = cb_tensor_new4(n, c, h, w, err);
  if (!y) return NULL;
  for (int64_t p = 0; p < n * c; p++)
    for (int64_t r = 0; r < h; r++)
      for (int64_t q = 0; q < w; q++)
        cb_f32(y)[(p * h + r) * w + q] =
            r < ih && q < iw ? cb_f32(x)[(p * ih + r) * iw + q] : value;
  return y;
}

static int read_triple(json_t *list, const char *path, float out[3], cb_error *err) {
  if (!json_is_array(list) || json_array_size(list) != 3)
    return cb_fail(err, "%s: expected a list of 3 numbers", path);
  for (size_t i = 0; i < 3; i++) {
    json_t *v = json_array_get(list, i);
    if (!json_is_number(v)) return cb_fail(err, "%s[%zu]: expected a number", path, i);
    out[i] = (float)json_number_value(v);
  }
  return 0;
}

static json_t *find_norm_cfg(json_t *config, const char **where, bool *old_style) {
  json_t *model = json_object_get(config, "model");
  json_t *dp = json_object_get(model, "data_preprocessor");
  *old_style = false;
  if (json_is_object(dp)) {
    *where = "model.data_preprocessor";
    return dp;
  }
  dp = json_object_get(config, "data_preprocessor");
  if (json_is_object(dp)) {
    *where = "data_preprocessor";
    return dp;
  }
  *old_style = true;
  *where = "img_norm_cfg";
  return json_object_get(config, "img_norm_cfg");
}

int cb_image_norm_from_config(json_t *config, cb_image_norm *norm, bool *found, cb_error *err) {
  const char *where;
  bool old_style;
  json_t *cfg = find_norm_cfg(config, &where, &old_style);
  *norm = (cb_image_norm){{0, 0, 0}, {1, 1, 1}, false, 0};
  *found = json_is_object(cfg);
  if (!*found) return 0;
  char path[128];
  snprintf(path, sizeof path, "%s.mean", where);
  if (read_triple(json_object_get(cfg, "mean"), path, norm->mean, err)) return -1;
  snprintf(path, sizeof path, "%s.std", where);
  if (read_triple(json_object_get(cfg, "std"), path, norm->std, err)) return -1;
  for (int i = 0; i < 3; i++)
    if (norm->std[i] == 0) return cb_fail(err, "%s.std[%d]: must not be 0", where, i);
  json_t *flip = json_object_get(cfg, old_style ? "to_rgb" : "bgr_to_rgb");
  if (flip && !json_is_boolean(flip))
    return cb_fail(err, "%s.%s: expected true or false", where,
                   old_style ? "to_rgb" : "bgr_to_rgb");
  norm->bgr_to_rgb = json_is_true(flip);
  json_t *pad = json_object_get(cfg, "pad_val");
  if (json_is_number(pad)) norm->pad_val = (float)json_number_value(pad);
  return 0;
}

void cb_image_normalize(cb_tensor *x, const cb_image_norm *norm) {
  int64_t n = x->shape[0], plane = x->shape[2] * x->shape[3];
  for (int64_t b = 0; b < n; b++) {
    float *img = cb_f32(x) + b * 3 * plane;
    if (!norm->bgr_to_rgb)
      for (int64_t i = 0; i < plane; i++) {
        float red = img[i];
        img[i] = img[2 * plane + i];
        img[2 * plane + i] = red;
      }
    for (int c = 0; c < 3; c++)
      for (int64_t i = 0; i < plane; i++)
        img[c * plane + i] = (img[c * plane + i] - norm->mean[c]) / norm->std[c];
  }
}

/* A compact perceptual colour ramp (dark blue -> teal -> yellow). */
static void colour(float t, unsigned char rgb[3]) {
  static const float stops[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  float pos = t * 4;
  int i = (int)pos;
  if (i > 3) i = 3;
  float f = pos - (float)i;
  for (int c = 0; c < 3; c++)
    rgb[c] = (unsigned char)(stops[i][c] * (1 - f) + stops[i + 1][c] * f);
}

static float *channel_mean(const cb_tensor *feat, int64_t b) {
  int64_t c = feat->shape[1], plane = feat->shape[2] * feat->shape[3];
  float *mean = calloc((size_t)plane, sizeof *mean);
  if (!mean) return NULL;
  const float *src = cb_f32(feat) + b * c * plane;
  for (int64_t k = 0; k < c; k++)
    for (int64_t i = 0; i < plane; i++)
      mean[i] += src[k * plane + i] / (float)c;
  return mean;
}

static int write_png_rgb(const char *path, const unsigned char *pixels, int w, int h,
                         cb_error *err) {
  png_image image;
  memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = (png_uint_32)w;
  image.height = (png_uint_32)h;
  image.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&image, path, 0, pixels, 0, NULL))
    return cb_fail(err, "%s: cannot write PNG: %s", path, image.message);
  return 0;
}

int cb_heatmap_write_png(const cb_tensor *feat, int64_t b, int min_side, const char *path,
                         cb_error *err) {
  if (check_nchw(feat, "heat map", err)) return -1;
  int64_t h = feat->shape[2], w = feat->shape[3];
  int64_t scale = 1;
  while ((h * scale < min_side || w * scale < min_side) && scale < 64)
    scale++;
  float *mean = channel_mean(feat, b);
  unsigned char *pixels = malloc((size_t)(h * scale * w * scale * 3));
  if (!mean || !pixels) {
    free(mean);
    free(pixels);
    return cb_fail(err, "%s: out of memory", path);
  }
  float lo = mean[0], hi = mean[0];
  for (int64_t i = 0; i < h * w; i++) {
    lo = fminf(lo, mean[i]);
    hi = fmaxf(hi, mean[i]);
  }
  float range = hi > lo ? hi - lo : 1;
  for (int64_t y = 0; y < h * scale; y++)
    for (int64_t x = 0; x < w * scale; x++)
      colour((mean[(y / scale) * w + x / scale] - lo) / range, pixels + (y * w * scale + x) * 3);
  int rc = write_png_rgb(path, pixels, (int)(w * scale), (int)(h * scale), err);
  free(mean);
  free(pixels);
  return rc;
}
