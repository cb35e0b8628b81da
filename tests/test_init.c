/* Weight initialisation: the generator, the initialisers, init_cfg and ResNet's defaults. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(init, .init = load_builtin_plugins, .fini = unload_plugins);

static void stats(const cb_tensor *t, double *mean, double *std) {
  const float *d = cb_f32(t);
  int64_t n = cb_tensor_numel(t);
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++)
    s += d[i];
  *mean = s / (double)n;
  for (int64_t i = 0; i < n; i++)
    s2 += (d[i] - *mean) * (d[i] - *mean);
  *std = sqrt(s2 / (double)n);
}

static cb_tensor *tensor4(int64_t a, int64_t b, int64_t c, int64_t d) {
  cb_error err = {0};
  cb_tensor *t = cb_tensor_new4(a, b, c, d, &err);
  cr_assert_not_null(t, "%s", err.msg);
  return t;
}

Test(init, rng_is_reproducible) {
  cb_rng a, b, c;
  cb_rng_seed(&a, 42);
  cb_rng_seed(&b, 42);
  cb_rng_seed(&c, 43);
  int same = 0;
  for (int i = 0; i < 100; i++) {
    uint32_t x = cb_rng_u32(&a), y = cb_rng_u32(&b), z = cb_rng_u32(&c);
    cr_assert_eq(x, y);
    same += x == z;
  }
  cr_assert_lt(same, 3);
  for (int i = 0; i < 1000; i++) {
    double u = cb_rng_uniform(&a);
    cr_assert(u >= 0.0 && u < 1.0);
  }
}

Test(init, normal_and_uniform_moments) {
  cb_rng rng;
  cb_rng_seed(&rng, 1);
  cb_tensor *t = tensor4(1, 1, 400, 500);
  double mean, std;
  cb_init_normal(t, 2.0, 0.5, &rng);
  stats(t, &mean, &std);
  cr_assert(fabs(mean - 2.0) < 0.01 && fabs(std - 0.5) < 0.01, "%g %g", mean, std);
  cb_init_uniform(t, -1.0, 3.0, &rng);
  stats(t, &mean, &std);
  cr_assert(fabs(mean - 1.0) < 0.02 && fabs(std - 4.0 / sqrt(12.0)) < 0.02, "%g %g", mean, std);
  const float *d = cb_f32(t);
  for (int64_t i = 0; i < cb_tensor_numel(t); i++)
    cr_assert(d[i] >= -1.0f && d[i] <= 3.0f);
  cb_tensor_free(t);
}

Test(init, kaiming_and_xavier_std) {
  cb_rng rng;
  cb_rng_seed(&rng, 2);
  cb_tensor *t = tensor4(256, 128, 3, 3);
  double mean, std;
  cb_init_kaiming(t, 0, true, "relu", false, &rng);
  stats(t, &mean, &std);
  double want = sqrt(2.0 / (256 * 9));
  cr_assert(fabs(std / want - 1) < 0.02 && fabs(mean) < 0.01 * want, "%g vs %g", std, want);
  cb_init_kaiming(t, 0, false, "relu", true, &rng);
  stats(t, &mean, &std);
  want = sqrt(2.0 / (128 * 9));
  cr_assert(fabs(std / want - 1) < 0.02, "fan_in uniform: %g vs %g", std, want);
  cb_init_xavier(t, 2.0, false, &rng);
  stats(t, &mean, &std);
  want = 2.0 * sqrt(2.0 / (128 * 9 + 256 * 9));
  cr_assert(fabs(std / want - 1) < 0.02, "xavier: %g vs %g", std, want);
  cb_init_constant(t, 0.25f);
  stats(t, &mean, &std);
  cr_assert(mean == 0.25 && std == 0.0);
  cb_tensor_free(t);
}

static cb_module *resnet(const char *extra) {
  char text[1024];
  snprintf(text, sizeof text,
           "{\"type\": \"ResNet\", \"depth\": 18, \"base_channels\": 16, \"stem_channels\": 16%s}",
           extra);
  json_t *cfg = json_loads(text, 0, NULL);
  cr_assert_not_null(cfg, "bad JSON %s", text);
  cb_error err = {0};
  cb_module *m = cb_build("BACKBONES", cfg, NULL, "model.backbone", &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s", err.msg);
  return m;
}

static cb_tensor *tensor(cb_module *m, const char *dotted) {
  cb_param *p = cb_module_find_param(m, dotted);
  cr_assert_not_null(p, "no tensor %s", dotted);
  return p->tensor;
}

static bool all_equal(const cb_tensor *t, float v) {
  for (int64_t i = 0; i < cb_tensor_numel(t); i++)
    if (cb_f32(t)[i] != v) return false;
  return true;
}

static void init(cb_module *m, uint64_t seed) {
  cb_rng rng;
  cb_error err = {0};
  cb_rng_seed(&rng, seed);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), 0, "%s", err.msg);
}

Test(init, resnet_default_init) {
  cb_module *m = resnet("");
  init(m, 0);
  double mean, std;
  stats(tensor(m, "layer4.0.conv1.weight"), &mean, &std); /* [128, 64, 3, 3], fan_out 1152 */
  double want = sqrt(2.0 / (128 * 9));
  cr_assert(fabs(std / want - 1) < 0.05, "Kaiming fan_out: %g vs %g", std, want);
  cr_assert(all_equal(tensor(m, "bn1.weight"), 1) && all_equal(tensor(m, "bn1.bias"), 0));
  cr_assert(all_equal(tensor(m, "layer3.0.bn1.weight"), 1));
  cr_assert(all_equal(tensor(m, "layer3.0.downsample.1.weight"), 1));
  cr_assert(all_equal(tensor(m, "layer3.0.bn2.weight"), 0), "zero_init_residual");
  cr_assert(all_equal(tensor(m, "layer1.1.bn2.bias"), 0));
  cr_assert(all_equal(tensor(m, "layer1.1.bn2.running_var"), 1), "buffers are untouched");
  cb_module_free(m);

  m = resnet(", \"zero_init_residual\": false");
  init(m, 0);
  cr_assert(all_equal(tensor(m, "layer3.0.bn2.weight"), 1));
  cb_module_free(m);
}

Test(init, zero_init_residual_bottleneck_and_gn) {
  cb_module *m = resnet(", \"depth\": 50, \"norm_cfg\": {\"type\": \"GN\", \"num_groups\": 4}");
  init(m, 0);
  cr_assert(all_equal(tensor(m, "layer2.1.gn3.weight"), 0));
  cr_assert(all_equal(tensor(m, "layer2.1.gn2.weight"), 1));
  cr_assert(all_equal(tensor(m, "gn1.weight"), 1), "GroupNorm gets Constant 1");
  cb_module_free(m);
}

Test(init, same_seed_same_weights) {
  cb_module *a = resnet(""), *b = resnet(""), *c = resnet("");
  init(a, 7);
  init(b, 7);
  init(c, 8);
  const cb_tensor *ta = tensor(a, "layer2.1.conv2.weight"),
                  *tb = tensor(b, "layer2.1.conv2.weight");
  const cb_tensor *tc = tensor(c, "layer2.1.conv2.weight");
  size_t n = cb_tensor_nbytes(ta);
  cr_assert(memcmp(ta->data, tb->data, n) == 0);
  cr_assert(memcmp(ta->data, tc->data, n) != 0);
  cb_module_free(a);
  cb_module_free(b);
  cb_module_free(c);
}

Test(init, init_cfg_layer_and_override) {
  cb_module *m = resnet(", \"init_cfg\": [{\"type\": \"Constant\", \"val\": 0.5, \"layer\": "
                        "\"Conv2d\", \"override\": {\"name\": \"conv1\", \"type\": \"Constant\", "
                        "\"val\": 2}}, {\"type\": \"Constant\", \"val\": 3, \"bias_prob\": 0.01, "
                        "\"layer\": [\"_BatchNorm\"], \"override\": [{\"name\": \"layer4\"}]}]");
  init(m, 0);
  cr_assert(all_equal(tensor(m, "conv1.weight"), 2.0f));
  cr_assert(all_equal(tensor(m, "layer1.0.conv1.weight"), 0.5f));
  cr_assert(all_equal(tensor(m, "bn1.weight"), 3.0f));
  float bias = (float)-log(0.99 / 0.01);
  cr_assert(fabsf(cb_f32(tensor(m, "bn1.bias"))[0] - bias) < 1e-6f);
  /* the name-only override reuses Constant 3 on the whole layer4, convs included */
  cr_assert(all_equal(tensor(m, "layer4.1.conv2.weight"), 3.0f));
  cr_assert(all_equal(tensor(m, "layer3.1.bn2.weight"), 3.0f), "no zero_init with init_cfg");
  cb_module_free(m);
}

Test(init, init_cfg_errors) {
  struct {
    const char *cfg, *needle;
  } cases[] = {
      {"{\"type\": \"Kaimin\"}", "init_cfg.type: unknown initializer 'Kaimin' (did you mean "
                                 "'Kaiming'?)"},
      {"{\"type\": \"Constant\", \"layer\": \"Conv2d\"}", "init_cfg.val: required by Constant"},
      {"{\"type\": \"Kaiming\", \"mode\": \"fan_avg\"}", "mode: expected 'fan_in' or 'fan_out'"},
      {"{\"type\": \"Normal\", \"sdt\": 1}", "init_cfg.sdt: unknown key"},
      {"{\"type\": \"Normal\", \"override\": {\"name\": \"layer9\"}}",
       "init_cfg.override.name: the module has no child 'layer9'"},
      {"{\"type\": \"Normal\", \"override\": {\"name\": \"conv1\", \"std\": 2}}",
       "init_cfg.override: `override` needs a \"type\""},
      {"{\"type\": \"Pretrained\", \"checkpoint\": \"r18.pth\"}", "init_cfg.checkpoint: r18.pth"},
      {"{\"type\": \"Pretrained\", \"checkpoint\": \"tests/fixtures/pth/evil_os_system.pth\"}",
       "refusing"},
      {"{\"type\": \"Pretrained\", \"checkpoint\": \"tests/fixtures/pth/mmseg.pth\", "
       "\"prefix\": \"neck\"}",
       "init_cfg.prefix: no key of the checkpoint starts with 'neck.'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    json_t *cfg = json_loads(cases[i].cfg, 0, NULL);
    cb_module *m = resnet("");
    cb_rng rng;
    cb_error err = {0};
    cb_rng_seed(&rng, 0);
    cr_assert_eq(cb_init_apply(m, cfg, "init_cfg", &rng, &err), -1, "%s", cases[i].cfg);
    cr_assert(strstr(err.msg, cases[i].needle), "%s:\n  %s\nlacks '%s'", cases[i].cfg, err.msg,
              cases[i].needle);
    cb_module_free(m);
    json_decref(cfg);
  }
}

static void write_checkpoint(cb_module *m, const char *path, const char *prefix) {
  cb_error err = {0};
  cb_weights *sd = cb_module_state_dict(m, &err);
  cr_assert_not_null(sd, "%s", err.msg);
  cb_weights *out = cb_weights_new(&err);
  for (int i = 0; i < cb_weights_count(sd); i++) {
    char name[256];
    snprintf(name, sizeof name, "%s%s", prefix, cb_weights_name(sd, i));
    cb_weights_add(out, name, cb_tensor_clone(cb_weights_tensor(sd, i), &err), &err);
  }
  cr_assert_eq(cb_safetensors_write(path, out, NULL, &err), 0, "%s", err.msg);
  cb_weights_free(sd);
  cb_weights_free(out);
}

Test(init, pretrained_checkpoint) {
  char path[] = "/tmp/cbrick-init-XXXXXX.safetensors";
  int fd = mkstemps(path, 12);
  cr_assert_geq(fd, 0);
  close(fd);
  cb_module *src = resnet("");
  init(src, 11);
  write_checkpoint(src, path, "backbone.");

  char extra[512];
  snprintf(extra, sizeof extra,
           ", \"init_cfg\": {\"type\": \"Pretrained\", \"checkpoint\": \"%s\", \"prefix\": "
           "\"backbone\"}",
           path);
  cb_module *m = resnet(extra);
  init(m, 99);
  const cb_tensor *a = tensor(src, "layer3.1.conv2.weight"),
                  *b = tensor(m, "layer3.1.conv2.weight");
  cr_assert(memcmp(a->data, b->data, cb_tensor_nbytes(a)) == 0);
  cr_assert(all_equal(tensor(m, "layer3.1.bn2.weight"), 0), "the checkpoint's zero_init values");
  cb_module_free(m);

  snprintf(extra, sizeof extra,
           ", \"init_cfg\": {\"type\": \"Pretrained\", \"checkpoint\": "
           "\"%s\", \"prefix\": \"head\"}",
           path);
  m = resnet(extra);
  cb_rng rng;
  cb_error err = {0};
  cb_rng_seed(&rng, 0);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), -1);
  cr_assert(strstr(err.msg, "no key of the checkpoint starts with 'head.'"), "%s", err.msg);
  cb_module_free(m);

  write_checkpoint(src, path, "");
  snprintf(extra, sizeof extra, ", \"pretrained\": \"%s\"", path);
  m = resnet(extra);
  init(m, 5);
  b = tensor(m, "layer3.1.conv2.weight");
  cr_assert(memcmp(a->data, b->data, cb_tensor_nbytes(a)) == 0, "pretrained string loads");
  cb_module_free(m);
  cb_module_free(src);
  remove(path);
}

/* A ResNet-18 whose init_cfg is Pretrained from path with the given extra keys. */
static cb_module *pretrained(const char *path, const char *keys) {
  char extra[768];
  snprintf(extra, sizeof extra,
           ", \"init_cfg\": {\"type\": \"Pretrained\", \"checkpoint\": \"%s\"%s}", path, keys);
  return resnet(extra);
}

static bool same_tensor(cb_module *a, cb_module *b, const char *name) {
  const cb_tensor *x = tensor(a, name), *y = tensor(b, name);
  return memcmp(x->data, y->data, cb_tensor_nbytes(x)) == 0;
}

Test(init, pretrained_revise_keys) {
  char path[] = "/tmp/cbrick-init-XXXXXX.safetensors";
  int fd = mkstemps(path, 12);
  cr_assert_geq(fd, 0);
  close(fd);
  cb_module *src = resnet("");
  init(src, 11);

  /* mmengine's example rules strip both wrappers. */
  write_checkpoint(src, path, "module.backbone.");
  cb_module *m = pretrained(path, ", \"revise_keys\": [[\"^module\\\\.\", \"\"], "
                                  "[\"^backbone\\\\.\", \"\"]]");
  init(m, 99);
  cr_assert(same_tensor(src, m, "layer3.1.conv2.weight"));
  cr_assert(same_tensor(src, m, "bn1.running_var"));
  cb_module_free(m);

  /* The default rule strips `module.` before the prefix is selected. */
  m = pretrained(path, ", \"prefix\": \"backbone\"");
  init(m, 99);
  cr_assert(same_tensor(src, m, "layer1.0.conv1.weight"));
  cb_module_free(m);

  /* An empty list revises nothing, so `module.backbone.` keys do not match the prefix. */
  m = pretrained(path, ", \"prefix\": \"backbone\", \"revise_keys\": []");
  cb_rng rng;
  cb_error err = {0};
  cb_rng_seed(&rng, 0);
  cr_assert_eq(cb_module_init_weights(m, &rng, &err), -1);
  cr_assert(strstr(err.msg, "no key of the checkpoint starts with 'backbone.' (after revise_keys)"),
            "%s", err.msg);
  cb_module_free(m);

  /* Back-references, then the prefix: enc.X -> backbone.X -> X. */
  write_checkpoint(src, path, "enc.");
  m = pretrained(path, ", \"prefix\": \"backbone\", \"revise_keys\": "
                       "[[\"^enc\\\\.(\\\\w+)\", \"backbone.\\\\1\"]]");
  init(m, 99);
  cr_assert(same_tensor(src, m, "layer4.1.bn2.weight"));
  cr_assert(same_tensor(src, m, "conv1.weight"));
  cb_module_free(m);
  cb_module_free(src);
  remove(path);
}

Test(init, pretrained_revise_keys_errors) {
  const char *ckpt = "tests/fixtures/pth/mmseg.pth";
  struct {
    const char *keys, *needle;
  } cases[] = {
      {", \"revise_keys\": {\"a\": \"b\"}",
       "init_cfg.revise_keys: expected a list of [pattern, replacement] pairs"},
      {", \"revise_keys\": [[\"a\", \"b\"], [\"c\"]]",
       "init_cfg.revise_keys[1]: expected [pattern, replacement]"},
      {", \"revise_keys\": [[\"a\", 1]]", "init_cfg.revise_keys[0][1]: expected a string"},
      {", \"revise_keys\": [[\"^module\\\\.\", \"\"], [\"(\", \"\"]]",
       "init_cfg.revise_keys[1][0]: invalid regular expression '(': "},
      {", \"revise_keys\": [[\"x\", \"\\\\1\"]]",
       "init_cfg.revise_keys[0][1]: invalid replacement '\\1': invalid group reference 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    cb_module *m = pretrained(ckpt, cases[i].keys);
    cb_rng rng;
    cb_error err = {0};
    cb_rng_seed(&rng, 0);
    cr_assert_eq(cb_module_init_weights(m, &rng, &err), -1, "%s", cases[i].keys);
    cr_assert(strstr(err.msg, cases[i].needle), "%s:\n  %s\nlacks '%s'", cases[i].keys, err.msg,
              cases[i].needle);
    cb_module_free(m);
  }
}
