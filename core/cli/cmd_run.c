#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cbrick/guard.h>
#include "cli.h"

typedef struct run_args {
  cli_model_args model;
  const char *weights, *prefix, *input, *shape, *output, *save_weights;
  const char *image, *resize, *pad, *viz, *max_memory;
  const char *threads;
  bool non_strict, train, reference;
  int64_t memory_limit;
} run_args;

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The option at argv[i] that takes a value, or NULL. */
static const char **value_slot(run_args *r, const char *arg) {
  if (strcmp(arg, "--weights") == 0) return &r->weights;
  if (strcmp(arg, "--prefix") == 0) return &r->prefix;
  if (strcmp(arg, "--input") == 0) return &r->input;
  if (strcmp(arg, "--shape") == 0) return &r->shape;
  if (strcmp(arg, "--output") == 0) return &r->output;
  if (strcmp(arg, "--save-weights") == 0) return &r->save_weights;
  if (strcmp(arg, "--image") == 0) return &r->image;
  if (strcmp(arg, "--resize") == 0) return &r->resize;
  if (strcmp(arg, "--pad") == 0) return &r->pad;
  if (strcmp(arg, "--viz") == 0) return &r->viz;
  if (strcmp(arg, "--threads") == 0) return &r->threads;
  if (strcmp(arg, "--max-memory") == 0) return &r->max_memory;
  return NULL;
}

static int check(run_args *r) {
  cb_error err = {0};
  r->memory_limit = cb_memory_default_limit();
  if (r->max_memory && cb_memory_parse_size(r->max_memory, &r->memory_limit, &err))
    return cli_usage_error(CLI_USAGE_RUN, "--max-memory: %s", err.msg);
  if (!r->model.config) return cli_usage_error(CLI_USAGE_RUN, "run: CONFIG is missing");
  if (!!r->input + !!r->shape + !!r->image != 1)
    return cli_usage_error(CLI_USAGE_RUN, "run: give exactly one of --input, --shape and --image");
  if (!r->image && (r->resize || r->pad))
    return cli_usage_error(CLI_USAGE_RUN, "run: --resize and --pad need --image");
  if (!r->weights && (r->prefix || r->non_strict))
    return cli_usage_error(CLI_USAGE_RUN, "run: --prefix and --non-strict need --weights");
  if (r->output && !ends_with(r->output, ".safetensors") && !ends_with(r->output, ".npy"))
    return cli_usage_error(CLI_USAGE_RUN, "run: --output must end in .safetensors or .npy");
  return CLI_OK;
}

static int parse(run_args *r, int argc, char **argv) {
  for (int i = 0; i < argc;) {
    int used = cli_model_arg(&r->model, argc, argv, &i, CLI_USAGE_RUN);
    if (used < 0) return CLI_USAGE;
    if (used) continue;
    const char **slot = value_slot(r, argv[i]);
    if (slot) {
      if (i + 1 >= argc) return cli_usage_error(CLI_USAGE_RUN, "%s needs a value", argv[i]);
      *slot = argv[i + 1];
      i += 2;
    } else if (strcmp(argv[i], "--non-strict") == 0) {
      r->non_strict = true, i++;
    } else if (strcmp(argv[i], "--train") == 0) {
      r->train = true, i++;
    } else if (strcmp(argv[i], "--reference") == 0) {
      r->reference = true, i++;
    } else {
      return cli_usage_error(CLI_USAGE_RUN, "run: unknown option '%s'", argv[i]);
    }
  }
  return check(r);
}

/* "HxW" into h, w. */
static int parse_size(const char *option, const char *text, int64_t *h, int64_t *w, cb_error *err) {
  int ndim;
  int64_t dims[CB_MAX_DIMS];
  if (cb_shape_parse(text, &ndim, dims, err)) return cb_error_prefix(err, "%s: ", option);
  if (ndim != 2) return cb_fail(err, "%s: expected HxW, found '%s'", option, text);
  *h = dims[0];
  *w = dims[1];
  return 0;
}

static cb_tensor *replace(cb_tensor *old, cb_tensor *new_tensor) {
  cb_tensor_free(old);
  return new_tensor;
}

/* mmseg's path: read (RGB), resize, flip to the model's channel order, normalise, pad. */
static cb_tensor *image_input(const run_args *r, json_t *cfg, cb_error *err) {
  cb_image_norm norm;
  bool found;
  int64_t h = 0, w = 0;
  if (cb_image_norm_from_config(cfg, &norm, &found, err)) return NULL;
  if (!found)
    cb_warn("%s: no data_preprocessor or img_norm_cfg; feeding raw 0..255 RGB pixels",
            r->model.config);
  cb_tensor *x = cb_image_read(r->image, err);
  if (x && r->resize)
    x = parse_size("--resize", r->resize, &h, &w, err)
            ? replace(x, NULL)
            : replace(x, cb_resize_bilinear(x, h, w, err));
  if (x && found) cb_image_normalize(x, &norm);
  if (x && r->pad)
    x = parse_size("--pad", r->pad, &h, &w, err)
            ? replace(x, NULL)
            : replace(x, cb_pad_to(x, h, w, norm.pad_val, err));
  return x;
}

static int guard(cb_module *m, const run_args *r, int ndim, const int64_t *shape, cb_error *err) {
  int64_t need;
  if (cb_memory_estimate(m, ndim, shape, &need, err))
    return cb_error_prefix(err, "%s: forward: ", r->model.config);
  return cb_memory_check(need, ndim, shape, r->memory_limit, "--max-memory", err);
}

static cb_tensor *checked_input(cb_module *m, const run_args *r, cb_tensor *x, cb_error *err) {
  return x && guard(m, r, x->ndim, x->shape, err) ? replace(x, NULL) : x;
}

/* The input, refused before the forward (and, for --shape, before allocating it) when the
 * forward's estimated memory exceeds --max-memory. */
static cb_tensor *make_input(cb_module *m, const run_args *r, json_t *cfg, cb_error *err) {
  if (r->input) return checked_input(m, r, cb_npy_read(r->input, err), err);
  if (r->image) return checked_input(m, r, image_input(r, cfg, err), err);
  int ndim;
  int64_t dims[CB_MAX_DIMS];
  if (cb_shape_parse(r->shape, &ndim, dims, err)) {
    cb_error_prefix(err, "--shape: ");
    return NULL;
  }
  if (guard(m, r, ndim, dims, err)) return NULL;
  cb_tensor *x = cb_tensor_new(CB_F32, ndim, dims, err);
  if (!x) return NULL;
  cb_rng rng;
  cb_rng_seed(&rng, r->model.seed + 1);
  float *p = cb_f32(x);
  for (int64_t i = 0; i < cb_tensor_numel(x); i++)
    p[i] = (float)cb_rng_normal(&rng);
  return x;
}

static int load_weights(cb_module *m, const run_args *r, cb_error *err) {
  cb_weights *w = cb_checkpoint_read(r->weights, err);
  if (!w) return -1;
  int rc = cb_module_load_weights(m, w, r->prefix, !r->non_strict, stderr, err);
  cb_weights_free(w);
  return rc ? cb_error_prefix(err, "%s: ", r->weights) : 0;
}

static int save_weights(cb_module *m, const char *path, cb_error *err) {
  cb_weights *w = cb_module_state_dict(m, err);
  int rc = w ? cb_safetensors_write(path, w, NULL, err) : -1;
  cb_weights_free(w);
  return rc;
}

static void summarize(int i, const cb_tensor *t) {
  int64_t n = cb_tensor_numel(t);
  double sum = 0, sq = 0;
  for (int64_t k = 0; k < n; k++)
    sum += cb_f32(t)[k];
  double mean = n ? sum / (double)n : 0;
  for (int64_t k = 0; k < n; k++)
    sq += (cb_f32(t)[k] - mean) * (cb_f32(t)[k] - mean);
  char shape[128];
  cb_shape_format(t->ndim, t->shape, shape, sizeof(shape));
  printf("feat.%d: %s mean=%.6g std=%.6g\n", i, shape, mean,
         n > 1 ? sqrt(sq / (double)(n - 1)) : 0.0);
}

static int write_npy(const char *path, const cb_tensor_list *outs, cb_error *err) {
  if (outs->n == 1) return cb_npy_write(path, outs->items[0], err);
  size_t stem = strlen(path) - strlen(".npy");
  for (int i = 0; i < outs->n; i++) {
    char *name = malloc(stem + 32);
    if (!name) return cb_fail(err, "out of memory");
    snprintf(name, stem + 32, "%.*s.%d.npy", (int)stem, path, i);
    int rc = cb_npy_write(name, outs->items[i], err);
    free(name);
    if (rc) return -1;
  }
  return 0;
}

static int write_outputs(const char *path, const cb_tensor_list *outs, cb_error *err) {
  if (ends_with(path, ".npy")) return write_npy(path, outs, err);
  cb_weights *w = cb_weights_new(err);
  if (!w) return -1;
  int rc = 0;
  for (int i = 0; rc == 0 && i < outs->n; i++) {
    char name[32];
    snprintf(name, sizeof(name), "feat.%d", i);
    cb_tensor *t = cb_tensor_clone(outs->items[i], err);
    rc = t ? cb_weights_add(w, name, t, err) : -1;
  }
  if (rc == 0) rc = cb_safetensors_write(path, w, NULL, err);
  cb_weights_free(w);
  return rc;
}

static int write_heatmaps(const char *dir, const cb_tensor_list *outs, cb_error *err) {
  if (mkdir(dir, 0777) != 0) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
      return cb_fail(err, "--viz %s: cannot create the folder", dir);
  }
  for (int i = 0; i < outs->n; i++) {
    char path[4096];
    size_t n = strlen(dir);
    snprintf(path, sizeof path, "%s%sfeat.%d.png", dir, n && dir[n - 1] == '/' ? "" : "/", i);
    if (cb_heatmap_write_png(outs->items[i], 0, 256, path, err)) return -1;
    printf("heat map: %s\n", path);
  }
  return 0;
}

static int forward(cb_module *m, json_t *cfg, const run_args *r, cb_error *err) {
  cb_tensor *x = make_input(m, r, cfg, err);
  if (!x) return -1;
  cb_tensor_list outs = {0};
  cb_module_train(m, r->train);
  double start = cli_now_ms();
  int rc = r->train || r->reference ? cb_module_forward_multi(m, x, &outs, err)
                                    : cli_forward_plan(m, x, r->threads, &outs, err);
  double ms = cli_now_ms() - start;
  if (rc) cb_error_prefix(err, "%s: forward: ", r->model.config);
  for (int i = 0; rc == 0 && i < outs.n; i++)
    summarize(i, outs.items[i]);
  if (rc == 0) printf("forward: %.1f ms\n", ms);
  if (rc == 0 && r->output) rc = write_outputs(r->output, &outs, err);
  if (rc == 0 && r->viz) rc = write_heatmaps(r->viz, &outs, err);
  cb_tensor_list_clear(&outs);
  cb_tensor_free(x);
  return rc;
}

int cmd_run(int argc, char **argv, const cli_globals *g) {
  run_args r = {0};
  cb_error err = {0};
  cb_module *m = NULL;
  json_t *cfg = NULL;
  int rc = parse(&r, argc, argv);
  if (rc == CLI_OK) {
    bool init = !r.weights || r.non_strict;
    rc = CLI_FAIL;
    if (cli_load_plugins(g, &err) == 0 && (cfg = cli_load_config(&r.model, &err)) &&
        (m = cli_build_backbone(cfg, &r.model, init, &err)) &&
        (!r.weights || load_weights(m, &r, &err) == 0) &&
        (!r.save_weights || save_weights(m, r.save_weights, &err) == 0) &&
        forward(m, cfg, &r, &err) == 0)
      rc = CLI_OK;
    if (rc != CLI_OK) cli_fail("%s", err.msg);
  }
  cb_module_free(m);
  json_decref(cfg);
  cli_model_args_free(&r.model);
  return rc;
}
