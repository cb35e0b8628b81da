/* Whole ResNets with DCN / DCNv2 convs and ContextBlock, NonLocal2d and GeneralizedAttention
 * plugins against PyTorch (tools/fixtures/backbone_plugins.py): built from each case's config,
 * loaded strictly by state-dict name, outputs and train-mode buffers compared. Also the
 * shipped dcn / gcnet / nonlocal / gen_attention configs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

#define FIXTURES "tests/fixtures/backbone_plugins"
#define TOL 1e-4

static json_t *cases;

static void setup(void) {
  cb_error err = {0};
  json_error_t jerr;
  cb_set_quiet(1);
  cr_assert_eq(cb_plugin_load_default(&err), 0, "%s", err.msg);
  cases = json_load_file(FIXTURES "/cases.json", 0, &jerr);
  cr_assert_not_null(cases, "cases.json: %s", jerr.text);
}

static void teardown(void) {
  json_decref(cases);
  cases = NULL;
  cb_plugin_unload_all();
}

TestSuite(backbone_plugins, .init = setup, .fini = teardown);

/* One case: the module (weights loaded, mode set), its fixture and its outputs. */
typedef struct run {
  const char *name;
  cb_module *m;
  cb_weights *w;
  cb_tensor_list outs;
} run;

static double rel(const cb_tensor *got, const cb_tensor *want) {
  cr_assert(cb_tensor_same_shape(got, want), "shape mismatch");
  return rel_l2(cb_f32(got), cb_f32(want), (long)cb_tensor_numel(want));
}

/* Outputs against "<prefix><i>" of the fixture; the largest relative L2. */
static double compare_outputs(const run *r, const char *prefix) {
  double worst = 0;
  for (int i = 0; i < r->outs.n; i++) {
    char key[64];
    snprintf(key, sizeof key, "%s%d", prefix, i);
    double e = rel(r->outs.items[i], fixture_tensor(r->w, key));
    fprintf(stderr, "backbone_plugins %-18s %-12s relative L2 %.2e\n", r->name, key, e);
    if (e > worst) worst = e;
  }
  return worst;
}

static void compare_state(const run *r) {
  for (int i = 0; i < cb_weights_count(r->w); i++) {
    const char *key = cb_weights_name(r->w, i);
    if (strncmp(key, "state.", 6) != 0) continue;
    const cb_tensor *want = cb_weights_tensor(r->w, i);
    cb_param *p = cb_module_find_param(r->m, key + 6);
    cr_assert_not_null(p, "%s: no buffer %s", r->name, key + 6);
    cr_assert_eq(cb_tensor_numel(p->tensor), cb_tensor_numel(want), "%s: %s size", r->name, key);
    if (want->dtype == CB_I64) {
      cr_assert_eq(cb_i64(p->tensor)[0], cb_i64(want)[0], "%s: %s", r->name, key);
      continue;
    }
    double e = rel(p->tensor, want);
    cr_assert_leq(e, TOL, "%s: %s relative L2 %.3g", r->name, key, e);
  }
}

static run run_case(const char *name) {
  cb_error err = {0};
  run r = {.name = name};
  json_t *entry = json_object_get(cases, name);
  cr_assert_not_null(entry, "no case %s in cases.json", name);
  char path[256];
  snprintf(path, sizeof path, FIXTURES "/%s.safetensors", name);
  r.w = cb_safetensors_read(path, &err);
  cr_assert_not_null(r.w, "%s", err.msg);
  r.m = cb_build("BACKBONES", json_object_get(entry, "cfg"), NULL, "model.backbone", &err);
  cr_assert_not_null(r.m, "%s: %s", name, err.msg);
  cb_weights *state = fixture_model_weights(r.w);
  cr_assert_eq(cb_module_load_weights(r.m, state, NULL, true, stderr, &err), 0, "%s: %s", name,
               err.msg);
  cb_weights_free(state);
  cb_module_train(r.m, json_is_true(json_object_get(entry, "train")));
  cr_assert_eq(cb_module_forward_multi(r.m, fixture_tensor(r.w, "input"), &r.outs, &err), 0,
               "%s: %s", name, err.msg);
  int expected = 0;
  for (char key[32]; snprintf(key, sizeof key, "out.%d", expected), cb_weights_get(r.w, key);)
    expected++;
  cr_assert_eq(r.outs.n, expected, "%s: %d outputs, expected %d", name, r.outs.n, expected);
  double e = compare_outputs(&r, "out.");
  cr_assert_leq(e, TOL, "%s: relative L2 %.3g against PyTorch", name, e);
  compare_state(&r);
  return r;
}

static void run_free(run *r) {
  cb_tensor_list_clear(&r->outs);
  cb_module_free(r->m);
  cb_weights_free(r->w);
}

static void expect_kind(const run *r, const char *dotted, const char *kind) {
  cb_module *c = cb_module_find(r->m, dotted);
  cr_assert_not_null(c, "%s: no module %s", r->name, dotted);
  cr_assert_str_eq(cb_module_kind(c), kind, "%s: %s", r->name, dotted);
}

/* The key is a parameter of the module and a tensor of the fixture. */
static void expect_key(const run *r, const char *key) {
  cr_assert_not_null(cb_module_find_param(r->m, key), "%s: module lacks %s", r->name, key);
  cr_assert_not_null(cb_weights_get(r->w, key), "%s: fixture lacks %s", r->name, key);
}

/* ---- DCN ---- */

Test(backbone_plugins, dcn_v1c_d8) {
  run r = run_case("dcn_v1c_d8");
  expect_kind(&r, "layer2.0.conv2", "DeformConv2dPack");
  expect_kind(&r, "layer4.2.conv2", "DeformConv2dPack");
  expect_kind(&r, "layer1.0.conv2", "Conv2d");
  expect_key(&r, "layer2.0.conv2.conv_offset.weight");
  expect_key(&r, "layer4.1.conv2.conv_offset.bias");
  run_free(&r);
}

Test(backbone_plugins, dcnv2_deform_groups_2) {
  run r = run_case("dcnv2_dg2");
  expect_kind(&r, "layer3.0.conv2", "ModulatedDeformConv2dPack");
  cb_param *p = cb_module_find_param(r.m, "layer3.0.conv2.conv_offset.weight");
  cr_assert_not_null(p);
  cr_assert_eq(p->tensor->shape[0], 3 * 2 * 9, "offsets and masks of 2 deform groups");
  cr_assert_null(cb_module_find_param(r.m, "layer3.0.conv2.bias"));
  run_free(&r);
}

/* fallback_on_stride is popped once from the dict all blocks share: only the first DCN block
 * built gets a plain conv, whatever the strides. */
Test(backbone_plugins, dcn_fallback_on_stride_first_block_only) {
  run r = run_case("dcn_fallback");
  expect_kind(&r, "layer2.0.conv2", "Conv2d");
  cr_assert_null(cb_module_find_param(r.m, "layer2.0.conv2.conv_offset.weight"));
  cr_assert_null(cb_weights_get(r.w, "layer2.0.conv2.conv_offset.weight"));
  expect_kind(&r, "layer2.1.conv2", "DeformConv2dPack");
  expect_kind(&r, "layer3.0.conv2", "DeformConv2dPack"); /* strided, still deformable */
  expect_kind(&r, "layer4.0.conv2", "DeformConv2dPack");
  run_free(&r);
}

/* ---- plugins ---- */

/* One plugin per position: mmseg's forward_plugin (every plugin gets the position's input)
 * and cbrick's chaining give the same outputs. */
Test(backbone_plugins, context_block_after_conv3) {
  run r = run_case("gcb_r4");
  expect_kind(&r, "layer2.0.context_block", "ContextBlock");
  expect_key(&r, "layer2.0.context_block.channel_add_conv.0.weight");
  expect_key(&r, "layer4.2.context_block.channel_add_conv.1.weight");
  cr_assert_null(cb_module_find(r.m, "layer1.0.context_block"));
  double e = compare_outputs(&r, "mmseg.out.");
  cr_assert_leq(e, TOL, "mmseg's plugin semantics: relative L2 %.3g", e);
  run_free(&r);
}

Test(backbone_plugins, nonlocal_after_conv2_stage3) {
  run r = run_case("nonlocal_s3");
  expect_kind(&r, "layer3.1.nonlocal_block", "NonLocal2d");
  expect_key(&r, "layer3.1.nonlocal_block.g.conv.weight");
  expect_key(&r, "layer3.0.nonlocal_block.conv_out.conv.bias");
  cr_assert_null(cb_module_find(r.m, "layer2.0.nonlocal_block"));
  run_free(&r);
}

Test(backbone_plugins, gen_attention_0010) {
  run r = run_case("ga_0010");
  expect_kind(&r, "layer3.0.gen_attention_block", "GeneralizedAttention");
  expect_key(&r, "layer3.0.gen_attention_block.appr_bias");
  expect_key(&r, "layer4.2.gen_attention_block.key_conv.weight");
  cr_assert_null(cb_module_find(r.m, "layer2.0.gen_attention_block"));
  run_free(&r);
}

Test(backbone_plugins, gen_attention_1111) {
  run r = run_case("ga_1111");
  expect_key(&r, "layer3.1.gen_attention_block.appr_geom_fc_x.weight");
  expect_key(&r, "layer4.0.gen_attention_block.geom_bias");
  expect_key(&r, "layer4.0.gen_attention_block.gamma");
  run_free(&r);
}

/* Several plugins at one position run chained. mmseg's forward_plugin would give each the
 * position's input and keep the last output: the fixture's mmseg.out.* differ. */
Test(backbone_plugins, stacked_plugins_are_chained) {
  run r = run_case("stacked");
  expect_kind(&r, "layer3.0.nonlocal_block", "NonLocal2d");
  expect_kind(&r, "layer3.0.context_block", "ContextBlock");
  expect_kind(&r, "layer2.0.context_block1", "ContextBlock");
  expect_key(&r, "layer2.1.context_block_mul.channel_mul_conv.0.weight");
  cr_assert_null(cb_module_find(r.m, "layer2.0.nonlocal_block"));
  int last = r.outs.n - 1;
  char key[32];
  snprintf(key, sizeof key, "mmseg.out.%d", last);
  double e = rel(r.outs.items[last], fixture_tensor(r.w, key));
  fprintf(stderr, "backbone_plugins stacked: mmseg's plugin semantics differ by %.3f\n", e);
  cr_assert_gt(e, 1e-2, "mmseg's plugin semantics should differ here (%.3g)", e);
  cr_assert(json_is_false(json_object_get(json_object_get(cases, "stacked"), "mmseg_same")));
  run_free(&r);
}

/* Every case with at most one plugin per position was checked equal under both semantics. */
Test(backbone_plugins, one_plugin_per_position_matches_mmseg) {
  const char *name;
  json_t *entry;
  json_object_foreach(cases, name, entry) {
    if (strcmp(name, "stacked") == 0) continue;
    cr_assert(json_is_true(json_object_get(entry, "mmseg_same")), "%s", name);
  }
}

/* Beyond mmseg: BasicBlock with DCN as conv2 and a ContextBlock after conv2. */
Test(backbone_plugins, basic_block_dcn_and_context_block) {
  run r = run_case("basic_r18");
  expect_kind(&r, "layer1.0.conv2", "DeformConv2dPack");
  expect_kind(&r, "layer1.0.conv1", "Conv2d");
  expect_key(&r, "layer3.1.conv2.conv_offset.weight");
  expect_key(&r, "layer2.0.context_block.channel_mul_conv.3.bias");
  run_free(&r);
}

/* Train mode, batch 2: batch statistics, and updated running stats (also the BatchNorm inside
 * NonLocal2d's conv_out). */
Test(backbone_plugins, train_mode_running_stats) {
  run r = run_case("train_dcn_nl_gcb");
  cr_assert_not_null(cb_weights_get(r.w, "state.layer3.0.nonlocal_block.conv_out.bn.running_var"));
  expect_kind(&r, "layer3.0.nonlocal_block.g.1", "MaxPool2d");
  expect_key(&r, "layer3.0.nonlocal_block.phi.0.conv.weight");
  run_free(&r);
}

Test(backbone_plugins, every_case_has_a_test) {
  static const char *const tested[] = {"dcn_v1c_d8",  "dcnv2_dg2",       "dcn_fallback", "gcb_r4",
                                       "nonlocal_s3", "ga_0010",         "ga_1111",      "stacked",
                                       "basic_r18",   "train_dcn_nl_gcb"};
  size_t n = sizeof tested / sizeof tested[0];
  cr_assert_eq(json_object_size(cases), n);
  for (size_t i = 0; i < n; i++)
    cr_assert_not_null(json_object_get(cases, tested[i]), "%s", tested[i]);
}

/* Loading is strict: a fixture without one DCN offset is refused by name. */
Test(backbone_plugins, missing_offset_is_named) {
  cb_error err = {0};
  cb_weights *w = cb_safetensors_read(FIXTURES "/dcn_v1c_d8.safetensors", &err);
  cr_assert_not_null(w, "%s", err.msg);
  cb_weights *partial = cb_weights_new(&err);
  for (int i = 0; i < cb_weights_count(w); i++) {
    const char *name = cb_weights_name(w, i);
    if (fixture_is_expectation(name) || strcmp(name, "layer3.1.conv2.conv_offset.weight") == 0)
      continue;
    cb_weights_add(partial, name, cb_tensor_clone(cb_weights_tensor(w, i), &err), &err);
  }
  cb_module *m = cb_build("BACKBONES", json_object_get(json_object_get(cases, "dcn_v1c_d8"), "cfg"),
                          NULL, "model.backbone", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_neq(cb_module_load_weights(m, partial, NULL, true, NULL, &err), 0);
  cr_assert(strstr(err.msg, "layer3.1.conv2.conv_offset.weight"), "%s", err.msg);
  cb_module_free(m);
  cb_weights_free(partial);
  cb_weights_free(w);
}

/* ---- shipped configs: parameter counts are those of the PyTorch reference ---- */

static cb_module *build_config(const char *path) {
  cb_error err = {0};
  json_t *cfg = cb_config_load(path, &err);
  cr_assert_not_null(cfg, "%s", err.msg);
  cb_module *m =
      cb_build("BACKBONES", cb_config_get(cfg, "model.backbone"), NULL, "model.backbone", &err);
  cr_assert_not_null(m, "%s: %s", path, err.msg);
  json_decref(cfg);
  return m;
}

static void check_config(const char *path, long long params, const char *dotted, const char *kind) {
  cb_module *m = build_config(path);
  cr_assert_eq(cb_module_count_params(m), params, "%s: %lld parameters", path,
               (long long)cb_module_count_params(m));
  cb_module *c = cb_module_find(m, dotted);
  cr_assert_not_null(c, "%s: no %s", path, dotted);
  cr_assert_str_eq(cb_module_kind(c), kind, "%s: %s", path, dotted);
  cb_module_free(m);
}

Test(backbone_plugins, shipped_configs) {
  check_config("configs/dcn/resnet50_v1c_d8_dconv_c3-c5.json", 24108106, "layer2.0.conv2",
               "DeformConv2dPack");
  check_config("configs/dcn/resnet50_v1c_d8_mdconv_c3-c5.json", 24398527, "layer4.2.conv2",
               "ModulatedDeformConv2dPack");
  check_config("configs/gcnet/resnet50_v1c_d8_r4_gcb_c3-c5.json", 33528173,
               "layer2.0.context_block", "ContextBlock");
  check_config("configs/gcnet/resnet50_v1c_d8_r16_gcb_c3-c5.json", 26049005,
               "layer4.2.context_block", "ContextBlock");
  check_config("configs/nonlocal/resnet101_v1c_d8_nl_c5.json", 67706720, "layer4.2.nonlocal_block",
               "NonLocal2d");
  check_config("configs/gen_attention/resnet50_attention_0010.json", 27053129,
               "layer3.5.gen_attention_block", "GeneralizedAttention");
  check_config("configs/gen_attention/resnet50_attention_1111.json", 29415497,
               "layer4.0.gen_attention_block", "GeneralizedAttention");
  check_config("configs/gen_attention/resnet50_attention_0010_dcn.json", 27633971, "layer2.0.conv2",
               "DeformConv2dPack");
}

Test(backbone_plugins, shipped_configs_place_plugins_by_stage) {
  cb_module *m = build_config("configs/gen_attention/resnet50_attention_0010.json");
  cr_assert_null(cb_module_find(m, "layer2.0.gen_attention_block"));
  cb_module_free(m);
  m = build_config("configs/nonlocal/resnet101_v1c_d8_nl_c5.json");
  cr_assert_null(cb_module_find(m, "layer3.22.nonlocal_block"));
  cr_assert_not_null(cb_module_find_param(m, "layer4.0.nonlocal_block.conv_out.bn.weight"));
  cb_module_free(m);
  m = build_config("configs/dcn/resnet50_v1c_d8_dconv_c3-c5.json");
  cr_assert_str_eq(cb_module_kind(cb_module_find(m, "layer1.2.conv2")), "Conv2d");
  cb_module_free(m);
}

/* ---- train(): norm_eval and frozen_stages reach into plugins and DCN ---- */

static cb_module *build_json(const char *text) {
  cb_error err = {0};
  json_t *cfg = json_loads(text, 0, NULL);
  cr_assert_not_null(cfg, "bad test JSON: %s", text);
  cb_module *m = cb_build("BACKBONES", cfg, NULL, "model.backbone", &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s", err.msg);
  return m;
}

static const char *const frozen_plugins_cfg =
    "{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 8, \"stem_channels\": 8, "
    "\"num_stages\": 3, \"strides\": [1, 2, 2], \"dilations\": [1, 1, 1], \"out_indices\": [2], "
    "\"frozen_stages\": 2, \"norm_eval\": %s, \"dcn\": {\"type\": \"DCN\"}, "
    "\"stage_with_dcn\": [false, true, true], \"plugins\": [{\"cfg\": {\"type\": \"NonLocal2d\", "
    "\"norm_cfg\": {\"type\": \"BN\"}}, \"position\": \"after_conv2\", \"stages\": [false, true, "
    "true]}]}";

Test(backbone_plugins, frozen_stages_freeze_plugins_and_offsets) {
  char text[1024];
  snprintf(text, sizeof text, frozen_plugins_cfg, "false");
  cb_module *m = build_json(text);
  cb_module_train(m, true);
  cr_assert(!cb_module_find(m, "layer2.0.nonlocal_block.conv_out.bn")->training);
  cr_assert(!cb_module_find_param(m, "layer2.0.nonlocal_block.g.conv.weight")->requires_grad);
  cr_assert(!cb_module_find_param(m, "layer2.1.conv2.conv_offset.weight")->requires_grad);
  cr_assert(cb_module_find(m, "layer3.0.nonlocal_block.conv_out.bn")->training);
  cr_assert(cb_module_find_param(m, "layer3.0.nonlocal_block.g.conv.weight")->requires_grad);
  cr_assert(cb_module_find_param(m, "layer3.0.conv2.conv_offset.bias")->requires_grad);
  cb_module_free(m);
}

Test(backbone_plugins, norm_eval_reaches_plugin_batch_norms) {
  char text[1024];
  snprintf(text, sizeof text, frozen_plugins_cfg, "true");
  cb_module *m = build_json(text);
  cb_module_train(m, true);
  cr_assert(!cb_module_find(m, "layer3.0.nonlocal_block.conv_out.bn")->training);
  cr_assert(cb_module_find(m, "layer3.0.nonlocal_block")->training);
  cr_assert(cb_module_find(m, "layer3.0.conv2")->training);
  cb_module_free(m);
}
