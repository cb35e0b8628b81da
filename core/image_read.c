#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

#include "cbrick/image.h"

/* Refuse decoded images above 16384 x 16384: larger ones are hostile or corrupt. */
#define MAX_SIDE 16384

static cb_tensor *new_rgb(int64_t h, int64_t w, const char *path, cb_error *err) {
  if (h <= 0 || w <= 0 || h > MAX_SIDE || w > MAX_SIDE) {
    cb_fail(err, "%s: image size %lldx%lld is outside 1..%d pixels per side", path, (long long)w,
            (long long)h, MAX_SIDE);
    return NULL;
  }
  return cb_tensor_new4(1, 3, h, w, err);
}

/* Interleaved 8-bit rows with `channels` channels into planar RGB floats. */
static void store_row(cb_tensor *t, int64_t y, const unsigned char *row, int channels) {
  int64_t h = t->shape[2], w = t->shape[3];
  float *out = cb_f32(t);
  for (int64_t x = 0; x < w; x++)
    for (int c = 0; c < 3; c++) {
      int src = channels >= 3 ? c : 0;
      out[(c * h + y) * w + x] = row[x * channels + src];
    }
}

typedef struct png_failure {
  jmp_buf jump;
  char message[256];
} png_failure;

static void png_error_handler(png_structp png, png_const_charp msg) {
  png_failure *f = png_get_error_ptr(png);
  snprintf(f->message, sizeof f->message, "%s", msg);
  longjmp(f->jump, 1);
}

static void png_warning_handler(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

typedef struct png_rows {
  unsigned char *pixels;
  png_bytep *rows;
} png_rows;

static void free_png_rows(png_rows *r) {
  free(r->rows);
  free(r->pixels);
  r->rows = NULL;
  r->pixels = NULL;
}

static int alloc_png_rows(png_rows *r, int64_t h, int64_t w) {
  r->pixels = malloc((size_t)(h * w * 3));
  r->rows = malloc((size_t)h * sizeof *r->rows);
  if (!r->pixels || !r->rows) return -1;
  for (int64_t y = 0; y < h; y++)
    r->rows[y] = r->pixels + y * w * 3;
  return 0;
}

static cb_tensor *read_png(FILE *file, const char *path, cb_error *err) {
  png_failure failure = {.message = ""};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, png_error_handler,
                                           png_warning_handler);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  cb_tensor *volatile t = NULL;
  png_rows rows = {NULL, NULL};
  if (!png || !info) {
    png_destroy_read_struct(&png, &info, NULL);
    cb_fail(err, "%s: out of memory reading PNG", path);
    return NULL;
  }
  if (setjmp(failure.jump)) {
    cb_tensor_free(t);
    free_png_rows(&rows);
    png_destroy_read_struct(&png, &info, NULL);
    cb_fail(err, "%s: bad PNG: %s", path, failure.message);
    return NULL;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int64_t h = png_get_image_height(png, info), w = png_get_image_width(png, info);
  t = new_rgb(h, w, path, err);
  if (t && alloc_png_rows(&rows, h, w)) {
    cb_tensor_free(t);
    t = NULL;
    cb_fail(err, "%s: out of memory reading PNG", path);
  }
  if (t) {
    png_read_image(png, rows.rows);
    for (int64_t y = 0; y < h; y++)
      store_row(t, y, rows.rows[y], 3);
  }
  free_png_rows(&rows);
  png_destroy_read_struct(&png, &info, NULL);
  return t;
}

typedef struct jpeg_failure {
  struct jpeg_error_mgr mgr;
  jmp_buf jump;
} jpeg_failure;

static void jpeg_exit(j_common_ptr cinfo) {
  jpeg_failure *f = (jpeg_failure *)cinfo->err;
  longjmp(f->jump, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level) {
  (void)cinfo;
  (void)level;
}

static cb_tensor *read_jpeg(FILE *file, const char *path, cb_error *err) {
  struct jpeg_decompress_struct cinfo;
  jpeg_failure failure;
  cb_tensor *volatile t = NULL;
  unsigned char *volatile row = NULL;
  cinfo.err = jpeg_std_error(&failure.mgr);
  failure.mgr.error_exit = jpeg_exit;
  failure.mgr.emit_message = jpeg_quiet;
  if (setjmp(failure.jump)) {
    char message[JMSG_LENGTH_MAX];
    failure.mgr.format_message((j_common_ptr)&cinfo, message);
    jpeg_destroy_decompress(&cinfo);
    cb_tensor_free(t);
    free(row);
    cb_fail(err, "%s: bad JPEG: %s", path, message);
    return NULL;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, file);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  t = new_rgb(cinfo.output_height, cinfo.output_width, path, err);
  row = t ? malloc((size_t)cinfo.output_width * 3) : NULL;
  if (!t || !row) {
    if (t) cb_fail(err, "%s: out of memory reading JPEG", path);
    jpeg_destroy_decompress(&cinfo);
    cb_tensor_free(t);
    free(row);
    return NULL;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[1] = {row};
    int64_t y = cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, rows, 1);
    store_row(t, y, row, 3);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  free(row);
  return t;
}

cb_tensor *cb_image_read(const char *path, cb_error *err) {
  FILE *file = fopen(path, "rb");
  if (!file) {
    cb_fail(err, "%s: cannot open image", path);
    return NULL;
  }
  unsigned char magic[8] = {0};
  size_t got = fread(magic, 1, sizeof magic, file);
  rewind(file);
  cb_tensor *t = NULL;
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0)
    t = read_png(file, path, err);
  else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF)
    t = read_jpeg(file, path, err);
  else
    cb_fail(err, "%s: not a PNG or JPEG file", path);
  fclose(file);
  return t;
}
