#ifndef CBRICK_IMAGE_H
#define CBRICK_IMAGE_H

#include <stdbool.h>
#include <jansson.h>
#include "tensor.h"

/* A PNG or JPEG file as a 1x3xHxW float32 tensor, RGB order, values 0..255. */
CB_API cb_tensor *cb_image_read(const char *path, cb_error *err);

/* Bilinear resize of an NCHW tensor, align_corners=False (PyTorch's and OpenCV's rule). */
CB_API cb_tensor *cb_resize_bilinear(const cb_tensor *x, int64_t h, int64_t w, cb_error *err);
/* Pads at the bottom and right to h x w with value, as mmseg's padding does. */
CB_API cb_tensor *cb_pad_to(const cb_tensor *x, int64_t h, int64_t w, float value, cb_error *err);

/* mmseg's input normalisation: (x - mean) / std per channel after an optional
 * channel flip (images are read as RGB; bgr_to_rgb false means the model wants BGR). */
typedef struct cb_image_norm {
  float mean[3];
  float std[3];
  bool bgr_to_rgb;
  float pad_val;
} cb_image_norm;

/* From the config's data_preprocessor (top level or model.data_preprocessor, mmseg 1.x)
 * or img_norm_cfg (mmseg 0.x); *found is false when the config has neither. */
CB_API int cb_image_norm_from_config(json_t *config, cb_image_norm *norm, bool *found,
                                     cb_error *err);
CB_API void cb_image_normalize(cb_tensor *x, const cb_image_norm *norm);

/* One PNG heat map of feature map [b] (mean over channels, min-max scaled, upscaled
 * to at least min_side pixels). */
CB_API int cb_heatmap_write_png(const cb_tensor *feat, int64_t b, int min_side, const char *path,
                                cb_error *err);

#endif
