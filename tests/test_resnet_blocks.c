/* ResNet's `block`: blocks from the RES_BLOCKS registry, here ScaledBottleneck from the
 * out-of-tree test plugin tests/plugins/custom_block.c, and the built-in blocks by name. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define NARROW "\"stem_channels\": 8, \"base_channels\": 8"
#define SCALED "{\"type\": \"ScaledBottleneck\", \"expansion\": 4}"

static void setup(void) {
  load_builtin_plugins();
  load_test_plugin("custom_block.so");
  load_test_plugin("scale_layer.so");
}

TestSuite(resnet_blocks, .init = setup, .fini = unload_plugins);

static bool has(const cb_module *m, const char *dotted) {
  return cb_module_find_param(m, dotted) != NULL;
}

static const char *kind_at(const cb_module *m, const char *dotted) {
  cb_module *c = cb_module_find(m, dotted);
  cr_assert_not_null(c, "no module %s", dotted);
  return cb_module_kind(c);
}

/* ---- weights and outputs ---- */

static void randomize(cb_module *m, uint64_t seed) {
  cb_error err = {0};
  cb_rng rng;
  cb_rng_seed(&rng, seed);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), 0, "%s", err.msg);
  randomize_norms(m, &rng);
}

typedef struct copy_state {
  const cb_module *from;
  int missing;
} copy_state;

/* Copies every tensor of the same name from one model into another; counts the others. */
static int copy_one(const char *name, cb_param *p, void *ud) {
  copy_state *c = ud;
  cb_param *src = cb_module_find_param(c->from, name);
  if (!src) {
    c->missing++;
    return 0;
  }
  cr_assert_eq(cb_tensor_nbytes(src->tensor), cb_tensor_nbytes(p->tensor), "%s size", name);
  memcpy(p->tensor->data, src->tensor->data, cb_tensor_nbytes(p->tensor));
  return 0;
}

static int count_different(const char *name, cb_param *p, void *ud) {
  copy_state *c = ud;
  cb_param *other = cb_module_find_param(c->from, name);
  if (!other || memcmp(other->tensor->data, p->tensor->data, cb_tensor_nbytes(p->tensor)) != 0)
    c->missing++;
  return 0;
}

/* Tensors of m that another model lacks or holds with other values. */
static int different_tensors(cb_module *m, const cb_module *other) {
  copy_state c = {other, 0};
  cb_module_visit_state(m, count_different, &c);
  return c.missing;
}

static int copy_weights(cb_module *to, const cb_module *from) {
  copy_state c = {from, 0};
  cb_module_visit_state(to, copy_one, &c);
  return c.missing;
}

static cb_tensor *input(uint64_t seed) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new4(2, 3, 64, 64, &err);
  cr_assert_not_null(x, "%s", err.msg);
  cb_rng rng;
  cb_rng_seed(&rng, seed);
  cb_init_uniform(x, -1.0, 1.0, &rng);
  return x;
}

static void forward(cb_module *m, const cb_tensor *x, cb_tensor_list *outs) {
  cb_error err = {0};
  cb_module_train(m, false);
  cr_assert_eq(cb_module_forward_multi(m, x, outs, &err), 0, "%s", err.msg);
}

static double max_rel_l2(const cb_tensor_list *got, const cb_tensor_list *want) {
  cr_assert_eq(got->n, want->n, "%d outputs, expected %d", got->n, want->n);
  double worst = 0;
  for (int i = 0; i < got->n; i++) {
    cr_assert(cb_tensor_same_shape(got->items[i], want->items[i]), "output %d shape", i);
    double e = rel_l2(cb_f32(got->items[i]), cb_f32(want->items[i]),
                      (long)cb_tensor_numel(want->items[i]));
    if (e > worst) worst = e;
  }
  return worst;
}

/* ---- the module tree ---- */

Test(resnet_blocks, custom_block_tree_and_state_names) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 50, \"block\": " SCALED "}");
  cr_assert_str_eq(kind_at(m, "layer1.0"), "ScaledBottleneck");
  cr_assert_str_eq(kind_at(m, "layer4.2"), "ScaledBottleneck");
  cr_assert_str_eq(kind_at(m, "layer1.0.downsample"), "Sequential");
  cr_assert(has(m, "layer1.0.gamma") && has(m, "layer3.5.gamma"));
  cr_assert(has(m, "layer1.0.downsample.0.weight") && has(m, "layer1.0.downsample.1.running_var"));
  cr_assert(has(m, "layer2.0.downsample.0.weight"));
  cr_assert_null(cb_module_find(m, "layer1.1.downsample"), "only a stage's first block");
  cr_assert(has(m, "layer4.2.bn3.weight") && has(m, "conv1.weight") && has(m, "bn1.bias"));
  cr_assert_null(cb_module_find(m, "layer3.6"));
  cr_assert_eq(cb_module_find_param(m, "layer4.0.conv3.weight")->tensor->shape[0], 2048);
  /* ResNet-50's parameters and one gamma per block (3 + 4 + 6 + 3). */
  cr_assert_eq(cb_module_count_params(m), 23508032 + 16, "%lld",
               (long long)cb_module_count_params(m));
  cb_module_free(m);
}

Test(resnet_blocks, stage_blocks_list_and_depth_table) {
  cb_module *m =
      build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 26, " NARROW ", \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, 2, 2, "
                        "2]}}");
  cr_assert_not_null(cb_module_find(m, "layer4.1"));
  cr_assert_null(cb_module_find(m, "layer4.2"));
  cr_assert_null(cb_module_find(m, "layer1.2"));
  cb_module_free(m);

  m = build_backbone_ok(
      "{\"type\": \"ResNet\", \"depth\": 38, " NARROW ", \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 2, \"stage_blocks\": {\"26\": [2, 2, 2, 2], "
      "\"38\": [3, 3, 3, 3]}}}");
  cr_assert_not_null(cb_module_find(m, "layer2.2"));
  cr_assert_null(cb_module_find(m, "layer2.3"));
  /* expansion 2: conv3 has planes * 2 channels, and the next stage starts from them */
  cr_assert_eq(cb_module_find_param(m, "layer1.0.conv3.weight")->tensor->shape[0], 16);
  cr_assert_eq(cb_module_find_param(m, "layer2.0.conv1.weight")->tensor->shape[1], 16);
  cr_assert_eq(cb_module_find_param(m, "layer2.0.downsample.0.weight")->tensor->shape[0], 32);
  cb_module_free(m);

  m = build_backbone_ok(
      "{\"type\": \"ResNet\", \"depth\": 26, " NARROW ", \"num_stages\": 2, "
      "\"strides\": [1, 2], \"dilations\": [1, 1], \"out_indices\": [1], \"block\": "
      "{\"type\": \"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [1, 3]}}");
  cr_assert_not_null(cb_module_find(m, "layer2.2"));
  cr_assert_null(cb_module_find(m, "layer3"));
  cb_module_free(m);
}

Test(resnet_blocks, variants_take_a_block) {
  cb_module *m = build_backbone_ok("{\"type\": \"ResNetV1d\", \"depth\": 50, " NARROW
                                   ", \"block\": " SCALED "}");
  cr_assert_str_eq(cb_module_kind(m), "ResNetV1d");
  cr_assert_str_eq(kind_at(m, "layer2.0.downsample.0"), "AvgPool2d");
  cr_assert(has(m, "layer2.0.downsample.1.weight") && has(m, "layer2.0.gamma"));
  cb_module_free(m);
}

Test(resnet_blocks, block_receives_the_gamma_init_argument) {
  cb_module *m =
      build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 50, " NARROW ", \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4, \"gamma_init\": 0.25}}");
  cr_assert_float_eq(cb_f32(cb_module_find_param(m, "layer3.2.gamma")->tensor)[0], 0.25f, 1e-7);
  cb_module_free(m);
}

/* ---- outputs ---- */

/* With gamma = 1 a ScaledBottleneck computes exactly a Bottleneck. */
Test(resnet_blocks, gamma_one_equals_plain_bottleneck) {
  cb_module *plain = build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 50, " NARROW "}");
  cb_module *scaled =
      build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 50, " NARROW ", \"block\": " SCALED "}");
  randomize(plain, 7);
  cr_assert_eq(copy_weights(scaled, plain), 16, "every tensor but the 16 gammas is shared");
  cb_tensor *x = input(11);
  cb_tensor_list want = {0}, got = {0};
  forward(plain, x, &want);
  forward(scaled, x, &got);
  double e = max_rel_l2(&got, &want);
  fprintf(stderr, "ScaledBottleneck (gamma 1) vs Bottleneck: relative L2 %.2e\n", e);
  cr_assert_leq(e, 1e-6, "relative L2 %.3g", e);
  const float zeros[8] = {0};
  cr_assert_gt(rel_l2(cb_f32(want.items[3]), zeros, 8), 1e-3, "the outputs carry signal");
  cb_tensor_list_clear(&got);

  cb_f32(cb_module_find_param(scaled, "layer4.1.gamma")->tensor)[0] = 0.5f;
  forward(scaled, x, &got);
  cr_assert_leq(
      rel_l2(cb_f32(got.items[2]), cb_f32(want.items[2]), (long)cb_tensor_numel(want.items[2])),
      1e-6, "stage 3 does not see layer4's gamma");
  double moved =
      rel_l2(cb_f32(got.items[3]), cb_f32(want.items[3]), (long)cb_tensor_numel(want.items[3]));
  cr_assert_gt(moved, 1e-3, "gamma scales the residual branch (relative change %.3g)", moved);
  cb_tensor_list_clear(&got);
  cb_tensor_list_clear(&want);
  cb_tensor_free(x);
  cb_module_free(plain);
  cb_module_free(scaled);
}

/* The plan runs the custom blocks as opaque nodes through their forward. */
Test(resnet_blocks, plan_runs_custom_blocks_as_opaque_nodes) {
  cb_error err = {0};
  cb_module *m =
      build_backbone_ok("{\"type\": \"ResNet\", \"depth\": 50, " NARROW ", \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4, \"gamma_init\": 0.7}}");
  randomize(m, 3);
  cb_tensor *x = input(5);
  cb_tensor_list want = {0}, got = {0};
  forward(m, x, &want);
  const int64_t shape[4] = {2, 3, 64, 64};
  cb_plan *plan = cb_plan_compile(m, shape, 1, &err);
  cr_assert_not_null(plan, "%s", err.msg);
  cb_plan_stats stats;
  cb_plan_get_stats(plan, &stats);
  cr_assert_eq(stats.opaque, 16, "one opaque node per block, found %d", stats.opaque);
  cr_assert_geq(stats.convs, 1, "the stem is still planned");
  cr_assert_eq(cb_plan_run(plan, x, &got, &err), 0, "%s", err.msg);
  double e = max_rel_l2(&got, &want);
  fprintf(stderr, "custom block plan vs reference: relative L2 %.2e (%d opaque nodes)\n", e,
          stats.opaque);
  cr_assert_leq(e, 1e-5, "plan vs reference: relative L2 %.3g", e);
  cb_tensor_list_clear(&got);
  cb_tensor_list_clear(&want);
  cb_plan_free(plan);
  cb_tensor_free(x);
  cb_module_free(m);
}

/* ---- the built-in blocks by name ---- */

typedef struct names {
  char text[1 << 16];
  size_t used;
} names;

static int add_name(const char *name, cb_param *p, void *ud) {
  (void)p;
  names *n = ud;
  n->used += (size_t)snprintf(n->text + n->used, sizeof n->text - n->used, "%s\n", name);
  cr_assert_lt(n->used, sizeof n->text);
  return 0;
}

static names *state_names(cb_module *m) {
  names *n = calloc(1, sizeof *n);
  cb_module_visit_state(m, add_name, n);
  return n;
}

/* Same state-dict names in the same order, same initialisation, same outputs. */
static void expect_same_model(const char *default_text, const char *block_text) {
  cb_module *a = build_backbone_ok(default_text), *b = build_backbone_ok(block_text);
  names *na = state_names(a), *nb = state_names(b);
  cr_assert_str_eq(nb->text, na->text, "%s: state-dict names differ", block_text);
  free(na);
  free(nb);
  cr_assert_eq(cb_module_count_params(a), cb_module_count_params(b));
  cb_error err = {0};
  cb_rng ra, rb;
  cb_rng_seed(&ra, 21);
  cb_rng_seed(&rb, 21);
  cr_assert_eq(cb_module_init_weights(a, &ra, &err), 0, "%s", err.msg);
  cr_assert_eq(cb_module_init_weights(b, &rb, &err), 0, "%s", err.msg);
  cb_param *last_norm = cb_module_find_param(b, "layer1.0.bn3.weight");
  if (!last_norm) last_norm = cb_module_find_param(b, "layer1.0.bn2.weight");
  cr_assert_float_eq(cb_f32(last_norm->tensor)[0], 0.0f, 0, "zero_init_residual reaches it");
  cr_assert_eq(different_tensors(b, a), 0, "%s: initialised differently", block_text);
  randomize_norms(a, &ra);
  cr_assert_eq(copy_weights(b, a), 0);
  cb_tensor *x = input(9);
  cb_tensor_list want = {0}, got = {0};
  forward(a, x, &want);
  forward(b, x, &got);
  cr_assert_eq(max_rel_l2(&got, &want), 0.0, "%s: outputs differ", block_text);
  cb_tensor_list_clear(&got);
  cb_tensor_list_clear(&want);
  cb_tensor_free(x);
  cb_module_free(a);
  cb_module_free(b);
}

Test(resnet_blocks, builtin_block_by_name_is_the_default_model) {
  expect_same_model("{\"type\": \"ResNet\", \"depth\": 50}",
                    "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
                    "\"Bottleneck\"}}");
  expect_same_model("{\"type\": \"ResNet\", \"depth\": 18, " NARROW "}",
                    "{\"type\": \"ResNet\", \"depth\": 18, " NARROW ", \"block\": {\"type\": "
                    "\"BasicBlock\", \"expansion\": 1}}");
}

#define DCN                                                                                        \
  "\"dcn\": {\"type\": \"DCN\", \"deform_groups\": 1, \"fallback_on_stride\": true}, "             \
  "\"stage_with_dcn\": [false, true, false, true]"

Test(resnet_blocks, builtin_block_keeps_plugins_dcn_caffe_and_groups) {
  expect_same_model(
      "{\"type\": \"ResNetV1c\", \"depth\": 50, " NARROW ", \"style\": \"caffe\", \"plugins\": "
      "[{\"cfg\": {\"type\": \"Scale\", \"init\": 2.0}, \"position\": \"after_conv2\", \"stages\": "
      "[false, true, true, true]}, {\"cfg\": {\"type\": \"Scale\", \"postfix\": 3}, "
      "\"position\": \"after_conv3\"}], " DCN "}",
      "{\"type\": \"ResNetV1c\", \"depth\": 50, " NARROW ", \"style\": \"caffe\", \"plugins\": "
      "[{\"cfg\": {\"type\": \"Scale\", \"init\": 2.0}, \"position\": \"after_conv2\", \"stages\": "
      "[false, true, true, true]}, {\"cfg\": {\"type\": \"Scale\", \"postfix\": 3}, "
      "\"position\": \"after_conv3\"}], " DCN ", \"block\": {\"type\": \"Bottleneck\"}}");
  expect_same_model("{\"type\": \"ResNeXt\", \"depth\": 50, " NARROW ", \"groups\": 4, "
                    "\"base_width\": 4, \"dilations\": [1, 1, 2, 4], \"strides\": [1, 2, 1, 1], "
                    "\"multi_grid\": [1, 2, 4]}",
                    "{\"type\": \"ResNeXt\", \"depth\": 50, " NARROW ", \"groups\": 4, "
                    "\"base_width\": 4, \"dilations\": [1, 1, 2, 4], \"strides\": [1, 2, 1, 1], "
                    "\"multi_grid\": [1, 2, 4], \"block\": {\"type\": \"Bottleneck\"}}");
  cb_module *m = build_backbone_ok(
      "{\"type\": \"ResNet\", \"depth\": 50, " NARROW ", " DCN ", \"block\": {\"type\": "
      "\"Bottleneck\"}, \"plugins\": [{\"cfg\": {\"type\": \"Scale\"}, \"position\": "
      "\"after_conv3\", \"stages\": [false, true, false, false]}]}");
  cr_assert_str_eq(kind_at(m, "layer2.0.conv2"), "Conv2d", "fallback_on_stride: the first one");
  cr_assert_str_eq(kind_at(m, "layer2.1.conv2"), "DeformConv2dPack");
  cr_assert_str_eq(kind_at(m, "layer4.0.conv2"), "DeformConv2dPack");
  cr_assert_str_eq(kind_at(m, "layer3.0.conv2"), "Conv2d");
  cr_assert_not_null(cb_module_find(m, "layer2.3.scale"));
  cr_assert_null(cb_module_find(m, "layer1.0.scale"));
  cr_assert_null(cb_module_find(m, "layer3.0.scale"));
  cb_module *block = cb_module_find(m, "layer2.0");
  cr_assert_str_eq(block->child_names[block->n_children - 1], "scale",
                   "downsample sits before the plugins, as in mmseg's Bottleneck");
  cb_module_free(m);
}

/* A block built directly from the registry, as a custom block wrapping one would. */
Test(resnet_blocks, builtin_entries_build_alone) {
  cb_error err = {0};
  json_t *cfg = json_pack("{s:s, s:i, s:i, s:i, s:{s:s}}", "type", "Bottleneck", "inplanes", 16,
                          "planes", 4, "stride", 2, "norm_cfg", "type", "BN");
  cb_module *m = cb_build("RES_BLOCKS", cfg, NULL, "block", &err);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_str_eq(cb_module_kind(m), "Bottleneck");
  cr_assert_eq(cb_module_find_param(m, "conv3.weight")->tensor->shape[0], 16);
  cr_assert_null(cb_module_child(m, "downsample"));
  cb_module_free(m);
  json_object_set_new(
      cfg, "plugins",
      json_pack("[{s:{s:s}, s:s}]", "cfg", "type", "Scale", "position", "after_conv4"));
  cr_assert_null(cb_build("RES_BLOCKS", cfg, NULL, "block", &err));
  cr_assert(strstr(err.msg, "block.plugins[0].position: expected 'after_conv1', 'after_conv2' "
                            "or 'after_conv3', found 'after_conv4'"),
            "%s", err.msg);
  json_decref(cfg);
}

/* ---- config errors ---- */

Test(resnet_blocks, unknown_block_type_lists_the_registry) {
  cb_error err = {0};
  cb_module *m = build_backbone_text("{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
                                     "\"ScaledBotleneck\", \"expansion\": 4}}",
                                     &err);
  cr_assert_null(m);
  cr_assert(strstr(err.msg, "model.backbone.block.type: 'ScaledBotleneck' is not in the "
                            "RES_BLOCKS registry (did you mean 'ScaledBottleneck'?"),
            "%s", err.msg);
  cr_assert(strstr(err.msg, "BasicBlock") && strstr(err.msg, "Bottleneck, ScaledBottleneck"), "%s",
            err.msg);
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"expansion\": 4}}",
                        "model.backbone.block.type: required (a name in the RES_BLOCKS registry)");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": \"Bottleneck\"}",
                        "model.backbone.block: expected");
}

Test(resnet_blocks, expansion_errors) {
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
      "\"ScaledBottleneck\"}}",
      "model.backbone.block.expansion: required for block type 'ScaledBottleneck'");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": \"Bottleneck\", "
      "\"expansion\": 2}}",
      "model.backbone.block.expansion: Bottleneck's expansion is 4, found 2");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 0}}",
      "model.backbone.block.expansion: expected an integer from 1 to 64, found 0");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": \"4\"}}",
                        "model.backbone.block.expansion: expected an integer");
}

Test(resnet_blocks, stage_blocks_errors) {
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, 2, 2]}}",
      "model.backbone.block.stage_blocks: expected 4 block counts (one per stage), "
      "found 3");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, 2, 2, 2, 2]}}",
      "expected 4 block counts (one per stage), found 5");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, 0, 2, 2]}}",
      "model.backbone.block.stage_blocks: item 1: expected a positive integer up to "
      "1024, found 0");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, -1, 2, 2]}}",
                        "item 1: expected a positive integer up to 1024, found -1");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, \"2\", 2, 2]}}",
      "item 1: expected a positive integer up to 1024, found a string");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": 2}}",
      "stage_blocks: expected a list of block counts, one per stage, found an integer");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"num_stages\": 3, \"strides\": [1, 2, 2], "
      "\"dilations\": [1, 1, 1], \"out_indices\": [2], \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, 2]}}",
      "stage_blocks: expected 3 to 4 block counts (one per stage, num_stages = 3), "
      "found 2");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 38, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": {\"38\": [1, 1, 1]}}}",
      "model.backbone.block.stage_blocks.38: expected 4 block counts");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": [2, 2, 2, 2]}, "
      "\"multi_grid\": [1]}",
      "multi_grid: expected a dilation for each of the 2 blocks of the last stage");
}

Test(resnet_blocks, depth_must_have_blocks) {
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
      "\"ScaledBottleneck\", \"expansion\": 4, \"stage_blocks\": {\"26\": [2, 2, 2, 2], "
      "\"38\": [3, 3, 3, 3]}}}",
      "model.backbone.depth: invalid depth 50 for resnet with block type "
      "'ScaledBottleneck': expected one of the depths of block.stage_blocks (26, 38)");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 26, \"block\": " SCALED "}",
      "model.backbone.depth: invalid depth 26 for resnet: expected one of 18, 34, 50, "
      "101, 152, or give the block's own stage_blocks");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 0, \"block\": " SCALED "}",
                        "model.backbone.depth: invalid depth 0");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 26}",
                        "model.backbone.depth: invalid depth 26");
}

Test(resnet_blocks, keys_resnet_passes_are_refused_in_block) {
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4, \"stride\": 2}}",
                        "model.backbone.block.stride: ResNet passes stride to every block itself");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": \"Bottleneck\", "
      "\"norm_cfg\": {\"type\": \"GN\", \"num_groups\": 2}}}",
      "model.backbone.block.norm_cfg: ResNet passes norm_cfg to every block itself");
}

Test(resnet_blocks, block_argument_errors_name_the_block) {
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4, \"gama_init\": 0.5}}",
                        "model.backbone.block.gama_init: unknown key for type 'ScaledBottleneck'");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": "
                        "\"ScaledBottleneck\", \"expansion\": 4}, \"dcn\": {\"type\": \"DCN\"}, "
                        "\"stage_with_dcn\": [false, true, true, true]}",
                        "model.backbone.block.dcn: ScaledBottleneck takes no dcn");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"block\": " SCALED ", \"plugins\": "
                        "[{\"cfg\": {\"type\": \"Scale\"}, \"position\": \"after_conv2\"}]}",
                        "model.backbone.block.plugins: ScaledBottleneck takes no plugins");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"block\": {\"type\": \"BasicBlock\"}, "
      "\"plugins\": [{\"cfg\": {\"type\": \"Scale\"}, \"position\": \"after_conv3\"}]}",
      "plugins[0].position: expected 'after_conv1' or 'after_conv2' (BasicBlock)");
  expect_backbone_error(
      "{\"type\": \"ResNet\", \"depth\": 50, \"groups\": 2, \"block\": {\"type\": "
      "\"BasicBlock\"}}",
      "model.backbone.groups: grouped convolutions need Bottleneck blocks, found block "
      "type BasicBlock");
  expect_backbone_error("{\"type\": \"ResNet\", \"depth\": 50, \"groups\": 2, \"block\": " SCALED
                        "}",
                        "model.backbone.block.groups: unknown key for type 'ScaledBottleneck'");
}
