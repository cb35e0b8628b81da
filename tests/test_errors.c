/* Bad inputs, one table row each: every one must give an error (never a crash)
 * whose message contains the expected text. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbrick.h>
#include <cbrick/guard.h>

#include "test_util.h"

typedef enum err_kind {
  E_CONFIG,      /* cb_config_load of text (or of the file named after '@') */
  E_OPTION,      /* cb_config_apply_option(text) on a small config */
  E_BUILD,       /* cb_build(registry, text) */
  E_FORWARD,     /* build text, then forward a zero input of shape */
  E_PLUGIN,      /* cb_plugin_load_file of a test plugin (after preloading another) */
  E_SAFETENSORS, /* cb_safetensors_read of a file: 8-byte length + header text + n zero bytes */
  E_NPY,         /* cb_npy_read of a file: .npy v1.0 preamble + header text + n zero bytes */
  E_LOAD,        /* a safetensors file loaded strictly into a built module */
  E_RAW,         /* a file of exactly text (n bytes), read as safetensors then as .npy */
} err_kind;

typedef struct err_case {
  const char *name;
  err_kind kind;
  const char *registry; /* E_BUILD, E_FORWARD, E_LOAD; NULL means BACKBONES */
  const char *model;    /* E_FORWARD, E_LOAD: the module's config */
  const char *text;
  const char *shape;  /* E_FORWARD: input shape; E_PLUGIN: plugin loaded first */
  long long n;        /* data bytes after the header (E_SAFETENSORS, E_NPY, E_LOAD) */
  const char *expect; /* a substring of the message */
} err_case;

#define R18 "{\"type\": \"ResNet\", \"depth\": 18"
#define CONV1 "{\"type\": \"Conv2d\", \"in_channels\": 1, \"out_channels\": 1, \"kernel_size\": 1}"

static err_case cases[] = {
    /* configs */
    {"json_syntax", E_CONFIG, .text = "{\"model\": {\n  \"a\": 1,\n}}",
     .expect = "case.json:3:1: "},
    {"json_unterminated", E_CONFIG, .text = "{\"model\": [1, 2", .expect = "case.json:1:"},
    {"json_duplicate_key", E_CONFIG, .text = "{\"a\": 1, \"a\": 2}", .expect = "duplicate"},
    {"json_top_level_list", E_CONFIG, .text = "[1, 2]",
     .expect = "expected a JSON object at the top level, found"},
    {"json_empty_file", E_CONFIG, .text = "", .expect = "case.json:"},
    {"base_wrong_type", E_CONFIG, .text = "{\"_base_\": 3}",
     .expect = "_base_: expected a path string or a list of them, found"},
    {"base_missing_file", E_CONFIG, .text = "{\"_base_\": \"nowhere.json\"}",
     .expect = "_base_ \"nowhere.json\": cannot find"},
    {"base_cycle", E_CONFIG, .text = "@tests/data/config/cycle_a.json",
     .expect = "_base_ inclusion cycle: "},
    {"base_self_cycle", E_CONFIG, .text = "@tests/data/config/self_cycle.json",
     .expect = "inclusion cycle"},
    {"config_missing", E_CONFIG, .text = "@tests/data/config/no_such_file.json",
     .expect = "no_such_file.json: cannot open config"},
    {"config_is_directory", E_CONFIG, .text = "@tests/data/config", .expect = "is a directory"},
    {"option_without_equals", E_OPTION, .text = "model.backbone.depth",
     .expect = "expected KEY=VALUE"},
    {"option_index_past_end", E_OPTION, .text = "model.backbone.out_indices.7=1",
     .expect = "index 7 is past the end of model.backbone.out_indices"},
    {"option_into_scalar", E_OPTION, .text = "model.backbone.depth.x=1",
     .expect = "nothing can be set inside it"},
    {"option_unbalanced", E_OPTION, .text = "model.backbone.out_indices=[0,1",
     .expect = "unbalanced brackets"},
    {"option_empty_part", E_OPTION, .text = "model..depth=1", .expect = "empty part"},

    /* arguments */
    {"depth_string", E_BUILD, .text = "{\"type\": \"ResNet\", \"depth\": \"50\"}",
     .expect = "model.depth: expected an integer, found a string '50'"},
    {"depth_missing", E_BUILD, .text = "{\"type\": \"ResNet\"}", .expect = "model.depth"},
    {"depth_51", E_BUILD, .text = "{\"type\": \"ResNet\", \"depth\": 51}",
     .expect = "model.depth: invalid depth 51 for resnet: expected one of 18, 34, 50, 101, 152"},
    {"depth_float", E_BUILD, .text = "{\"type\": \"ResNet\", \"depth\": 50.5}",
     .expect = "model.depth: expected an integer, found a float 50.5"},
    {"unknown_key", E_BUILD, .text = R18 ", \"dpeth\": 1}",
     .expect = "model.dpeth: unknown key for type 'ResNet' (did you mean 'depth'?)"},
    {"num_stages_0", E_BUILD, .text = R18 ", \"num_stages\": 0}",
     .expect = "model.num_stages: expected 1 to 4, found 0"},
    {"out_indices_4", E_BUILD, .text = R18 ", \"out_indices\": [0, 4]}",
     .expect = "model.out_indices: item 1: expected a stage index from 0 to 3"},
    {"out_indices_type", E_BUILD, .text = R18 ", \"out_indices\": \"all\"}",
     .expect = "model.out_indices"},
    {"negative_in_channels", E_BUILD, .text = R18 ", \"in_channels\": -3}",
     .expect = "model.in_channels: expected an integer from 1"},
    {"dilation_0", E_BUILD, .text = R18 ", \"dilations\": [1, 1, 0, 1]}",
     .expect = "model.dilations: item 2: expected a positive integer, found 0"},
    {"strides_too_few", E_BUILD, .text = R18 ", \"strides\": [1, 2]}",
     .expect = "model.strides: expected one value per stage (num_stages = 4), found 2"},
    {"style_unknown", E_BUILD, .text = R18 ", \"style\": \"keras\"}",
     .expect = "model.style: expected 'pytorch' or 'caffe', found 'keras'"},
    {"norm_cfg_list", E_BUILD, .text = R18 ", \"norm_cfg\": [1]}", .expect = "model.norm_cfg"},
    {"norm_type_unknown", E_BUILD, .text = R18 ", \"norm_cfg\": {\"type\": \"BN3\"}}",
     .expect = "'BN3' is not in the NORM_LAYERS registry (did you mean"},
    {"conv_cfg_unknown", E_BUILD, .text = R18 ", \"conv_cfg\": {\"type\": \"Conv3x\"}}",
     .expect = "'Conv3x' is not in the CONV_LAYERS registry"},
    {"conv_negative_channels", E_BUILD, "CONV_LAYERS",
     .text = "{\"type\": \"Conv2d\", \"in_channels\": -1, \"out_channels\": 1, \"kernel_size\": 1}",
     .expect = "model.in_channels: must be a positive channel count, found -1"},
    {"conv_dilation_0", E_BUILD, "CONV_LAYERS",
     .text = "{\"type\": \"Conv2d\", \"in_channels\": 1, \"out_channels\": 1, \"kernel_size\": 1, "
             "\"dilation\": 0}",
     .expect = "model.dilation: must be between 1 and"},
    {"conv_groups", E_BUILD, "CONV_LAYERS",
     .text = "{\"type\": \"Conv2d\", \"in_channels\": 3, \"out_channels\": 4, \"kernel_size\": 1, "
             "\"groups\": 2}",
     .expect = "model.groups: in_channels=3 is not divisible by groups=2"},
    {"bn_negative_features", E_BUILD, "NORM_LAYERS",
     .text = "{\"type\": \"BN\", \"num_features\": -2}",
     .expect = "model.num_features: must be a positive channel count, found -2"},
    {"not_an_object", E_BUILD, .text = "[1]", .expect = "model: expected an object"},
    {"type_missing", E_BUILD, .text = "{\"depth\": 50}", .expect = "model: missing \"type\""},
    {"type_not_string", E_BUILD, .text = "{\"type\": 5}",
     .expect = "model.type: expected a string"},

    /* registries */
    {"unknown_backbone", E_BUILD, .text = "{\"type\": \"ResNet5\"}",
     .expect = "model.type: 'ResNet5' is not in the BACKBONES registry (did you mean 'ResNet'?"},
    {"unknown_conv", E_BUILD, "CONV_LAYERS", .text = "{\"type\": \"Conv2e\"}",
     .expect = "'Conv2e' is not in the CONV_LAYERS registry (did you mean 'Conv2d'?"},
    {"unknown_norm", E_BUILD, "NORM_LAYERS", .text = "{\"type\": \"SyncBM\"}",
     .expect = "'SyncBM' is not in the NORM_LAYERS registry (did you mean 'SyncBN'?"},
    {"unknown_plugin_layer", E_BUILD, "PLUGIN_LAYERS", .text = "{\"type\": \"ContextBlok\"}",
     .expect = "'ContextBlok' is not in the PLUGIN_LAYERS registry (did you mean 'ContextBlock'?"},
    {"unknown_registry", E_BUILD, "NO_SUCH_REGISTRY", .text = "{\"type\": \"X\"}",
     .expect = "'X' is not in the NO_SUCH_REGISTRY registry, which is empty"},

    /* forward */
    {"channels_mismatch", E_FORWARD, .model = R18 "}", .shape = "1x4x32x32",
     .expect = "4 channels"},
    {"input_not_4d", E_FORWARD, .model = R18 "}", .shape = "3x32x32", .expect = "4-D"},
    {"kernel_bigger_than_input", E_FORWARD, "CONV_LAYERS",
     .model = "{\"type\": \"Conv2d\", \"in_channels\": 1, \"out_channels\": 1, \"kernel_size\": 7}",
     .shape = "1x1x3x3", .expect = "larger than the padded input"},
    {"pool_bigger_than_input", E_FORWARD, "POOLING_LAYERS",
     .model = "{\"type\": \"MaxPool2d\", \"kernel_size\": 5}", .shape = "1x1x3x3",
     .expect = "larger than the padded input"},
    {"empty_input", E_FORWARD, .model = R18 "}", .shape = "1x3x0x32",
     .expect = "is larger than the padded input 6x38"},

    /* plugins */
    {"plugin_missing", E_PLUGIN, .text = "nope.so", .expect = "nope.so: no such file"},
    {"plugin_not_elf", E_PLUGIN, .text = "@notelf", .expect = "cannot load"},
    {"plugin_no_entry", E_PLUGIN, .text = "no_entry.so",
     .expect = "no_entry.so: no entry point 'cbrick_plugin_info'"},
    {"plugin_wrong_abi", E_PLUGIN, .text = "abi_mismatch.so",
     .expect = "abi_mismatch.so: built for cbrick ABI version "},
    {"plugin_duplicate", E_PLUGIN, .text = "duplicate_scale.so", .shape = "scale_layer.so",
     .expect = "Scale is already registered in PLUGIN_LAYERS by"},
    {"plugin_init_fails", E_PLUGIN, .text = "init_fails.so", .expect = "init_fails.so"},

    /* safetensors */
    {"st_truncated_data", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", .n = 8,
     .expect = "but the header says"},
    {"st_offsets_disagree", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 8]}}", .n = 8,
     .expect = "tensor 'w': data_offsets [0, 8] hold 8 bytes, but F32 shape needs 16"},
    {"st_unknown_dtype", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"Q4\", \"shape\": [4], \"data_offsets\": [0, 8]}}", .n = 8,
     .expect = "tensor 'w': unknown dtype 'Q4'"},
    {"st_unsupported_dtype", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", .n = 8,
     .expect = "tensor 'w' has dtype I32, which cbrick does not read"},
    {"st_absurd_shape", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], "
             "\"data_offsets\": [0, 8]}}",
     .n = 8, .expect = "shape is too large (size overflows)"},
    {"st_absurd_but_consistent", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"F32\", \"shape\": [1000000, 1000000], "
             "\"data_offsets\": [0, 4000000000000]}}",
     .n = 8, .expect = "but the header says"},
    {"st_negative_dim", E_SAFETENSORS,
     .text = "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", .n = 8,
     .expect = "shape[0] is negative (-2)"},
    {"st_overlap", E_SAFETENSORS,
     .text = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
             "\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
     .n = 8, .expect = "overlaps"},
    {"st_header_not_json", E_SAFETENSORS, .text = "{\"w\": ", .n = 0,
     .expect = "header is not valid JSON (line 1"},
    {"st_metadata_not_strings", E_SAFETENSORS, .text = "{\"__metadata__\": {\"a\": 1}}",
     .expect = "__metadata__['a'] must be a string"},
    {"st_short_file", E_RAW, .text = "\x10\0\0", .n = 3, .expect = "too short"},
    {"st_header_past_eof", E_RAW, .text = "\x40\0\0\0\0\0\0\0{}", .n = 10,
     .expect = "header length 64 runs past the end of the file"},
    {"st_header_absurd", E_RAW, .text = "\xff\xff\xff\xff\xff\xff\xff\x7f{}", .n = 10,
     .expect = "is larger than the 100 MB limit"},

    /* checkpoints into a model */
    {"load_wrong_shape", E_LOAD, "CONV_LAYERS", .model = CONV1,
     .text =
         "{\"weight\": {\"dtype\": \"F32\", \"shape\": [2, 1, 1, 1], \"data_offsets\": [0, 8]}, "
         "\"bias\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
     .n = 12, .expect = "shape mismatch for weight: checkpoint 2x1x1x1, model 1x1x1x1"},
    {"load_missing_key", E_LOAD, "CONV_LAYERS", .model = CONV1,
     .text =
         "{\"weight\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1], \"data_offsets\": [0, 4]}}",
     .n = 4, .expect = "1 missing, 0 unexpected, 0 shape mismatches (first: missing key: bias)"},
    {"load_unexpected_key", E_LOAD, "CONV_LAYERS", .model = CONV1,
     .text =
         "{\"weight\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1], \"data_offsets\": [0, 4]}, "
         "\"bias\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}, "
         "\"extra\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
     .n = 12, .expect = "unexpected key: extra"},

    /* .npy */
    {"npy_bad_magic", E_RAW, .text = "\x93NUMPZ\x01\x00\x00\x00", .n = 10, .expect = "bad magic"},
    {"npy_wrong_dtype", E_NPY, .text = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
     .n = 16, .expect = "dtype '<f8' is not supported (only '<f4'"},
    {"npy_big_endian", E_NPY, .text = "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
     .n = 8, .expect = "dtype '>f4' is not supported"},
    {"npy_fortran", E_NPY, .text = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
     .n = 16, .expect = "fortran_order is True"},
    {"npy_no_shape", E_NPY, .text = "{'descr': '<f4', 'fortran_order': False, }", .n = 4,
     .expect = "header lacks 'shape'"},
    {"npy_not_a_dict", E_NPY, .text = "['descr']", .n = 4, .expect = "bad header: expected '{'"},
    {"npy_truncated_data", E_NPY,
     .text = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }", .n = 60,
     .expect = "truncated: data of shape 4x4 needs 64 bytes, the file has 60"},
    {"npy_absurd_shape", E_NPY,
     .text = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
     .n = 16, .expect = "needs 18446744073709551615 bytes"},
    {"npy_huge_dimension", E_NPY,
     .text = "{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999999999999,), }",
     .n = 4, .expect = "dimension too large"},
};

static char work_dir[256];

static void make_work_dir(void) {
  snprintf(work_dir, sizeof work_dir, "/tmp/cbrick-errors-XXXXXX");
  cr_assert_not_null(mkdtemp(work_dir));
}

static void remove_work_dir(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", work_dir);
  if (work_dir[0] && system(cmd) != 0) cr_log_warn("could not remove %s", work_dir);
}

static void setup(void) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_default(&err), 0, "%s", err.msg);
  make_work_dir();
}

static void teardown(void) {
  remove_work_dir();
  cb_plugin_unload_all();
}

static const char *work_file(const char *name) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", work_dir, name);
  return path;
}

static const char *write_file(const char *name, const void *head, size_t head_len, const void *body,
                              size_t body_len, long long zeros) {
  const char *path = work_file(name);
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "cannot create %s", path);
  cr_assert_eq(fwrite(head, 1, head_len, f), head_len);
  if (body_len) cr_assert_eq(fwrite(body, 1, body_len, f), body_len);
  for (long long i = 0; i < zeros; i++)
    fputc(0, f);
  cr_assert_eq(fclose(f), 0);
  return path;
}

static const char *write_safetensors(const char *header, long long data_bytes) {
  unsigned char len8[8];
  uint64_t n = strlen(header);
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)(n >> (8 * i));
  return write_file("case.safetensors", len8, 8, header, n, data_bytes);
}

static const char *write_npy(const char *header, long long data_bytes) {
  size_t n = strlen(header);
  unsigned char pre[10] = {
      0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
  return write_file("case.npy", pre, 10, header, n, data_bytes);
}

static json_t *parse_json(const char *text) {
  json_error_t jerr;
  json_t *j = json_loads(text, 0, &jerr);
  cr_assert_not_null(j, "bad test JSON %s: %s", text, jerr.text);
  return j;
}

static cb_module *build_text(const char *registry, const char *text, cb_error *err) {
  json_t *cfg = parse_json(text);
  cb_module *m = cb_build(registry ? registry : "BACKBONES", cfg, NULL, "model", err);
  json_decref(cfg);
  return m;
}

static int run_config(const err_case *c, cb_error *err) {
  const char *path = c->text[0] == '@'
                         ? c->text + 1
                         : write_file("case.json", c->text, strlen(c->text), NULL, 0, 0);
  json_t *cfg = cb_config_load(path, err);
  json_decref(cfg);
  return cfg ? 0 : -1;
}

static int run_option(const err_case *c, cb_error *err) {
  json_t *cfg = parse_json("{\"model\": {\"backbone\": {\"depth\": 50, \"out_indices\": [0, 1]}}}");
  int rc = cb_config_apply_option(cfg, c->text, err);
  json_decref(cfg);
  return rc;
}

static int run_build(const err_case *c, cb_error *err) {
  cb_module *m = build_text(c->registry, c->text, err);
  cb_module_free(m);
  return m ? 0 : -1;
}

static int forward_all(cb_module *m, const cb_tensor *x, cb_error *err) {
  cb_tensor_list outs = {0};
  int rc = cb_module_forward_multi(m, x, &outs, err);
  cb_tensor_list_clear(&outs);
  return rc;
}

static int run_forward(const err_case *c, cb_error *err) {
  cb_module *m = build_text(c->registry, c->model, err);
  cr_assert_not_null(m, "the model of case %s does not build: %s", c->name, err->msg);
  cb_module_train(m, false);
  int ndim = 0;
  int64_t shape[CB_MAX_DIMS];
  for (const char *p = c->shape; *p && ndim < CB_MAX_DIMS; p += *p == 'x') {
    char *end;
    shape[ndim++] = strtoll(p, &end, 10); /* zero sizes allowed, unlike cb_shape_parse */
    p = end;
  }
  cb_tensor *x = cb_tensor_new(CB_F32, ndim, shape, err);
  cr_assert_not_null(x, "%s", err->msg);
  int rc = forward_all(m, x, err);
  cb_tensor_free(x);
  cb_module_free(m);
  return rc;
}

static int run_plugin(const err_case *c, cb_error *err) {
  if (c->shape)
    cr_assert_eq(cb_plugin_load_file(test_plugin_path(c->shape), err), 0, "%s", err->msg);
  const char *path = test_plugin_path(c->text);
  if (strcmp(c->text, "@notelf") == 0) path = write_file("notelf.so", "hello\n", 6, NULL, 0, 0);
  return cb_plugin_load_file(path, err);
}

static int run_safetensors(const err_case *c, cb_error *err) {
  cb_weights *w = cb_safetensors_read(write_safetensors(c->text, c->n), err);
  cb_weights_free(w);
  return w ? 0 : -1;
}

static int run_npy(const err_case *c, cb_error *err) {
  cb_tensor *t = cb_npy_read(write_npy(c->text, c->n), err);
  cb_tensor_free(t);
  return t ? 0 : -1;
}

/* Raw bytes must fail as safetensors and as .npy; the message checked is the
 * one of the reader the case is about (its name's prefix). */
static int run_raw(const err_case *c, cb_error *err) {
  const char *path = write_file("case.raw", c->text, (size_t)c->n, NULL, 0, 0);
  cb_error other = {0};
  cb_weights *w = cb_safetensors_read(path, strncmp(c->name, "st_", 3) == 0 ? err : &other);
  cb_tensor *t = cb_npy_read(path, strncmp(c->name, "npy_", 4) == 0 ? err : &other);
  cr_assert(!w && !t, "raw bytes of case %s were accepted", c->name);
  return -1;
}

static int run_load(const err_case *c, cb_error *err) {
  cb_module *m = build_text(c->registry, c->model, err);
  cr_assert_not_null(m, "the model of case %s does not build: %s", c->name, err->msg);
  cb_weights *w = cb_safetensors_read(write_safetensors(c->text, c->n), err);
  cr_assert_not_null(w, "the weights of case %s do not read: %s", c->name, err->msg);
  int rc = cb_module_load_weights(m, w, NULL, true, NULL, err);
  cb_weights_free(w);
  cb_module_free(m);
  return rc;
}

static int run_case(const err_case *c, cb_error *err) {
  switch (c->kind) {
  case E_CONFIG:
    return run_config(c, err);
  case E_OPTION:
    return run_option(c, err);
  case E_BUILD:
    return run_build(c, err);
  case E_FORWARD:
    return run_forward(c, err);
  case E_PLUGIN:
    return run_plugin(c, err);
  case E_SAFETENSORS:
    return run_safetensors(c, err);
  case E_NPY:
    return run_npy(c, err);
  case E_LOAD:
    return run_load(c, err);
  case E_RAW:
    return run_raw(c, err);
  }
  return 0;
}

#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* Parameters are case indices: the cases themselves hold pointers, which must
 * not cross into the process that runs the test. */
ParameterizedTestParameters(errors, table) {
  static int indices[N_CASES];
  for (int i = 0; i < N_CASES; i++)
    indices[i] = i;
  return cr_make_param_array(int, indices, N_CASES);
}

ParameterizedTest(int *index, errors, table, .init = setup, .fini = teardown) {
  const err_case *c = &cases[*index];
  cb_error err = {0};
  int rc = run_case(c, &err);
  cr_assert_eq(rc, -1, "case %s: expected an error, got success", c->name);
  cr_assert(err.msg[0], "case %s: an error without a message", c->name);
  cr_assert(strstr(err.msg, c->expect), "case %s: expected \"%s\" in the message, got: %s", c->name,
            c->expect, err.msg);
}

/* ---- the memory guard ---- */

TestSuite(guard, .init = setup, .fini = teardown);

Test(guard, sizes_parse) {
  static const struct {
    const char *text;
    int64_t bytes;
  } good[] = {{"8G", 8ll << 30}, {"512M", 512ll << 20}, {"1.5GiB", 3ll << 29}, {"4096", 4096},
              {"64k", 64 << 10}, {"2TB", 2ll << 40},    {"none", INT64_MAX}};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    cb_error err = {0};
    int64_t v = 0;
    cr_assert_eq(cb_memory_parse_size(good[i].text, &v, &err), 0, "%s: %s", good[i].text, err.msg);
    cr_assert_eq(v, good[i].bytes, "%s gave %lld", good[i].text, (long long)v);
  }
  static const char *const bad[] = {"", "12X", "-1G", "0", "G", "1e30", "8 G", "0.1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cb_error err = {0};
    int64_t v = 0;
    cr_assert_eq(cb_memory_parse_size(bad[i], &v, &err), -1, "'%s' was accepted", bad[i]);
    cr_assert(strstr(err.msg, "expected a positive size such as 8G"), "%s", err.msg);
  }
}

Test(guard, sizes_format) {
  char text[32];
  cb_memory_format((int64_t)(37.2 * (1 << 30)), text, sizeof text);
  cr_assert_str_eq(text, "37.2 GiB");
  cb_memory_format(100, text, sizeof text);
  cr_assert_str_eq(text, "100 B");
  cb_memory_format(512ll << 20, text, sizeof text);
  cr_assert_str_eq(text, "512.0 MiB");
  cr_assert_gt(cb_memory_default_limit(), 0);
  cr_assert_leq(cb_memory_default_limit(), cb_memory_physical());
}

static int training_count(const char *name, cb_module *m, void *ud) {
  (void)name;
  *(int *)ud += m->training;
  return 0;
}

Test(guard, estimate_scales_and_leaves_the_model_untouched) {
  cb_error err = {0};
  cb_module *m = build_text(NULL, R18 ", \"frozen_stages\": 1}", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cb_module_train(m, true);
  int trained_before = 0, trained_after = 0;
  cb_module_visit(m, training_count, &trained_before);
  const cb_module_ops *ops = m->ops;
  const int64_t small[4] = {1, 3, 64, 64}, big[4] = {2, 3, 512, 512};
  int64_t need_small = 0, need_big = 0;
  cr_assert_eq(cb_memory_estimate(m, 4, small, &need_small, &err), 0, "%s", err.msg);
  cr_assert_eq(cb_memory_estimate(m, 4, big, &need_big, &err), 0, "%s", err.msg);
  cb_module_visit(m, training_count, &trained_after);
  cr_assert_eq(trained_after, trained_before, "training flags changed");
  cr_assert_eq(m->ops, ops, "ops were not restored");
  int64_t params = cb_module_count_params(m) * 4;
  cr_assert_gt(need_small, params + 3 * 64 * 64 * 4);
  /* 128x the pixels: the activations grow 128x, the parameters not at all. */
  double ratio = (double)(need_big - params) / (double)(need_small - params);
  cr_assert(ratio > 100 && ratio < 130, "ratio %g", ratio);
  cb_module_free(m);
}

Test(guard, refuses_past_the_limit) {
  cb_error err = {0};
  cb_module *m = build_text(NULL, R18 "}", &err);
  cr_assert_not_null(m, "%s", err.msg);
  const int64_t shape[4] = {1, 3, 20000, 20000};
  int64_t need = 0;
  cr_assert_eq(cb_memory_estimate(m, 4, shape, &need, &err), 0, "%s", err.msg);
  /* The stem alone holds 64 channels at 10000x10000 (23.8 GiB) plus the input (4.5 GiB). */
  cr_assert_gt(need, 28ll << 30);
  cr_assert_eq(cb_memory_check(need, 4, shape, 8ll << 30, "--max-memory", &err), -1);
  cr_assert(strstr(err.msg, "estimated memory ") &&
                strstr(err.msg, " GiB for input 1x3x20000x20000 exceeds the limit 8.0 GiB "
                                "(--max-memory)"),
            "%s", err.msg);
  cr_assert_eq(cb_memory_check(need, 4, shape, INT64_MAX, NULL, &err), 0);
  cb_module_free(m);
}

Test(guard, probe_errors_name_the_sample) {
  cb_error err = {0};
  cb_module *m = build_text(NULL, R18 "}", &err);
  cr_assert_not_null(m, "%s", err.msg);
  const int64_t wrong[4] = {1, 4, 1000, 1000}, small[4] = {1, 4, 32, 32};
  int64_t need = 0;
  cr_assert_eq(cb_memory_estimate(m, 4, wrong, &need, &err), -1);
  cr_assert(strstr(err.msg, "forward of a 1x4x64x64 sample of the input 1x4x1000x1000") &&
                strstr(err.msg, "input has 4 channels"),
            "%s", err.msg);
  cr_assert_eq(cb_memory_estimate(m, 4, small, &need, &err), -1);
  cr_assert(strncmp(err.msg, "conv2d: input has 4 channels", 28) == 0, "%s", err.msg);
  cb_module_free(m);
}

Test(guard, allocator_refuses_huge_tensors) {
  cb_error err = {0};
  cb_tensor *t = cb_tensor_new4(1, 3, 100000, 100000, &err);
  cr_assert_null(t);
  cr_assert(strstr(err.msg, "tensor: shape 1x3x100000x100000 is too large: 111.8 GiB"), "%s",
            err.msg);
  const int64_t overflow[4] = {INT64_MAX, INT64_MAX, 2, 2};
  cr_assert_null(cb_tensor_new(CB_F32, 4, overflow, &err));
  cr_assert(strstr(err.msg, "too large"), "%s", err.msg);
}
