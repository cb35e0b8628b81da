/* ResNet / ResNetV1c / ResNetV1d: outputs against PyTorch fixtures, module tree, config errors,
 * train-mode behaviour, DCN and plugin insertion. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define FIXTURES "tests/fixtures/resnet"

TestSuite(resnet, .init = load_builtin_plugins, .fini = unload_plugins);

/* ---- fixtures ---- */

static void compare_state(cb_module *m, const cb_weights *w, const char *name) {
  for (int i = 0; i < cb_weights_count(w); i++) {
    const char *key = cb_weights_name(w, i);
    if (strncmp(key, "state.", 6) != 0) continue;
    const cb_tensor *want = cb_weights_tensor(w, i);
    cb_param *p = cb_module_find_param(m, key + 6);
    cr_assert_not_null(p, "%s: no buffer %s", name, key + 6);
    cr_assert_eq(cb_tensor_numel(p->tensor), cb_tensor_numel(want), "%s: %s size", name, key);
    if (want->dtype == CB_I64) {
      cr_assert_eq(p->tensor->dtype, CB_I64, "%s: %s dtype", name, key);
      cr_assert_eq(cb_i64(p->tensor)[0], cb_i64(want)[0], "%s: %s", name, key);
      continue;
    }
    double e = rel_l2(cb_f32(p->tensor), cb_f32(want), (long)cb_tensor_numel(want));
    cr_assert_leq(e, 1e-4, "%s: %s relative L2 %.3g", name, key, e);
  }
}

static void check_fixture(const char *name) {
  cb_error err = {0};
  json_error_t jerr;
  json_t *cases = json_load_file(FIXTURES "/cases.json", 0, &jerr);
  cr_assert_not_null(cases, "cases.json: %s", jerr.text);
  json_t *entry = json_object_get(cases, name);
  cr_assert_not_null(entry, "no case %s", name);
  char path[256];
  snprintf(path, sizeof path, FIXTURES "/%s.safetensors", name);
  cb_weights *w = cb_safetensors_read(path, &err);
  cr_assert_not_null(w, "%s", err.msg);

  cb_module *m = cb_build("BACKBONES", json_object_get(entry, "cfg"), NULL, name, &err);
  cr_assert_not_null(m, "%s", err.msg);
  cb_weights *state = fixture_model_weights(w);
  cr_assert_eq(cb_module_load_weights(m, state, NULL, true, NULL, &err), 0, "%s: %s", name,
               err.msg);
  cb_weights_free(state);
  cb_module_train(m, json_is_true(json_object_get(entry, "train")));

  cb_tensor_list outs = {0};
  cr_assert_eq(cb_module_forward_multi(m, fixture_tensor(w, "input"), &outs, &err), 0, "%s: %s",
               name, err.msg);
  int expected = 0;
  for (char key[32]; snprintf(key, sizeof key, "out.%d", expected), cb_weights_get(w, key);)
    expected++;
  cr_assert_eq(outs.n, expected, "%s: %d outputs, expected %d", name, outs.n, expected);
  for (int i = 0; i < outs.n; i++) {
    char key[32];
    snprintf(key, sizeof key, "out.%d", i);
    const cb_tensor *want = fixture_tensor(w, key);
    cr_assert(cb_tensor_same_shape(outs.items[i], want), "%s: %s shape", name, key);
    double e = rel_l2(cb_f32(outs.items[i]), cb_f32(want), (long)cb_tensor_numel(want));
    fprintf(stderr, "resnet fixture %-20s %s relative L2 %.2e\n", name, key, e);
    cr_assert_leq(e, 1e-4, "%s: %s relative L2 %.3g", name, key, e);
  }
  compare_state(m, w, name);
  cb_tensor_list_clear(&outs);
  cb_module_free(m);
  cb_weights_free(w);
  json_decref(cases);
}

Test(resnet, fixture_resnext) {
  check_fixture("resnext");
}

Test(resnet, resnext_grouped_widths_and_errors) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNeXt\", \"depth\": 50, \"groups\": 32, "
                                   "\"base_width\": 4}");
  cr_assert_str_eq(cb_module_kind(m), "ResNeXt");
  cr_assert(cb_module_is(m, "ResNet"), "a ResNeXt still answers to ResNet (init_cfg layers)");
  /* torchvision's resnext50_32x4d has 22,979,904 parameters besides fc. */
  cr_assert_eq(cb_module_count_params(m), 22979904);
  cb_param *w = cb_module_find_param(m, "layer1.0.conv2.weight");
  cr_assert_eq(w->tensor->shape[0], 128);
  cr_assert_eq(w->tensor->shape[1], 4, "128 channels in 32 groups");
  cb_module_free(m);
  expect_backbone_error(
      "{\"type\": \"ResNeXt\", \"depth\": 34}",
      "model.backbone.depth: invalid depth 34 for ResNeXt: expected one of 50, 101, 152");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"groups\": 2}",
                        "model.backbone.groups: grouped convolutions need Bottleneck blocks");
  expect_backbone_error("{\"type\": \"ResNeXt\", \"depth\": 50, \"groups\": 0}",
                        "model.backbone.groups: expected an integer from 1");
}

Test(resnet, variants_name_their_kind) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNetV1c\", \"depth\": 18}");
  cr_assert_str_eq(cb_module_kind(m), "ResNetV1c");
  cb_module_free(m);
  m = build_backbone_ok("{\"type\": \"ResNetV1d\", \"depth\": 18}");
  cr_assert_str_eq(cb_module_kind(m), "ResNetV1d");
  cb_module_free(m);
}

Test(resnet, fixture_r18) {
  check_fixture("r18");
}
Test(resnet, fixture_r34) {
  check_fixture("r34");
}
Test(resnet, fixture_r50) {
  check_fixture("r50");
}
Test(resnet, fixture_r101) {
  check_fixture("r101");
}
Test(resnet, fixture_v1c) {
  check_fixture("v1c");
}
Test(resnet, fixture_v1d) {
  check_fixture("v1d");
}
Test(resnet, fixture_caffe) {
  check_fixture("caffe");
}
Test(resnet, fixture_d8) {
  check_fixture("d8");
}
Test(resnet, fixture_d8_basic) {
  check_fixture("d8_basic");
}
Test(resnet, fixture_multi_grid) {
  check_fixture("multi_grid");
}
Test(resnet, fixture_gn) {
  check_fixture("gn");
}
Test(resnet, fixture_stages3) {
  check_fixture("stages3");
}
Test(resnet, fixture_train) {
  check_fixture("train");
}
Test(resnet, fixture_frozen1_train) {
  check_fixture("frozen1_train");
}
Test(resnet, fixture_frozen1_stem7_train) {
  check_fixture("frozen1_stem7_train");
}
Test(resnet, fixture_norm_eval_train) {
  check_fixture("norm_eval_train");
}

/* ---- module tree ---- */

static bool has(cb_module *m, const char *dotted) {
  return cb_module_find_param(m, dotted);
}

Test(resnet, resnet50_param_count) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 50}");
  cr_assert_eq(cb_module_count_params(m), 23508032, "%lld", (long long)cb_module_count_params(m));
  cr_assert(has(m, "conv1.weight") && has(m, "bn1.running_var"));
  cr_assert(has(m, "layer1.0.downsample.0.weight") && has(m, "layer4.2.bn3.bias"));
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer3")), "ResLayer");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer3.5")), "Bottleneck");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "maxpool")), "MaxPool2d");
  cr_assert_null(cb_module_find(m, "layer3.6"));
  cb_module_free(m);
}

Test(resnet, v1d_downsample_names) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNetV1d\", \"depth\": 50, \"base_channels\": 8, "
                                   "\"stem_channels\": 8}");
  cr_assert(has(m, "layer1.0.downsample.1.weight"));
  cr_assert(has(m, "layer1.0.downsample.2.running_mean"));
  cr_assert(has(m, "layer2.0.downsample.2.num_batches_tracked"));
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer1.0.downsample.0")), "AvgPool2d");
  cr_assert(has(m, "stem.0.weight") && has(m, "stem.7.running_var"));
  cr_assert_null(cb_module_find(m, "conv1"));
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "stem.8")), "ReLU");
  cb_module_free(m);
}

Test(resnet, basic_block_names_and_gn_names) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, "
                                   "\"stem_channels\": 8, \"norm_cfg\": {\"type\": \"GN\", "
                                   "\"num_groups\": 2}}");
  cr_assert(has(m, "gn1.weight") && has(m, "layer1.1.gn2.bias"));
  cr_assert(has(m, "layer2.0.downsample.1.weight"));
  cr_assert_null(cb_module_find(m, "layer1.0.downsample"));
  cr_assert_null(cb_module_find(m, "layer1.0.conv3"));
  cb_module_free(m);
}

Test(resnet, outputs_ascending_without_duplicates) {
  cb_error err = {0};
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, "
                                   "\"stem_channels\": 8, \"out_indices\": [3, 1, 1]}");
  cb_module_train(m, false);
  cb_tensor *x = cb_tensor_new4(1, 3, 32, 32, &err);
  cb_tensor_list outs = {0};
  cr_assert_eq(cb_module_forward_multi(m, x, &outs, &err), 0, "%s", err.msg);
  cr_assert_eq(outs.n, 2);
  cr_assert_eq(outs.items[0]->shape[1], 16);
  cr_assert_eq(outs.items[1]->shape[1], 64);
  cr_assert_eq(outs.items[1]->shape[2], 1);
  cb_tensor_list_clear(&outs);
  cb_tensor_free(x);
  cb_module_free(m);
}

/* ---- train(): frozen_stages and norm_eval ---- */

static bool trains(cb_module *m, const char *dotted) {
  cb_module *c = cb_module_find(m, dotted);
  cr_assert_not_null(c, "no module %s", dotted);
  return c->training;
}

static bool grads(cb_module *m, const char *dotted) {
  cb_param *p = cb_module_find_param(m, dotted);
  cr_assert_not_null(p, "no parameter %s", dotted);
  return p->requires_grad;
}

Test(resnet, frozen_stages_plain_stem) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, "
                                   "\"stem_channels\": 8, \"frozen_stages\": 1}");
  for (int pass = 0; pass < 2; pass++) { /* at build time, then after train(true) */
    cr_assert(!grads(m, "conv1.weight") && !grads(m, "bn1.weight"));
    cr_assert(!trains(m, "bn1"));
    cr_assert(trains(m, "conv1"), "the 7x7 stem freezes only norm1's mode");
    cr_assert(!trains(m, "layer1") && !trains(m, "layer1.1.bn2"));
    cr_assert(!grads(m, "layer1.1.conv2.weight"));
    cr_assert(trains(m, "layer2.0.bn1") && grads(m, "layer2.0.conv1.weight"));
    cb_module_train(m, true);
  }
  cb_module_free(m);
}

Test(resnet, frozen_stages_deep_stem) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNetV1c\", \"depth\": 50, \"base_channels\": 8, "
                                   "\"stem_channels\": 8, \"frozen_stages\": 2}");
  cb_module_train(m, true);
  cr_assert(!trains(m, "stem") && !trains(m, "stem.0") && !trains(m, "stem.4"));
  cr_assert(!grads(m, "stem.3.weight"));
  cr_assert(!trains(m, "layer2.3.bn3") && !grads(m, "layer2.0.downsample.0.weight"));
  cr_assert(trains(m, "layer3.0.bn1") && grads(m, "layer3.0.conv1.weight"));
  cr_assert(m->training);
  cb_module_train(m, false);
  cr_assert(!trains(m, "layer3.0.bn1"));
  cb_module_free(m);
}

Test(resnet, norm_eval_keeps_batch_norms_in_eval) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, "
                                   "\"stem_channels\": 8, \"norm_eval\": true}");
  cr_assert(trains(m, "layer1.0.bn1"), "norm_eval acts on train(), not at build time");
  cb_module_train(m, true);
  cr_assert(m->training && trains(m, "layer3") && trains(m, "layer3.0.conv1"));
  cr_assert(!trains(m, "bn1") && !trains(m, "layer3.0.bn1") && !trains(m, "layer4.0.downsample.1"));
  cr_assert(grads(m, "layer3.0.bn1.weight"), "norm_eval does not stop gradients");
  cb_module_free(m);

  m = build_backbone_ok(
      "{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, \"stem_channels\": "
      "8, \"norm_eval\": true, \"norm_cfg\": {\"type\": \"GN\", \"num_groups\": 2}}");
  cb_module_train(m, true);
  cr_assert(trains(m, "layer1.0.gn1"), "GroupNorm is no _BatchNorm");
  cb_module_free(m);
}

Test(resnet, norm_cfg_requires_grad_false) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, "
                                   "\"stem_channels\": 8, \"norm_cfg\": {\"type\": \"BN\", "
                                   "\"requires_grad\": false}}");
  cr_assert(!grads(m, "layer1.0.bn1.weight") && grads(m, "layer1.0.conv1.weight"));
  cb_module_free(m);
}

/* ---- config errors ---- */

Test(resnet, config_errors) {
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 51}",
                        "model.backbone.depth: invalid depth 51");
  expect_backbone_error("{\"type\": \"ResNet\"}", "model.backbone.depth: required");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": \"50\"}",
                        "depth: expected an integer, found a string '50'");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"num_stages\": 0}",
                        "num_stages: expected 1 to 4, found 0");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"num_stages\": 5}",
                        "num_stages: expected 1 to 4, found 5");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"num_stages\": 3}",
                        "strides: expected one value per stage (num_stages = 3), found 4");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"strides\": [1, 2, 2]}",
                        "strides: expected one value per stage");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"dilations\": [1, 1, 1, 0]}",
                        "dilations: item 3: expected a positive integer");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"out_indices\": [0, 4]}",
                        "out_indices: item 1: expected a stage index from 0 to 3");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"style\": \"tf\"}",
                        "style: expected 'pytorch' or 'caffe', found 'tf'");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 18, \"frozen_stage\": 1}",
      "frozen_stage: unknown key for type 'ResNet' (did you mean 'frozen_stages'?)");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"norm_eval\": 1}",
                        "norm_eval: expected true or false");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"frozen_stages\": 5}",
                        "frozen_stages: expected -1 (none) to 4");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"multi_grid\": [1]}",
                        "multi_grid: expected a dilation for each of the 2 blocks");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"pretrained\": \"a.safetensors\", "
                        "\"init_cfg\": {\"type\": \"Kaiming\"}}",
                        "init_cfg and pretrained cannot be set at the same time");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"pretrained\": 3}",
                        "pretrained: expected a string");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"norm_cfg\": {\"type\": \"BM\"}}",
                        "model.backbone.norm_cfg.type: 'BM' is not in the NORM_LAYERS registry");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 18, \"conv_cfg\": {\"type\": \"Conv3x\"}}",
      "conv_cfg.type: 'Conv3x' is not in the CONV_LAYERS registry");
}

Test(resnet, variants_refuse_fixed_keys) {
  expect_backbone_error("{\"type\": \"ResNetV1c\", \"depth\": 50, \"deep_stem\": true}",
                        "deep_stem: ResNetV1c sets deep_stem itself (got multiple values");
  expect_backbone_error("{\"type\": \"ResNetV1d\", \"depth\": 50, \"avg_down\": false}",
                        "avg_down: ResNetV1d sets avg_down itself");
  expect_backbone_error("{\"type\": \"ResNetV1c\", \"depth\": 50, \"dpeth\": 3}",
                        "did you mean 'depth'");
  expect_backbone_error("{\"type\": \"ResNetV1d\", \"depth\": 19}", "invalid depth 19");
}

/* ---- DCN and plugins, through test entries of the registries ---- */

typedef struct probe {
  int channels;
} probe;

static cb_tensor *probe_forward(cb_module *m, const cb_tensor *x, cb_error *err) {
  (void)m;
  return cb_tensor_clone(x, err);
}

static const cb_module_ops dcn_probe_ops = {.kind = "DeformConvProbe"};
static const cb_module_ops plugin_probe_ops = {.kind = "ProbePlugin", .forward = probe_forward};

static cb_module *build_dcn_probe(cb_args *a, cb_error *err) {
  json_t *cfg = cb_args_json(a);
  const char *key;
  json_t *v;
  json_object_foreach(cfg, key, v) {
    cb_args_value(a, key);
  }
  cr_assert_null(json_object_get(cfg, "fallback_on_stride"));
  return cb_module_new(&dcn_probe_ops, NULL, err);
}

static cb_module *build_plugin_probe(cb_args *a, cb_error *err) {
  long long ch;
  if (cb_args_int_required(a, "in_channels", &ch, err)) return NULL;
  probe *p = calloc(1, sizeof *p);
  p->channels = (int)ch;
  return cb_module_new(&plugin_probe_ops, p, err);
}

static void register_probes(void) {
  cb_error err = {0};
  cr_assert_eq(
      cb_registry_add("CONV_LAYERS", "DCNProbe", build_dcn_probe, NULL, "test", false, &err), 0,
      "%s", err.msg);
  cr_assert_eq(cb_registry_add("PLUGIN_LAYERS", "ProbePlugin", build_plugin_probe, NULL, "test",
                               false, &err),
               0, "%s", err.msg);
}

static int plugin_channels(cb_module *m, const char *dotted) {
  cb_module *p = cb_module_find(m, dotted);
  cr_assert_not_null(p, "no plugin %s", dotted);
  cr_assert_str_eq(cb_module_kind(p), "ProbePlugin");
  return ((probe *)p->impl)->channels;
}

Test(resnet, dcn_unknown_type_is_registry_error) {
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"dcn\": {\"type\": \"DCNv9\", "
                        "\"deform_groups\": 1}, \"stage_with_dcn\": [false, true, true, true]}",
                        "model.backbone.dcn.type: 'DCNv9' is not in the CONV_LAYERS registry");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"dcn\": {\"type\": \"DCN\"}, "
      "\"stage_with_dcn\": [false, true]}",
      "stage_with_dcn: expected one flag per stage (num_stages = 4) when dcn is set");
}

Test(resnet, dcn_fallback_on_stride_only_first_block) {
  register_probes();
  const char *text = "{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 8, "
                     "\"stem_channels\": 8, \"dcn\": {\"type\": \"DCNProbe\", "
                     "\"fallback_on_stride\": true}, \"stage_with_dcn\": [false, true, true, "
                     "false]}";
  json_t *cfg = json_loads(text, 0, NULL);
  cb_error err = {0};
  cb_module *m = cb_build("BACKBONES", cfg, NULL, "model.backbone", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer2.0.conv2")), "Conv2d");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer2.1.conv2")), "DeformConvProbe");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer3.0.conv2")), "DeformConvProbe");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer1.0.conv2")), "Conv2d");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer4.0.conv2")), "Conv2d");
  cr_assert(json_is_true(json_object_get(json_object_get(cfg, "dcn"), "fallback_on_stride")),
            "the user's config is left as it was");
  cb_module_free(m);
  json_decref(cfg);
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 18, \"dcn\": {\"type\": \"DCNProbe\"}, "
                        "\"stage_with_dcn\": [true, false, false, false], \"conv_cfg\": {\"type\": "
                        "\"Conv2d\"}}",
                        "conv_cfg: must be null when dcn is used");
}

Test(resnet, plugin_unknown_type_is_registry_error) {
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"plugins\": [{\"cfg\": {\"type\": "
      "\"ContextBlok\", \"ratio\": 0.25}, \"position\": \"after_conv3\"}]}",
      "model.backbone.plugins[0].cfg.type: 'ContextBlok' is not in the PLUGIN_LAYERS");
}

Test(resnet, plugins_inserted_by_position_and_stage) {
  register_probes();
  cb_module *m = build_backbone_ok(
      "{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 8, \"stem_channels\": 8, "
      "\"plugins\": [{\"cfg\": {\"type\": \"ProbePlugin\"}, \"position\": \"after_conv2\", "
      "\"stages\": [false, true, true, true]}, {\"cfg\": {\"type\": \"ProbePlugin\", "
      "\"postfix\": 1}, \"position\": \"after_conv3\"}, {\"cfg\": {\"type\": \"ProbePlugin\", "
      "\"postfix\": \"2\"}, \"position\": \"after_conv3\"}]}");
  cr_assert_null(cb_module_find(m, "layer1.0.probe_plugin"));
  cr_assert_eq(plugin_channels(m, "layer2.0.probe_plugin"), 16);
  cr_assert_eq(plugin_channels(m, "layer1.2.probe_plugin1"), 32);
  cr_assert_eq(plugin_channels(m, "layer4.2.probe_plugin2"), 256);
  cb_module_free(m);

  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"plugins\": [{\"cfg\": {\"type\": "
                        "\"ProbePlugin\"}, \"position\": \"after_conv3\"}, {\"cfg\": {\"type\": "
                        "\"ProbePlugin\"}, \"position\": \"after_conv1\"}]}",
                        "duplicate plugin probe_plugin");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 18, \"plugins\": [{\"cfg\": {\"type\": "
      "\"ProbePlugin\"}, \"position\": \"after_conv3\"}]}",
      "plugins[0].position: expected 'after_conv1' or 'after_conv2' (BasicBlock)");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"plugins\": [{\"cfg\": {\"type\": "
                        "\"ProbePlugin\"}, \"position\": \"after_conv3\", \"stages\": [true]}]}",
                        "plugins[0].stages: expected one flag per stage (num_stages = 4), found 1");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"plugins\": [{\"cfg\": {\"type\": "
                        "\"ProbePlugin\"}, \"postion\": \"after_conv3\"}]}",
                        "plugins[0].position: required");
}

/* Identity plugins at every position leave the outputs as they were. */
Test(resnet, identity_plugins_keep_outputs) {
  register_probes();
  cb_error err = {0};
  cb_weights *w = cb_safetensors_read(FIXTURES "/r18.safetensors", &err);
  cr_assert_not_null(w, "%s", err.msg);
  cb_module *m = build_backbone_ok(
      "{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, \"stem_channels\": 8, "
      "\"plugins\": [{\"cfg\": {\"type\": \"ProbePlugin\", \"postfix\": \"a\"}, \"position\": "
      "\"after_conv1\"}, {\"cfg\": {\"type\": \"ProbePlugin\", \"postfix\": \"b\"}, "
      "\"position\": \"after_conv1\"}, {\"cfg\": {\"type\": \"ProbePlugin\"}, \"position\": "
      "\"after_conv2\"}]}");
  cb_weights *state = fixture_model_weights(w);
  cr_assert_eq(cb_module_load_weights(m, state, NULL, true, NULL, &err), 0, "%s", err.msg);
  cb_module_train(m, false);
  cb_tensor_list outs = {0};
  cr_assert_eq(cb_module_forward_multi(m, fixture_tensor(w, "input"), &outs, &err), 0, "%s",
               err.msg);
  const cb_tensor *want = fixture_tensor(w, "out.3");
  double e = rel_l2(cb_f32(outs.items[3]), cb_f32(want), (long)cb_tensor_numel(want));
  cr_assert_leq(e, 1e-4, "%g", e);
  cb_tensor_list_clear(&outs);
  cb_weights_free(state);
  cb_weights_free(w);
  cb_module_free(m);
}

/* ---- shipped configs ---- */

static void check_config(const char *path, const char *kind_of_stem, long long params,
                         int dilation4) {
  cb_error err = {0};
  json_t *cfg = cb_config_load(path, &err);
  cr_assert_not_null(cfg, "%s", err.msg);
  json_t *pre = cb_config_get(cfg, "model.data_preprocessor");
  cr_assert(json_is_true(json_object_get(pre, "bgr_to_rgb")), "%s: data_preprocessor", path);
  cr_assert_float_eq(json_number_value(json_array_get(json_object_get(pre, "mean"), 0)), 123.675,
                     1e-9);
  cb_module *m =
      cb_build("BACKBONES", cb_config_get(cfg, "model.backbone"), NULL, "model.backbone", &err);
  cr_assert_not_null(m, "%s: %s", path, err.msg);
  cr_assert_eq(cb_module_count_params(m), params, "%s: %lld parameters", path,
               (long long)cb_module_count_params(m));
  cr_assert_not_null(cb_module_find(m, kind_of_stem), "%s: no %s", path, kind_of_stem);
  cb_module *conv = cb_module_find(m, "layer4.1.conv2");
  cr_assert_not_null(conv);
  char repr[256] = "";
  conv->ops->extra_repr(conv, repr, sizeof repr);
  cr_assert_eq(strstr(repr, "dilation=(4, 4)") != NULL, dilation4, "%s: %s", path, repr);
  cb_module_free(m);
  json_decref(cfg);
}

Test(resnet, shipped_configs) {
  check_config("configs/resnet/resnet18_v1b.json", "conv1", 11176512, 0);
  check_config("configs/resnet/resnet50_v1b.json", "conv1", 23508032, 0);
  check_config("configs/resnet/resnet101_v1b.json", "conv1", 42500160, 0);
  check_config("configs/resnet/resnet50_v1c_d8.json", "stem.6", 23527264, 1);
  check_config("configs/resnet/resnet101_v1c_d8.json", "stem.6", 42519392, 1);
  check_config("configs/resnet/resnet50_v1d.json", "layer2.0.downsample.2", 23527264, 0);
}
