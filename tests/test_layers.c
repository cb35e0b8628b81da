#include <criterion/criterion.h>
#include <string.h>

#include "test_util.h"

#define LAYERS_FIXTURE "tests/fixtures/layers.safetensors"
#define TOL 1e-4

static cb_weights *fx;

static void setup(void) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_default(&err), 0, "%s", err.msg);
  fx = cb_safetensors_read(LAYERS_FIXTURE, &err);
  cr_assert_not_null(fx, "%s", err.msg);
}

static void teardown(void) {
  cb_weights_free(fx);
  fx = NULL;
  cb_plugin_unload_all();
}

TestSuite(layers, .init = setup, .fini = teardown);

static json_t *parse(const char *text) {
  json_t *j = json_loads(text, 0, NULL);
  cr_assert_not_null(j, "bad test JSON: %s", text);
  return j;
}

static cb_module *build(const char *registry, const char *text) {
  cb_error err = {0};
  json_t *cfg = parse(text);
  cb_module *m = cb_build(registry, cfg, NULL, "layer", &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s: %s", text, err.msg);
  return m;
}

static cb_module *build_norm(const char *text, int features, const char *postfix,
                             const char *want_name) {
  cb_error err = {0};
  char name[64];
  json_t *cfg = parse(text);
  cb_module *m = cb_build_norm(cfg, "norm_cfg", features, postfix, name, sizeof name, &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s: %s", text, err.msg);
  cr_assert_str_eq(name, want_name);
  return m;
}

static const char *build_error(const char *registry, const char *text, cb_error *err) {
  json_t *cfg = parse(text);
  cb_module *m = cb_build(registry, cfg, NULL, "layer", err);
  json_decref(cfg);
  cr_assert_null(m, "%s built, expected an error", text);
  return err->msg;
}

/* Copies "<name_case>.<param>" from the fixture into each parameter and buffer of m. */
static void load_case(cb_module *m, const char *name_case) {
  for (int i = 0; i < m->n_params; i++) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", name_case, m->params[i].name);
    const cb_tensor *src = fixture_tensor(fx, key);
    cb_tensor *dst = m->params[i].tensor;
    cr_assert(src->dtype == dst->dtype && cb_tensor_numel(src) == cb_tensor_numel(dst),
              "%s does not fit the module's %s", key, m->params[i].name);
    memcpy(dst->data, src->data, cb_tensor_nbytes(dst));
  }
}

static void expect_close(const char *what, const cb_tensor *got, const cb_tensor *want) {
  cr_assert_eq(cb_tensor_numel(got), cb_tensor_numel(want), "%s: size differs", what);
  double e = rel_l2(cb_f32(got), cb_f32(want), (long)cb_tensor_numel(want));
  cr_log_info("%s: rel_l2 %.3g", what, e);
  cr_assert(e <= TOL, "%s: relative L2 error %g > %g", what, e, TOL);
}

static void run_case(cb_module *m, const char *name_case) {
  char key[128];
  cb_error err = {0};
  load_case(m, name_case);
  snprintf(key, sizeof key, "%s.x", name_case);
  cb_tensor *y = cb_module_forward(m, fixture_tensor(fx, key), &err);
  cr_assert_not_null(y, "%s: %s", name_case, err.msg);
  snprintf(key, sizeof key, "%s.y", name_case);
  const cb_tensor *want = fixture_tensor(fx, key);
  cr_assert(cb_tensor_same_shape(y, want), "%s: output shape differs", name_case);
  expect_close(name_case, y, want);
  cb_tensor_free(y);
}

static const struct {
  const char *name, *cfg;
} conv_cfgs[] = {
    {"conv_plain", "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
                   "\"kernel_size\": 3}"},
    {"conv_s2p1", "{\"type\": \"Conv\", \"in_channels\": 4, \"out_channels\": 6, "
                  "\"kernel_size\": 3, \"stride\": 2, \"padding\": 1}"},
    {"conv_dil2", "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 5, "
                  "\"kernel_size\": 3, \"padding\": 2, \"dilation\": 2, \"bias\": false}"},
    {"conv_g2", "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
                "\"kernel_size\": 3, \"padding\": 1, \"groups\": 2}"},
    {"conv_1x1", "{\"type\": \"Conv2d\", \"in_channels\": 8, \"out_channels\": 5, "
                 "\"kernel_size\": 1}"},
    {"conv_1x1s2", "{\"type\": \"Conv2d\", \"in_channels\": 8, \"out_channels\": 5, "
                   "\"kernel_size\": 1, \"stride\": 2, \"bias\": false}"},
    {"conv_7x7s2", "{\"type\": \"Conv2d\", \"in_channels\": 3, \"out_channels\": 8, "
                   "\"kernel_size\": 7, \"stride\": 2, \"padding\": 3, \"bias\": false}"},
    {"conv_rect", "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 4, "
                  "\"kernel_size\": [3, 5], \"stride\": [1, 2], \"padding\": [1, 2]}"},
};

Test(layers, conv_matches_pytorch) {
  for (size_t i = 0; i < sizeof conv_cfgs / sizeof *conv_cfgs; i++) {
    cb_module *m = build("CONV_LAYERS", conv_cfgs[i].cfg);
    cr_assert_str_eq(cb_module_kind(m), "Conv2d");
    run_case(m, conv_cfgs[i].name);
    cb_module_free(m);
  }
}

static const struct {
  const char *name, *cfg;
} pool_cfgs[] = {
    {"maxpool_k3s2p1", "{\"type\": \"MaxPool2d\", \"kernel_size\": 3, \"stride\": 2, "
                       "\"padding\": 1}"},
    {"maxpool_ceil", "{\"type\": \"MaxPool2d\", \"kernel_size\": 3, \"stride\": 2, "
                     "\"ceil_mode\": true}"},
    {"avgpool_ceil_excl", "{\"type\": \"AvgPool2d\", \"kernel_size\": 3, \"stride\": 2, "
                          "\"padding\": 1, \"ceil_mode\": true, \"count_include_pad\": false}"},
    {"avgpool_ceil_incl", "{\"type\": \"AvgPool2d\", \"kernel_size\": 3, \"stride\": 2, "
                          "\"padding\": 1, \"ceil_mode\": true}"},
    {"avgpool_k2_ceil_excl", "{\"type\": \"AvgPool2d\", \"kernel_size\": 2, "
                             "\"ceil_mode\": true, \"count_include_pad\": false}"},
    {"avgpool_ceil_drop", "{\"type\": \"AvgPool2d\", \"kernel_size\": 2, \"padding\": 1, "
                          "\"ceil_mode\": true}"},
};

Test(layers, pooling_matches_pytorch) {
  for (size_t i = 0; i < sizeof pool_cfgs / sizeof *pool_cfgs; i++) {
    cb_module *m = build("POOLING_LAYERS", pool_cfgs[i].cfg);
    run_case(m, pool_cfgs[i].name);
    cb_module_free(m);
  }
}

Test(layers, batch_norm_eval_uses_running_stats) {
  cb_module *m = build_norm("{\"type\": \"BN\"}", 6, "1", "bn1");
  cr_assert_str_eq(cb_module_kind(m), "BatchNorm2d");
  cr_assert(cb_module_is(m, "_BatchNorm"));
  cb_module_train(m, false);
  run_case(m, "bn_eval");
  cb_module_free(m);
}

static void expect_buffer(cb_module *m, const char *buffer, const char *fixture_key) {
  cb_param *p = cb_module_param(m, buffer);
  cr_assert_not_null(p, "no buffer %s", buffer);
  expect_close(fixture_key, p->tensor, fixture_tensor(fx, fixture_key));
}

Test(layers, batch_norm_train_updates_running_stats) {
  cb_module *m = build_norm("{\"type\": \"SyncBN\"}", 6, "", "bn");
  cr_assert_str_eq(cb_module_kind(m), "SyncBatchNorm");
  cr_assert(m->training);
  run_case(m, "bn_train");
  expect_buffer(m, "running_mean", "bn_train.new_running_mean");
  expect_buffer(m, "running_var", "bn_train.new_running_var");
  const cb_tensor *tracked = cb_module_param(m, "num_batches_tracked")->tensor;
  cr_assert_eq(tracked->dtype, CB_I64);
  cr_assert_eq(tracked->ndim, 0);
  cr_assert_eq(cb_i64(tracked)[0],
               cb_i64(fixture_tensor(fx, "bn_train.new_num_batches_tracked"))[0]);
  cb_module_free(m);
}

Test(layers, batch_norm_defaults) {
  cb_module *m = build_norm("{\"type\": \"BN2d\"}", 3, "", "bn");
  const char *names[] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
  const float first[] = {1, 0, 0, 1};
  cr_assert_eq(m->n_params, 5);
  for (int i = 0; i < 5; i++) {
    cr_assert_str_eq(m->params[i].name, names[i]);
    cr_assert_eq(m->params[i].is_buffer, i >= 2);
    if (i < 4) cr_assert_float_eq(cb_f32(m->params[i].tensor)[2], first[i], 0);
  }
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new(CB_F32, 3, (int64_t[]){1, 3, 4}, &err);
  cr_assert_null(cb_module_forward(m, x, &err));
  cr_assert(strstr(err.msg, "BatchNorm2d: expected 4D input (got 3D input)"), "%s", err.msg);
  cb_tensor_free(x);
  cb_module_free(m);
}

Test(layers, group_norm_matches_pytorch) {
  cb_module *m = build_norm("{\"type\": \"GN\", \"num_groups\": 4}", 8, "2", "gn2");
  cr_assert_str_eq(cb_module_kind(m), "GroupNorm");
  run_case(m, "gn");
  cb_module_free(m);
}

Test(layers, instance_norm_matches_pytorch) {
  cb_module *m = build_norm("{\"type\": \"IN\"}", 4, "1", "in1");
  cr_assert_str_eq(cb_module_kind(m), "InstanceNorm2d");
  cr_assert(cb_module_is(m, "_InstanceNorm"));
  cr_assert_eq(m->n_params, 0);
  run_case(m, "in");
  cb_module_free(m);
  m = build_norm("{\"type\": \"IN2d\", \"affine\": true, \"track_running_stats\": true}", 4, "",
                 "in");
  cb_module_train(m, false);
  run_case(m, "in_affine_eval");
  cb_module_free(m);
}

Test(layers, layer_norm_matches_pytorch) {
  cb_module *m = build_norm("{\"type\": \"LN\"}", 6, "", "ln");
  cr_assert_str_eq(cb_module_kind(m), "LayerNorm");
  run_case(m, "ln");
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 6, 2, 5, &err);
  cr_assert_null(cb_module_forward(m, x, &err));
  cr_assert(strstr(err.msg, "last dimension is 6"), "%s", err.msg);
  cb_tensor_free(x);
  cb_module_free(m);
}

Test(layers, relu) {
  cb_module *m = build("ACTIVATION_LAYERS", "{\"type\": \"ReLU\", \"inplace\": true}");
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(1, 1, 1, 3, &err);
  cb_f32(x)[0] = -1, cb_f32(x)[1] = 0.5f, cb_f32(x)[2] = -0.0f;
  cb_tensor *y = cb_module_forward(m, x, &err);
  cr_assert_not_null(y, "%s", err.msg);
  cr_assert(cb_f32(y)[0] == 0 && cb_f32(y)[1] == 0.5f && cb_f32(y)[2] == 0);
  char repr[64];
  m->ops->extra_repr(m, repr, sizeof repr);
  cr_assert_str_eq(repr, "inplace=True");
  cb_tensor_free(x), cb_tensor_free(y);
  cb_module_free(m);
}

Test(layers, requires_grad_false_freezes_parameters_only) {
  cb_module *m = build_norm("{\"type\": \"BN\", \"requires_grad\": false}", 4, "", "bn");
  cr_assert_not(cb_module_param(m, "weight")->requires_grad);
  cr_assert_not(cb_module_param(m, "bias")->requires_grad);
  cb_module_free(m);
  m = build_norm("{\"type\": \"GN\", \"num_groups\": 2}", 4, "", "gn");
  cr_assert(cb_module_param(m, "weight")->requires_grad);
  cb_module_free(m);
}

Test(layers, unknown_key_suggests_the_closest) {
  cb_error err = {0};
  const char *msg = build_error("NORM_LAYERS",
                                "{\"type\": \"BN\", \"num_features\": 4, "
                                "\"momentun\": 0.2}",
                                &err);
  cr_assert(strstr(msg, "momentun") && strstr(msg, "momentum"), "%s", msg);
}

Test(layers, group_norm_needs_num_groups) {
  cb_error err = {0};
  const char *msg = build_error("NORM_LAYERS", "{\"type\": \"GN\", \"num_features\": 4}", &err);
  cr_assert(strstr(msg, "num_groups"), "%s", msg);
  msg = build_error("NORM_LAYERS", "{\"type\": \"GN\", \"num_features\": 6, \"num_groups\": 4}",
                    &err);
  cr_assert(strstr(msg, "6 channels are not divisible by 4 groups"), "%s", msg);
}

Test(layers, bad_values_name_the_key) {
  static const struct {
    const char *registry, *cfg, *needle;
  } cases[] = {
      {"CONV_LAYERS",
       "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
       "\"kernel_size\": 3, \"groups\": 4}",
       "groups: out_channels=6"},
      {"CONV_LAYERS",
       "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
       "\"kernel_size\": 3, \"stride\": 0}",
       "stride: must be between 1"},
      {"CONV_LAYERS",
       "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
       "\"kernel_size\": 3, \"padding\": -1}",
       "padding: must be between 0"},
      {"CONV_LAYERS",
       "{\"type\": \"Conv2d\", \"in_channels\": 0, \"out_channels\": 6, "
       "\"kernel_size\": 3}",
       "in_channels: must be a positive channel count"},
      {"CONV_LAYERS",
       "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
       "\"kernel_size\": 3, \"padding_mode\": \"reflect\"}",
       "padding_mode: 'reflect' is not supported"},
      {"CONV_LAYERS", "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6}",
       "kernel_size: is required"},
      {"CONV_LAYERS",
       "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 6, "
       "\"kernel_size\": [3, 3, 3]}",
       "kernel_size"},
      {"POOLING_LAYERS", "{\"type\": \"MaxPool2d\", \"kernel_size\": 3, \"padding\": 2}",
       "padding: must be at most half of kernel_size"},
      {"POOLING_LAYERS", "{\"type\": \"MaxPool2d\", \"kernel_size\": 3, \"dilation\": 0}",
       "dilation: must be between 1"},
      {"NORM_LAYERS", "{\"type\": \"BN\", \"num_features\": -2}",
       "num_features: must be a positive channel count"},
      {"NORM_LAYERS", "{\"type\": \"LN\", \"num_features\": 4, \"eps\": 0}", "eps: must be > 0"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    cb_error err = {0};
    const char *msg = build_error(cases[i].registry, cases[i].cfg, &err);
    cr_assert(strstr(msg, cases[i].needle), "%s: '%s' lacks '%s'", cases[i].cfg, msg,
              cases[i].needle);
  }
}

static void expect_repr(const char *registry, const char *cfg, const char *want) {
  cb_module *m = build(registry, cfg);
  char repr[256];
  m->ops->extra_repr(m, repr, sizeof repr);
  cr_assert_str_eq(repr, want, "%s", cfg);
  cb_module_free(m);
}

Test(layers, extra_repr_as_pytorch) {
  expect_repr("CONV_LAYERS",
              "{\"type\": \"Conv2d\", \"in_channels\": 3, \"out_channels\": 64, "
              "\"kernel_size\": 7, \"stride\": 2, \"padding\": 3, \"bias\": false}",
              "3, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False");
  expect_repr("CONV_LAYERS",
              "{\"type\": \"Conv\", \"in_channels\": 4, \"out_channels\": 8, "
              "\"kernel_size\": 3, \"padding\": 2, \"dilation\": 2, \"groups\": 2}",
              "4, 8, kernel_size=(3, 3), stride=(1, 1), padding=(2, 2), dilation=(2, 2), groups=2");
  expect_repr("CONV_LAYERS",
              "{\"type\": \"Conv2d\", \"in_channels\": 4, \"out_channels\": 8, "
              "\"kernel_size\": 1}",
              "4, 8, kernel_size=(1, 1), stride=(1, 1)");
  expect_repr("NORM_LAYERS", "{\"type\": \"BN\", \"num_features\": 64}",
              "64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True");
  expect_repr("NORM_LAYERS",
              "{\"type\": \"BN\", \"num_features\": 8, \"eps\": 0.001, "
              "\"momentum\": null}",
              "8, eps=0.001, momentum=None, affine=True, track_running_stats=True");
  expect_repr("NORM_LAYERS", "{\"type\": \"GN\", \"num_features\": 64, \"num_groups\": 32}",
              "32, 64, eps=1e-05, affine=True");
  expect_repr("NORM_LAYERS", "{\"type\": \"IN\", \"num_features\": 4}",
              "4, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False");
  expect_repr("NORM_LAYERS", "{\"type\": \"LN\", \"num_features\": 6, \"eps\": 1e-6}",
              "(6,), eps=1e-06, elementwise_affine=True");
  expect_repr("POOLING_LAYERS",
              "{\"type\": \"MaxPool2d\", \"kernel_size\": 3, \"stride\": 2, "
              "\"padding\": 1}",
              "kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False");
  expect_repr("POOLING_LAYERS", "{\"type\": \"MaxPool2d\", \"kernel_size\": [2, 3]}",
              "kernel_size=(2, 3), stride=(2, 3), padding=0, dilation=1, ceil_mode=False");
  expect_repr("POOLING_LAYERS",
              "{\"type\": \"AvgPool2d\", \"kernel_size\": 2, \"ceil_mode\": "
              "true, \"count_include_pad\": false}",
              "kernel_size=2, stride=2, padding=0");
}
