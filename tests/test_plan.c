/* Compiled plans: outputs against the PyTorch fixtures and the reference forward, fusion and
 * arena reuse, opaque nodes for layers without a lower hook, and refusals. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define FIXTURES "tests/fixtures/resnet"

TestSuite(plan, .init = load_builtin_plugins, .fini = unload_plugins);

static cb_module *build_json(json_t *cfg, const char *name) {
  cb_error err = {0};
  cb_module *m = cb_build("BACKBONES", cfg, NULL, name, &err);
  cr_assert_not_null(m, "%s", err.msg);
  return m;
}

static void load_fixture_weights(cb_module *m, const cb_weights *w) {
  cb_error err = {0};
  cb_weights *state = fixture_model_weights(w);
  cr_assert_eq(cb_module_load_weights(m, state, NULL, true, NULL, &err), 0, "%s", err.msg);
  cb_weights_free(state);
}

/* Builds a fixture case in eval mode with its weights; *w receives the fixture file. */
static cb_module *fixture_model(const char *name, cb_weights **w) {
  cb_error err = {0};
  json_error_t jerr;
  json_t *cases = json_load_file(FIXTURES "/cases.json", 0, &jerr);
  cr_assert_not_null(cases, "cases.json: %s", jerr.text);
  json_t *entry = json_object_get(cases, name);
  cr_assert_not_null(entry, "no case %s", name);
  cr_assert(!json_is_true(json_object_get(entry, "train")), "%s is a train-mode case", name);
  char path[256];
  snprintf(path, sizeof path, FIXTURES "/%s.safetensors", name);
  *w = cb_safetensors_read(path, &err);
  cr_assert_not_null(*w, "%s", err.msg);
  cb_module *m = build_json(json_object_get(entry, "cfg"), name);
  json_decref(cases);
  load_fixture_weights(m, *w);
  cb_module_train(m, false);
  return m;
}

static cb_plan *compile_ok(cb_module *m, const cb_tensor *x, int threads) {
  cb_error err = {0};
  cb_plan *plan = cb_plan_compile(m, x->shape, threads, &err);
  cr_assert_not_null(plan, "%s", err.msg);
  return plan;
}

static void expect_close(const cb_tensor *got, const cb_tensor *want, const char *what) {
  cr_assert(cb_tensor_same_shape(got, want), "%s: shape differs", what);
  double e = rel_l2(cb_f32(got), cb_f32(want), (long)cb_tensor_numel(want));
  fprintf(stderr, "plan %-28s relative L2 %.2e\n", what, e);
  cr_assert_leq(e, 1e-4, "%s: relative L2 %.3g", what, e);
}

static cb_plan_stats check_fixture(const char *name, int threads) {
  cb_error err = {0};
  cb_weights *w;
  cb_module *m = fixture_model(name, &w);
  const cb_tensor *x = fixture_tensor(w, "input");
  cb_plan *plan = compile_ok(m, x, threads);
  cb_tensor_list first = {0};
  for (int run = 0; run < 2; run++) { /* a second run reuses the arena */
    cb_tensor_list outs = {0};
    cr_assert_eq(cb_plan_run(plan, x, &outs, &err), 0, "%s: %s", name, err.msg);
    int expected = 0;
    for (char key[32]; snprintf(key, sizeof key, "out.%d", expected), cb_weights_get(w, key);)
      expected++;
    cr_assert_eq(outs.n, expected, "%s: %d outputs, expected %d", name, outs.n, expected);
    for (int i = 0; i < outs.n; i++) {
      char key[32], what[64];
      snprintf(key, sizeof key, "out.%d", i);
      snprintf(what, sizeof what, "%s %s (%d threads)", name, key, threads);
      expect_close(outs.items[i], fixture_tensor(w, key), what);
    }
    if (run == 0) {
      first = outs;
      continue;
    }
    /* outputs are written into new tensors: the first run's stay as they were */
    for (int i = 0; i < outs.n; i++)
      cr_assert(
          outs.items[i]->data != first.items[i]->data &&
              !memcmp(outs.items[i]->data, first.items[i]->data, cb_tensor_nbytes(first.items[i])),
          "%s: output %d of the second run differs from the first's", name, i);
    cb_tensor_list_clear(&outs);
  }
  cb_tensor_list_clear(&first);
  cb_plan_stats s;
  cb_plan_get_stats(plan, &s);
  cb_plan_free(plan);
  cb_module_free(m);
  cb_weights_free(w);
  return s;
}

Test(plan, fixture_resnext_grouped) {
  check_fixture("resnext", 2);
}
Test(plan, fixture_r18) {
  check_fixture("r18", 1);
}
Test(plan, fixture_r34) {
  check_fixture("r34", 2);
}
Test(plan, fixture_r101) {
  check_fixture("r101", 2);
}
Test(plan, fixture_v1c) {
  check_fixture("v1c", 2);
}
Test(plan, fixture_v1d_avg_down) {
  check_fixture("v1d", 1);
}
Test(plan, fixture_caffe) {
  check_fixture("caffe", 2);
}
Test(plan, fixture_d8) {
  check_fixture("d8", 2);
}
Test(plan, fixture_d8_basic) {
  check_fixture("d8_basic", 1);
}
Test(plan, fixture_multi_grid) {
  check_fixture("multi_grid", 2);
}

/* Every 3x3 convolution that the tile fits as Winograd F(tile x tile, 3x3) (stride 1; with
 * F(2x2) stride 2 too; F(3x3) undilated only), residuals in place included. */
static void winograd_everywhere(const char *tile) {
  setenv("CBRICK_WINOGRAD", tile, 1);
  cb_plan_stats s = check_fixture("r34", 2);
  if (strcmp(s.isa, "portable") == 0) cr_skip_test("Winograd runs on the packed path only");
  cr_assert_gt(s.winograd, 20, "Winograd convs: %d", s.winograd);
  check_fixture("d8", 1);
  check_fixture("multi_grid", 2);
  unsetenv("CBRICK_WINOGRAD");
}
Test(plan, winograd_f2_r34_d8) {
  winograd_everywhere("2");
}
Test(plan, winograd_f3_r34_d8) {
  winograd_everywhere("3");
}
Test(plan, winograd_f4_r34_d8) {
  winograd_everywhere("4");
}

/* The portable path (OpenBLAS on im2col), as on processors without AVX2. */
Test(plan, portable_path_r50) {
  setenv("CBRICK_ISA", "portable", 1);
  cb_plan_stats s = check_fixture("r50", 2);
  cr_assert_str_eq(s.isa, "portable");
  cr_assert_eq(s.fused_bn, 53);
  cr_assert_eq(s.merged_convs, 0, "merged convs: %d", s.merged_convs);
  check_fixture("d8", 1);
  unsetenv("CBRICK_ISA");
}

/* The AVX2 kernels, as on processors without AVX-512: the column kernel (the stem read in
 * place, downsamples merged) and Winograd at stride 1, by the cost rule and forced. */
Test(plan, avx2_path_r50_d8) {
  use_kernels_or_skip("avx2");
  cb_plan_stats s = check_fixture("r50", 2);
  cr_assert_str_eq(s.isa, "avx2");
  cr_assert_eq(s.merged_convs, 4, "merged convs: %d", s.merged_convs);
  check_fixture("r50", 3);
  check_fixture("d8", 1);
  check_fixture("multi_grid", 2);
  check_fixture("resnext", 2);
  const char *tiles[3] = {"2", "3", "4"};
  for (int i = 0; i < 3; i++) {
    setenv("CBRICK_WINOGRAD", tiles[i], 1);
    s = check_fixture("r34", 2);
    cr_assert_gt(s.winograd, 20, "F(%sx%s): Winograd convs: %d", tiles[i], tiles[i], s.winograd);
  }
  unsetenv("CBRICK_WINOGRAD");
  unsetenv("CBRICK_ISA");
}

static bool packed_kernels(void) {
  return strcmp(cb_kernels_isa(), "portable") != 0;
}

/* ResNet-50: 53 conv + BN pairs fold, every block's sum and ReLU go into a conv, each stage's
 * downsample runs in its conv3's GEMM (on the AVX-512 kernels), and the arena is far smaller
 * than all activations together. */
Test(plan, r50_fusion_and_arena) {
  cb_plan_stats s = check_fixture("r50", 2);
  cr_assert_eq(s.merged_convs, packed_kernels() ? 4 : 0, "merged convs: %d", s.merged_convs);
  cr_assert_eq(s.convs, 53, "convs: %d", s.convs);
  cr_assert_eq(s.fused_bn, 53, "BatchNorms folded: %d", s.fused_bn);
  cr_assert_eq(s.fused_add, 16, "residual sums fused: %d", s.fused_add);
  cr_assert_eq(s.fused_relu, 1 + 16 * 3, "ReLUs fused: %d", s.fused_relu);
  cr_assert_eq(s.opaque, 0);
  cr_assert_eq(s.nodes, 54 - s.merged_convs, "nodes: %d (53 convs + max pool, less merged)",
               s.nodes);
  cr_assert_gt(s.arena_bytes, 0);
  cr_assert_lt(s.arena_bytes * 4, s.values_bytes, "arena %zu vs all activations %zu", s.arena_bytes,
               s.values_bytes);
  cr_assert_gt(s.flops, 0);
}

/* GroupNorm has no lower hook: it runs as an opaque node, unfused. */
Test(plan, opaque_group_norm) {
  cb_plan_stats s = check_fixture("gn", 2);
  cr_assert_gt(s.opaque, 0, "GroupNorm layers run opaque");
  cr_assert_eq(s.fused_bn, 0);
}

static const char *build_dir(void) {
  const char *b = getenv("CBRICK_BUILD");
  return b && *b ? b : "build";
}

static void compare_with_reference(cb_module *m, const int64_t *shape, int threads) {
  cb_error err = {0};
  cb_tensor *x = cb_tensor_new(CB_F32, 4, shape, &err);
  cr_assert_not_null(x, "%s", err.msg);
  cb_rng rng;
  cb_rng_seed(&rng, 7);
  for (int64_t i = 0; i < cb_tensor_numel(x); i++)
    cb_f32(x)[i] = (float)cb_rng_normal(&rng);
  cb_tensor_list want = {0}, got = {0};
  cr_assert_eq(cb_module_forward_multi(m, x, &want, &err), 0, "%s", err.msg);
  cb_plan *plan = compile_ok(m, x, threads);
  cr_assert_eq(cb_plan_run(plan, x, &got, &err), 0, "%s", err.msg);
  cr_assert_eq(got.n, want.n);
  for (int i = 0; i < got.n; i++)
    expect_close(got.items[i], want.items[i], "plan vs reference");
  cb_tensor_list_clear(&want);
  cb_tensor_list_clear(&got);
  cb_plan_free(plan);
  cb_tensor_free(x);
}

/* An out-of-tree plugin layer (Scale, no lower hook) inside every Bottleneck. */
Test(plan, opaque_out_of_tree_plugin) {
  cb_error err = {0};
  char path[512];
  snprintf(path, sizeof path, "%s/tests/plugins/scale_layer.so", build_dir());
  cr_assert_eq(cb_plugin_load_file(path, &err), 0, "%s", err.msg);
  json_t *cfg = json_loads(
      "{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 8, \"stem_channels\": 8, "
      "\"num_stages\": 2, \"strides\": [1, 2], \"dilations\": [1, 1], \"out_indices\": [0, 1], "
      "\"plugins\": [{\"cfg\": {\"type\": \"Scale\", \"init\": 0.5}, \"position\": "
      "\"after_conv3\"}]}",
      0, NULL);
  cr_assert_not_null(cfg);
  cb_module *m = build_json(cfg, "model.backbone");
  json_decref(cfg);
  cb_rng rng;
  cb_rng_seed(&rng, 3);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), 0, "%s", err.msg);
  randomize_norms(m, &rng);
  cb_module_train(m, false);
  const int64_t shape[4] = {2, 3, 37, 45};
  compare_with_reference(m, shape, 2);
  cb_tensor x = {.dtype = CB_F32, .ndim = 4, .shape = {2, 3, 37, 45}};
  cb_plan *plan = cb_plan_compile(m, x.shape, 1, &err);
  cr_assert_not_null(plan, "%s", err.msg);
  cb_plan_stats s;
  cb_plan_get_stats(plan, &s);
  cr_assert_eq(s.opaque, 7, "one Scale per block: %d", s.opaque);
  /* Only the first block of a stage fuses its sum: into the downsample conv, which runs
   * after the Scale node; elsewhere the sum of Scale's output and the identity stays a node. */
  cr_assert_eq(s.fused_add, 2, "fused sums: %d", s.fused_add);
  cb_plan_free(plan);
  cb_module_free(m);
}

/* Odd sizes, stride-2 edges and batch 2, against the reference forward. */
Test(plan, odd_shapes_match_reference) {
  cb_error err = {0};
  json_t *cfg = json_loads("{\"type\": \"ResNetV1d\", \"depth\": 18, \"base_channels\": 8, "
                           "\"stem_channels\": 16}",
                           0, NULL);
  cb_module *m = build_json(cfg, "model.backbone");
  json_decref(cfg);
  cb_rng rng;
  cb_rng_seed(&rng, 5);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), 0, "%s", err.msg);
  randomize_norms(m, &rng);
  cb_module_train(m, false);
  const int64_t a[4] = {2, 3, 67, 33}, b[4] = {1, 3, 96, 128};
  compare_with_reference(m, a, 2);
  compare_with_reference(m, b, 1);
  cb_module_free(m);
}

static int randomize_param(const char *name, cb_param *p, void *ud) {
  (void)name;
  cb_init_uniform(p->tensor, -0.5, 0.5, ud);
  return 0;
}

/* A bare convolution from config text, eval mode, weights drawn from seed (a bare Conv2d keeps
 * zero weights after its own init). */
static cb_module *random_conv(const char *json, uint64_t seed) {
  cb_error err = {0};
  json_t *cfg = json_loads(json, 0, NULL);
  cb_module *m = cb_build("CONV_LAYERS", cfg, NULL, "conv", &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s", err.msg);
  cb_rng rng;
  cb_rng_seed(&rng, seed);
  cb_module_visit_state(m, randomize_param, &rng);
  cb_module_train(m, false);
  return m;
}

/* Convolutions of few input channels read a padded copy split by column phase: strides 1, 2
 * and 3, paddings wider and narrower than the phase, odd sides. */
Test(plan, padded_copy_strides) {
  static const char *const convs[] = {
      "{\"type\": \"Conv2d\", \"in_channels\": 3, \"out_channels\": 16, \"kernel_size\": 5, "
      "\"stride\": 3, \"padding\": 2, \"bias\": true}",
      "{\"type\": \"Conv2d\", \"in_channels\": 5, \"out_channels\": 13, \"kernel_size\": 3, "
      "\"stride\": 1, \"padding\": 1}",
      "{\"type\": \"Conv2d\", \"in_channels\": 2, \"out_channels\": 24, \"kernel_size\": 7, "
      "\"stride\": 2, \"padding\": 4}"};
  const int64_t shapes[][4] = {{2, 3, 61, 97}, {1, 5, 9, 40}, {1, 2, 41, 37}};
  for (int i = 0; i < 3; i++) {
    cb_error err = {0};
    cb_module *m = random_conv(convs[i], 3 + (uint64_t)i);
    cb_plan *plan = cb_plan_compile(m, shapes[i], 2, &err);
    cr_assert_not_null(plan, "%s", err.msg);
    cb_plan_stats st;
    cb_plan_get_stats(plan, &st);
    cb_plan_free(plan);
    cr_assert(st.convs == 1 && st.opaque == 0, "case %d: %d convs, %d opaque", i, st.convs,
              st.opaque);
    compare_with_reference(m, shapes[i], 2);
    cb_module_free(m);
  }
}

/* 1x1 convolutions on the AVX-512 kernels read their input in place in slabs of 32 or 16
 * columns and pack the others (the AVX2 kernels pack every slab): maps whose last slab is 16
 * columns wide (20x20), 1 (17x17) and 21 (23x19), batch 2, output channels that leave a
 * partial row tile; rows 384 floats apart are packed (16x24); on the kernels of `isa`. */
static void direct_slab_widths(const char *isa) {
  use_kernels_or_skip(isa);
  static const char *const conv = "{\"type\": \"Conv2d\", \"in_channels\": 40, "
                                  "\"out_channels\": 50, \"kernel_size\": 1, \"bias\": true}";
  const int64_t shapes[][4] = {{2, 40, 20, 20}, {2, 40, 17, 17}, {1, 40, 23, 19}, {2, 40, 16, 24}};
  cb_module *m = random_conv(conv, 5);
  for (int i = 0; i < 4; i++)
    for (int threads = 1; threads <= 2; threads++)
      compare_with_reference(m, shapes[i], threads);
  cb_module_free(m);
}

Test(plan, direct_slab_widths_avx512) {
  direct_slab_widths("avx512");
}

Test(plan, direct_slab_widths_avx2) {
  direct_slab_widths("avx2");
}

static cb_module *random_resnet(const char *json, uint64_t seed) {
  cb_error err = {0};
  json_t *cfg = json_loads(json, 0, NULL);
  cr_assert_not_null(cfg);
  cb_module *m = build_json(cfg, "model.backbone");
  json_decref(cfg);
  cb_rng rng;
  cb_rng_seed(&rng, seed);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), 0, "%s", err.msg);
  randomize_norms(m, &rng);
  cb_module_train(m, false);
  return m;
}

static int count_winograd(cb_module *m, const int64_t *shape) {
  cb_error err = {0};
  cb_plan *plan = cb_plan_compile(m, shape, 1, &err);
  cr_assert_not_null(plan, "%s", err.msg);
  cb_plan_stats s;
  cb_plan_get_stats(plan, &s);
  cb_plan_free(plan);
  return s.winograd;
}

/* Winograd F(2x2, 3x3) by the cost rule (64 channels and more), on maps with odd sides and
 * partial tile chunks, batch 2, basic blocks with the residual sum in the epilogue; on the
 * kernels of `isa`. */
static void winograd_odd_sizes(const char *isa) {
  use_kernels_or_skip(isa);
  cb_module *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 64, "
                               "\"stem_channels\": 32, \"num_stages\": 3, \"strides\": [1, 2, 2], "
                               "\"dilations\": [1, 1, 1], \"out_indices\": [0, 1, 2]}",
                               11);
  const int64_t a[4] = {2, 3, 75, 61}, b[4] = {1, 3, 50, 38};
  unsetenv("CBRICK_WINOGRAD");
  int used = count_winograd(m, a);
  cr_assert_geq(used, 8, "Winograd convs: %d", used);
  compare_with_reference(m, a, 2);
  compare_with_reference(m, b, 1);
  setenv("CBRICK_WINOGRAD", "0", 1);
  cr_assert_eq(count_winograd(m, a), 0, "CBRICK_WINOGRAD=0 turns it off");
  unsetenv("CBRICK_WINOGRAD");
  cb_module_free(m);
  unsetenv("CBRICK_ISA");
}
Test(plan, winograd_odd_sizes_avx512) {
  winograd_odd_sizes("avx512");
}
Test(plan, winograd_odd_sizes_avx2) {
  winograd_odd_sizes("avx2");
}

/* Stride-2 3x3 convolutions as Winograd F(2x2, 3x3) over 5x5 patches (the AVX-512 kernels):
 * bottlenecks whose layer2.0.conv2 halves a map with odd sides, batch 2, by the cost rule and
 * forced. */
static void winograd_stride2(const char *isa) {
  use_kernels_or_skip(isa);
  cb_module *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 50, \"num_stages\": 2, "
                               "\"strides\": [1, 2], \"dilations\": [1, 1], "
                               "\"out_indices\": [0, 1]}",
                               19);
  const int64_t a[4] = {2, 3, 123, 101}, b[4] = {1, 3, 50, 38};
  unsetenv("CBRICK_WINOGRAD");
  int used = count_winograd(m, a);
  /* layer1's three 3x3 convs, layer2.0.conv2 at stride 2 (8x7 tiles), layer2.1-3's three */
  cr_assert_eq(used, 7, "Winograd convs: %d", used);
  compare_with_reference(m, a, 2);
  setenv("CBRICK_WINOGRAD", "2", 1);
  cr_assert_eq(count_winograd(m, b), 7, "CBRICK_WINOGRAD=2 applies at stride 2 too");
  compare_with_reference(m, b, 1);
  compare_with_reference(m, a, 3);
  unsetenv("CBRICK_WINOGRAD");
  cb_module_free(m);
  unsetenv("CBRICK_ISA");
}
Test(plan, winograd_stride2) {
  winograd_stride2("avx512");
}

/* Dilated 3x3 convolutions as Winograd over the phases of the map (dilation 2 and 4, maps
 * whose sides the dilation does not divide). */
Test(plan, winograd_dilated) {
  cb_module *m = random_resnet("{\"type\": \"ResNetV1c\", \"depth\": 18, \"base_channels\": 64, "
                               "\"stem_channels\": 32, \"num_stages\": 3, \"strides\": [1, 2, 1], "
                               "\"dilations\": [1, 2, 4], \"out_indices\": [1, 2]}",
                               17);
  const int64_t a[4] = {1, 3, 67, 93}, b[4] = {2, 3, 40, 36};
  if (strcmp(cb_kernels_isa(), "avx512") != 0)
    cr_skip_test("dilated Winograd runs on the AVX-512 kernels only");
  int used = count_winograd(m, a);
  cr_assert_geq(used, 10, "Winograd convs: %d", used);
  compare_with_reference(m, a, 2);
  compare_with_reference(m, b, 1);
  cb_module_free(m);
}

/* Winograd layers of 14x14 and 7x7 maps split between the threads by blocks of output
 * channels, each thread transforming the inputs once for the blocks it runs, shares that span
 * both images of a batch of two included (on three threads); their 1x1 layers split the same
 * way. */
Test(plan, winograd_channel_blocks) {
  if (strcmp(cb_kernels_isa(), "avx512") != 0)
    cr_skip_test("the channel-block split is the AVX-512 kernels'");
  cb_module *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 18, \"num_stages\": 3, "
                               "\"strides\": [1, 2, 2], \"dilations\": [1, 1, 1], "
                               "\"out_indices\": [0, 1, 2]}",
                               23);
  const int64_t one[4] = {1, 3, 112, 112}, two[4] = {2, 3, 112, 112};
  /* every 3x3 convolution but layer3.0.conv1's, at stride 2 onto a 7x7 map */
  int used = count_winograd(m, one);
  cr_assert_eq(used, 11, "Winograd convs: %d", used);
  compare_with_reference(m, one, 2);
  compare_with_reference(m, two, 3);
  cb_module_free(m);
}

/* The small-map kernel (7x7 and 14x14 maps, pixel blocks of 7, partial blocks on other
 * sizes) against the column kernel and the reference, on 1, 2 and 3 threads. */
Test(plan, small_maps_and_thread_splits) {
  cb_module *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 16, "
                               "\"stem_channels\": 16}",
                               13);
  const int64_t sizes[3][4] = {{1, 3, 224, 224}, {1, 3, 100, 76}, {2, 3, 45, 59}};
  for (int i = 0; i < 3; i++) {
    compare_with_reference(m, sizes[i], 1 + i);
    setenv("CBRICK_SMALL", "0", 1);
    compare_with_reference(m, sizes[i], 3 - i);
    unsetenv("CBRICK_SMALL");
  }
  cb_module_free(m);
}

/* A plan compiled with CBRICK_STREAM set to `stream`, run on x; its streamed convs in *count. */
static cb_tensor_list run_streamed(cb_module *m, const cb_tensor *x, int threads,
                                   const char *stream, int *count) {
  cb_error err = {0};
  setenv("CBRICK_STREAM", stream, 1);
  cb_plan *plan = compile_ok(m, x, threads);
  unsetenv("CBRICK_STREAM");
  cb_plan_stats s;
  cb_plan_get_stats(plan, &s);
  *count = s.streamed;
  cb_tensor_list outs = {0};
  cr_assert_eq(cb_plan_run(plan, x, &outs, &err), 0, "%s", err.msg);
  cb_plan_free(plan);
  return outs;
}

/* On two and three threads the bottlenecks' last convolutions on small maps (14x14, 7x7, 7x5,
 * 4x3) write their output with non-temporal stores: the same bits as with ordinary stores,
 * batch 2 too, and the reference's values. */
Test(plan, streamed_outputs_match) {
  use_kernels_or_skip("avx512");
  cb_module *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 16, "
                               "\"stem_channels\": 16}",
                               29);
  const int64_t sizes[2][4] = {{1, 3, 224, 224}, {2, 3, 100, 76}};
  for (int i = 0; i < 2; i++) {
    cb_error err = {0};
    cb_tensor *x = cb_tensor_new(CB_F32, 4, sizes[i], &err);
    cr_assert_not_null(x, "%s", err.msg);
    cb_rng rng;
    cb_rng_seed(&rng, 5);
    for (int64_t k = 0; k < cb_tensor_numel(x); k++)
      cb_f32(x)[k] = (float)cb_rng_normal(&rng);
    cb_tensor_list want = {0};
    cr_assert_eq(cb_module_forward_multi(m, x, &want, &err), 0, "%s", err.msg);
    for (int threads = 2; threads <= 3; threads++) {
      int streamed, plain;
      cb_tensor_list got = run_streamed(m, x, threads, "1", &streamed);
      cb_tensor_list ref = run_streamed(m, x, threads, "0", &plain);
      cr_assert_geq(streamed, 7, "streamed convs: %d", streamed);
      cr_assert_eq(plain, 0, "streamed convs with CBRICK_STREAM=0: %d", plain);
      for (int o = 0; o < got.n; o++) {
        expect_close(got.items[o], want.items[o], "streamed plan vs reference");
        cr_assert(!memcmp(got.items[o]->data, ref.items[o]->data, cb_tensor_nbytes(ref.items[o])),
                  "output %d on %d threads differs from the unstreamed plan's", o, threads);
      }
      cb_tensor_list_clear(&got);
      cb_tensor_list_clear(&ref);
    }
    cb_tensor_list_clear(&want);
    cb_tensor_free(x);
  }
  cb_module_free(m);
}

/* Stage outputs: the ones later layers read are computed in the arena and copied out, unless
 * larger than 8 MiB (layer1's here, 32 x 264 x 256 floats), which are written straight into
 * the caller's tensor and read from there. */
Test(plan, outputs_copied_out_or_written_in_place) {
  cb_module *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 50, \"base_channels\": 8, "
                               "\"stem_channels\": 8, \"num_stages\": 2, \"strides\": [1, 2], "
                               "\"dilations\": [1, 1], \"out_indices\": [0, 1]}",
                               23);
  const int64_t large[4] = {1, 3, 1056, 1024}, small[4] = {1, 3, 96, 64};
  compare_with_reference(m, large, 2);
  compare_with_reference(m, small, 1);
  cb_module_free(m);
}

/* The 3x3 stride-2 max pool's vector path against the reference forward, element for
 * element: NaN and -inf inputs, odd and even sides, rows shorter than a vector. */
Test(plan, max_pool_3x3_stride2) {
  cb_error err = {0};
  json_t *cfg = json_loads(
      "{\"type\": \"MaxPool2d\", \"kernel_size\": 3, \"stride\": 2, \"padding\": 1}", 0, NULL);
  cb_module *m = cb_build("POOLING_LAYERS", cfg, NULL, "pool", &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s", err.msg);
  cb_module_train(m, false);
  const int64_t shapes[4][4] = {{1, 4, 112, 112}, {2, 3, 17, 9}, {1, 2, 1, 1}, {1, 1, 6, 70}};
  cb_rng rng;
  cb_rng_seed(&rng, 3);
  for (int s = 0; s < 4; s++) {
    cb_tensor *x = cb_tensor_new(CB_F32, 4, shapes[s], &err);
    float *v = cb_f32(x);
    for (int64_t i = 0; i < cb_tensor_numel(x); i++)
      v[i] = i % 97 == 5 ? NAN : i % 89 == 7 ? -INFINITY : (float)cb_rng_normal(&rng);
    cb_tensor *want = cb_module_forward(m, x, &err);
    cr_assert_not_null(want, "%s", err.msg);
    for (int threads = 1; threads <= 2; threads++) {
      cb_tensor_list got = {0};
      cb_plan *plan = compile_ok(m, x, threads);
      cr_assert_eq(cb_plan_run(plan, x, &got, &err), 0, "%s", err.msg);
      cr_assert(cb_tensor_same_shape(got.items[0], want));
      const float *a = cb_f32(got.items[0]), *b = cb_f32(want);
      for (int64_t i = 0; i < cb_tensor_numel(want); i++)
        cr_assert(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])),
                  "shape %d, output %lld: %g, want %g", s, (long long)i, a[i], b[i]);
      cb_tensor_list_clear(&got);
      cb_plan_free(plan);
    }
    cb_tensor_free(want);
    cb_tensor_free(x);
  }
  cb_module_free(m);
}

Test(plan, refuses_train_mode) {
  cb_error err = {0};
  json_t *cfg = json_loads("{\"type\": \"ResNet\", \"depth\": 18}", 0, NULL);
  cb_module *m = build_json(cfg, "model.backbone");
  json_decref(cfg);
  const int64_t shape[4] = {1, 3, 32, 32};
  cr_assert_null(cb_plan_compile(m, shape, 1, &err));
  cr_assert(strstr(err.msg, "training mode"), "%s", err.msg);
  cb_module_free(m);
}

Test(plan, refuses_wrong_input_shape) {
  cb_error err = {0};
  json_t *cfg = json_loads("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 8, "
                           "\"stem_channels\": 8}",
                           0, NULL);
  cb_module *m = build_json(cfg, "model.backbone");
  json_decref(cfg);
  cb_module_train(m, false);
  const int64_t shape[4] = {1, 3, 32, 32};
  cb_plan *plan = cb_plan_compile(m, shape, 1, &err);
  cr_assert_not_null(plan, "%s", err.msg);
  cb_tensor *x = cb_tensor_new4(1, 3, 32, 40, &err);
  cb_tensor_list outs = {0};
  cr_assert_eq(cb_plan_run(plan, x, &outs, &err), -1);
  cr_assert(strstr(err.msg, "1x3x32x32"), "%s", err.msg);
  cr_assert_eq(outs.n, 0);
  cb_tensor_free(x);
  cb_plan_free(plan);
  cb_module_free(m);
}

/* A small ResNet-18 with random weights, compiled for a 1x3x64x64 input on `threads`. */
static cb_plan *small_r18_plan(int threads, cb_module **m, cb_tensor **x) {
  *m = random_resnet("{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 16, "
                     "\"stem_channels\": 16}",
                     3);
  cb_error err = {0};
  *x = cb_tensor_new4(1, 3, 64, 64, &err);
  cr_assert_not_null(*x, "%s", err.msg);
  return compile_ok(*m, *x, threads);
}

static void run_times(cb_plan *plan, const cb_tensor *x, int runs) {
  cb_error err = {0};
  for (int i = 0; i < runs; i++) {
    cb_tensor_list outs = {0};
    cr_assert_eq(cb_plan_run(plan, x, &outs, &err), 0, "%s", err.msg);
    cb_tensor_list_clear(&outs);
  }
}

/* The profile of `runs` runs of a small ResNet-18 on `threads` threads, as printed. */
static char *profile_text(int threads, int runs) {
  cb_module *m;
  cb_tensor *x;
  cb_plan *plan = small_r18_plan(threads, &m, &x);
  cb_plan_profile_enable(plan, true);
  run_times(plan, x, runs);
  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  cb_plan_profile_print(plan, f);
  fclose(f);
  cb_plan_free(plan);
  cb_tensor_free(x);
  cb_module_free(m);
  return text;
}

/* The last whitespace-separated fields of a line: fields[0] is the last. */
static int last_fields(const char *line, double *fields, int most) {
  char copy[256], *tokens[16], *at = NULL;
  int n = 0;
  snprintf(copy, sizeof copy, "%s", line);
  for (char *t = strtok_r(copy, " %", &at); t && n < 16; t = strtok_r(NULL, " %", &at))
    tokens[n++] = t;
  for (int i = 0; i < most && i < n; i++)
    fields[i] = atof(tokens[n - 1 - i]);
  return n;
}

/* Each node's idle time (its loops' ends, summed over the threads) is none on one thread and
 * on two at most the node's time (the last thread to finish a loop waits for nobody). */
static void check_idle(int threads) {
  char *text = profile_text(threads, 3);
  int nodes = 0;
  double total_idle = -1;
  char *at = NULL;
  for (char *line = strtok_r(text, "\n", &at); line; line = strtok_r(NULL, "\n", &at)) {
    char name[64];
    if (sscanf(line, "%63s", name) != 1 || strcmp(name, "node") == 0) continue;
    double f[4];
    if (strcmp(name, "total") == 0) {
      cr_assert_eq(last_fields(line, f, 2), 3, "total line: %s", line);
      total_idle = f[0];
      cr_assert_leq(f[0], (threads - 1) * f[1] + 1e-3, "%s", line);
      continue;
    }
    cr_assert_geq(last_fields(line, f, 4), 6, "%s", line); /* name ... ms GFLOP/s share idle */
    nodes++;
    cr_assert_geq(f[0], 0.0, "%s", line);
    cr_assert_leq(f[0], (threads - 1) * f[3] + 1e-3, "idle above (threads - 1) x time: %s", line);
  }
  cr_assert_gt(nodes, 10);
  cr_assert_geq(total_idle, 0.0, "no total line");
  if (threads == 1) cr_assert_eq(total_idle, 0.0);
  free(text);
}

Test(plan, profile_idle_one_thread) {
  check_idle(1);
}

Test(plan, profile_idle_two_threads) {
  check_idle(2);
}

/* The per-node profile: one entry per node run, named, with its output shape; a convolution
 * names its kernel; the times are per run (a plan never run reports zeros). */
Test(plan, profile_nodes) {
  cb_module *m;
  cb_tensor *x;
  cb_plan *plan = small_r18_plan(2, &m, &x);
  cb_plan_stats s;
  cb_plan_get_stats(plan, &s);
  cr_assert_eq(cb_plan_profile_nodes(plan), s.nodes);
  cb_plan_node_profile p;
  cr_assert_eq(cb_plan_profile_node(plan, 0, &p), 0);
  cr_assert_eq(p.ms, 0.0);
  cr_assert_eq(cb_plan_profile_node(plan, s.nodes, &p), -1);
  cr_assert_eq(cb_plan_profile_node(plan, -1, &p), -1);
  cb_plan_profile_enable(plan, true);
  run_times(plan, x, 3);
  int convs = 0;
  for (int i = 0; i < s.nodes; i++) {
    cb_plan_profile_node(plan, i, &p);
    cr_assert(p.name[0] && p.kind[0], "node %d", i);
    cr_assert_gt(p.ms, 0.0, "%s", p.name);
    cr_assert_leq(p.idle_ms, p.ms + 1e-3, "%s", p.name);
    bool conv = strncmp(p.kind, "conv", 4) == 0;
    cr_assert_eq(conv, p.kernel[0] != '\0', "%s (%s): kernel '%s'", p.name, p.kind, p.kernel);
    convs += conv;
    if (strcmp(p.name, "layer4.1.conv2") == 0) {
      cr_assert_str_eq(p.kind, "conv+add+relu");
      cr_assert_eq(p.shape[1], 128);
      cr_assert_eq(p.shape[2], 2);
    }
  }
  cr_assert_eq(convs, s.convs - s.merged_convs);
  cb_plan_free(plan);
  cb_tensor_free(x);
  cb_module_free(m);
}
