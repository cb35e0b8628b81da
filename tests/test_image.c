#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cbrick.h>

static float pixel(const cb_tensor *t, int c, int y, int x) {
  return cb_f32(t)[(c * t->shape[2] + y) * t->shape[3] + x];
}

Test(image, reads_png_as_rgb) {
  cb_error err = {0};
  cb_tensor *t = cb_image_read("tests/data/images/scene.png", &err);
  cr_assert_not_null(t, "%s", err.msg);
  cr_assert_eq(t->shape[1], 3);
  cr_assert_eq(t->shape[2], 240);
  cr_assert_eq(t->shape[3], 320);
  /* The sun is drawn in (250, 220, 90). */
  cr_assert_float_eq(pixel(t, 0, 38, 270), 250.0f, 0.5f);
  cr_assert_float_eq(pixel(t, 1, 38, 270), 220.0f, 0.5f);
  cr_assert_float_eq(pixel(t, 2, 38, 270), 90.0f, 0.5f);
  cb_tensor_free(t);
}

Test(image, jpeg_matches_png_closely) {
  cb_error err = {0};
  cb_tensor *png = cb_image_read("tests/data/images/scene.png", &err);
  cb_tensor *jpg = cb_image_read("tests/data/images/scene.jpg", &err);
  cr_assert_not_null(jpg, "%s", err.msg);
  cr_assert(cb_tensor_same_shape(png, jpg));
  double diff = 0;
  for (int64_t i = 0; i < cb_tensor_numel(png); i++)
    diff += fabs(cb_f32(png)[i] - cb_f32(jpg)[i]);
  cr_assert_lt(diff / (double)cb_tensor_numel(png), 4.0, "JPEG decodes to the same picture");
  cb_tensor_free(png);
  cb_tensor_free(jpg);
}

Test(image, bad_files) {
  cb_error err = {0};
  cr_assert_null(cb_image_read("tests/data/images/missing.png", &err));
  cr_assert(strstr(err.msg, "missing.png: cannot open image"), "%s", err.msg);
  cr_assert_null(cb_image_read("Makefile", &err));
  cr_assert(strstr(err.msg, "Makefile: not a PNG or JPEG file"), "%s", err.msg);
  char path[] = "/tmp/cbrick-trunc-XXXXXX.png";
  int fd = mkstemps(path, 4);
  FILE *src = fopen("tests/data/images/scene.png", "rb");
  char buf[600];
  size_t n = fread(buf, 1, sizeof buf, src);
  fclose(src);
  cr_assert_eq(write(fd, buf, n), (ssize_t)n);
  close(fd);
  cr_assert_null(cb_image_read(path, &err));
  cr_assert(strstr(err.msg, "bad PNG"), "%s", err.msg);
  unlink(path);
}

Test(image, bilinear_resize_matches_pytorch) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 1, 2, 3, &err);
  for (int i = 0; i < 6; i++)
    cb_f32(x)[i] = (float)i;
  cb_tensor *y = cb_resize_bilinear(x, 3, 5, &err);
  /* torch.nn.functional.interpolate(..., mode='bilinear', align_corners=False) */
  const float want[15] = {0.0f, 0.4f, 1.0f, 1.6f, 2.0f, 1.5f, 1.9f, 2.5f,
                          3.1f, 3.5f, 3.0f, 3.4f, 4.0f, 4.6f, 5.0f};
  for (int i = 0; i < 15; i++)
    cr_assert_float_eq(cb_f32(y)[i], want[i], 1e-5, "at %d", i);
  cb_tensor_free(x);
  cb_tensor_free(y);
  x = cb_tensor_new4(1, 1, 4, 4, &err);
  for (int i = 0; i < 16; i++)
    cb_f32(x)[i] = (float)i;
  y = cb_resize_bilinear(x, 3, 2, &err);
  const float down[6] = {1.1666667f, 3.1666667f, 6.5f, 8.5f, 11.833334f, 13.833334f};
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(cb_f32(y)[i], down[i], 1e-5, "at %d", i);
  cb_tensor_free(x);
  cb_tensor_free(y);
}

Test(image, pad_and_normalize_from_config) {
  cb_error err = {0};
  json_t *cfg = json_loads("{\"model\": {\"data_preprocessor\": {\"mean\": [10, 20, 30], "
                           "\"std\": [2, 4, 5], \"bgr_to_rgb\": false, \"pad_val\": 0}}}",
                           0, NULL);
  cb_image_norm norm;
  bool found;
  cr_assert_eq(cb_image_norm_from_config(cfg, &norm, &found, &err), 0, "%s", err.msg);
  cr_assert(found);
  cb_tensor *x = cb_tensor_new4(1, 3, 1, 1, &err);
  cb_f32(x)[0] = 100; /* R */
  cb_f32(x)[1] = 60;  /* G */
  cb_f32(x)[2] = 40;  /* B */
  cb_image_normalize(x, &norm);
  /* bgr_to_rgb false: the model wants BGR, so channel 0 is blue. */
  cr_assert_float_eq(cb_f32(x)[0], (40 - 10) / 2.0f, 1e-6);
  cr_assert_float_eq(cb_f32(x)[1], (60 - 20) / 4.0f, 1e-6);
  cr_assert_float_eq(cb_f32(x)[2], (100 - 30) / 5.0f, 1e-6);
  cb_tensor *p = cb_pad_to(x, 2, 3, -1.0f, &err);
  cr_assert_eq(p->shape[3], 3);
  cr_assert_float_eq(cb_f32(p)[0], 15.0f, 1e-6);
  cr_assert_float_eq(cb_f32(p)[5], -1.0f, 1e-6);
  cr_assert_null(cb_pad_to(p, 1, 1, 0, &err));
  cr_assert(strstr(err.msg, "smaller than the image"), "%s", err.msg);
  cb_tensor_free(x);
  cb_tensor_free(p);
  json_decref(cfg);
  cfg = json_loads("{\"img_norm_cfg\": {\"mean\": [1, 2], \"std\": [1, 1, 1]}}", 0, NULL);
  cr_assert_eq(cb_image_norm_from_config(cfg, &norm, &found, &err), -1);
  cr_assert(strstr(err.msg, "img_norm_cfg.mean: expected a list of 3 numbers"), "%s", err.msg);
  json_decref(cfg);
}

Test(image, heatmap_png_round_trips) {
  cb_error err = {0};
  cb_tensor *f = cb_tensor_new4(1, 2, 4, 8, &err);
  for (int i = 0; i < 64; i++)
    cb_f32(f)[i] = (float)(i % 8);
  char path[] = "/tmp/cbrick-heat-XXXXXX.png";
  close(mkstemps(path, 4));
  cr_assert_eq(cb_heatmap_write_png(f, 0, 64, path, &err), 0, "%s", err.msg);
  cb_tensor *img = cb_image_read(path, &err);
  cr_assert_not_null(img, "%s", err.msg);
  cr_assert_eq(img->shape[2], 64);
  cr_assert_eq(img->shape[3], 128);
  cr_assert_neq(pixel(img, 0, 0, 0), pixel(img, 0, 0, 127), "left and right differ");
  cb_tensor_free(img);
  cb_tensor_free(f);
  unlink(path);
}
