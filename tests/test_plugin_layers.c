#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

/* DCN, DCNv2, ContextBlock, NonLocal2d and GeneralizedAttention against PyTorch
 * (tools/fixtures/plugin_layers.py): built through the registries from each case's
 * config, loaded by dotted name, compared output and state-dict key list. */

#define FIXTURE "tests/fixtures/plugin_layers.safetensors"
#define TOL 1e-4

static cb_weights *fx;

static void setup(void) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_default(&err), 0, "%s", err.msg);
  fx = cb_safetensors_read(FIXTURE, &err);
  cr_assert_not_null(fx, "%s", err.msg);
}

static void teardown(void) {
  cb_weights_free(fx);
  fx = NULL;
  cb_plugin_unload_all();
}

TestSuite(plugin_layers, .init = setup, .fini = teardown);

static const char *meta(const char *name_case, const char *field) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s", name_case, field);
  return json_string_value(json_object_get(cb_weights_metadata(fx), key));
}

static json_t *parse(const char *text) {
  json_t *j = json_loads(text, 0, NULL);
  cr_assert_not_null(j, "bad test JSON: %s", text);
  return j;
}

static const cb_tensor *case_tensor(const char *name_case, const char *field) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s", name_case, field);
  return fixture_tensor(fx, key);
}

/* A DCN case is built as a backbone builds its conv2 (cb_build_conv with the conv
 * arguments); the others as plugins after conv2, with in_channels as a default argument. */
static cb_module *build_case(const char *name_case) {
  const char *cfg_text = meta(name_case, "cfg"), *conv = meta(name_case, "conv");
  cr_assert_not_null(cfg_text, "%s: no config in the fixture", name_case);
  json_t *cfg = parse(cfg_text);
  cb_error err = {0};
  cb_module *m;
  if (conv) {
    cb_conv_spec s;
    int bias;
    cr_assert_eq(sscanf(conv, "%d,%d,%d,%d,%d,%d,%d,%d", &s.in_channels, &s.out_channels,
                        &s.kernel_size, &s.stride, &s.padding, &s.dilation, &s.groups, &bias),
                 8);
    s.bias = bias;
    m = cb_build_conv(cfg, "layer2.0.conv2", &s, &err);
  } else {
    const cb_tensor *x = case_tensor(name_case, "x");
    json_t *extra = json_pack("{s:I}", "in_channels", (json_int_t)x->shape[1]);
    char name[64] = "";
    m = cb_build_plugin(cfg, "plugins.0.cfg", "_2", extra, name, sizeof name, &err);
    json_decref(extra);
    const char *type = json_string_value(json_object_get(cfg, "type"));
    const char *want = strcmp(type, "ContextBlock") == 0 ? "context_block_2"
                       : strcmp(type, "NonLocal2d") == 0 ? "nonlocal_block_2"
                                                         : "gen_attention_block_2";
    if (m) cr_expect_str_eq(name, want, "%s: child name", name_case);
  }
  json_decref(cfg);
  cr_assert_not_null(m, "%s: %s", name_case, err.msg);
  return m;
}

typedef struct state_walk {
  const char *name_case;
  char keys[4096];
  size_t len;
} state_walk;

/* Copies the fixture's value into each state entry and records the key list. */
static int load_entry(const char *name, cb_param *p, void *ud) {
  state_walk *w = ud;
  w->len +=
      (size_t)snprintf(w->keys + w->len, sizeof w->keys - w->len, "%s%s", w->len ? "," : "", name);
  if (strcmp(name, "local_constraint_map") == 0) return 0;
  const cb_tensor *src = case_tensor(w->name_case, name);
  cb_tensor *dst = p->tensor;
  cr_assert(src->dtype == dst->dtype && cb_tensor_numel(src) == cb_tensor_numel(dst),
            "%s.%s does not fit the module's tensor", w->name_case, name);
  memcpy(dst->data, src->data, cb_tensor_nbytes(dst));
  return 0;
}

/* The map is 84x84x42x42: its sum and a corner slice [:6, :6, :3, :3] are compared. */
static void check_local_constraint(cb_module *m, const char *name_case) {
  cb_param *p = cb_module_find_param(m, "local_constraint_map");
  if (!p) return;
  cr_assert_eq(p->tensor->dtype, CB_U8);
  cr_assert(!p->is_buffer && !p->requires_grad, "local_constraint_map: a frozen parameter");
  const uint8_t *map = p->tensor->data;
  long long sum = 0;
  for (int64_t i = 0; i < cb_tensor_numel(p->tensor); i++)
    sum += map[i];
  cr_assert_eq(sum, atoll(meta(name_case, "local_constraint_map_sum")));
  const cb_tensor *slice = case_tensor(name_case, "local_constraint_map_slice");
  const int64_t *s = p->tensor->shape;
  for (int a = 0; a < 6; a++)
    for (int b = 0; b < 6; b++)
      for (int c = 0; c < 3; c++)
        for (int d = 0; d < 3; d++)
          cr_assert_eq(map[((a * s[1] + b) * s[2] + c) * s[3] + d],
                       ((const uint8_t *)slice->data)[((a * 6 + b) * 3 + c) * 3 + d],
                       "local_constraint_map[%d][%d][%d][%d]", a, b, c, d);
}

static void run_case(const char *name_case) {
  cb_module *m = build_case(name_case);
  cb_module_train(m, false);
  state_walk w = {.name_case = name_case};
  cb_module_visit_state(m, load_entry, &w);
  cr_expect_str_eq(w.keys, meta(name_case, "keys"), "%s: state-dict keys", name_case);
  check_local_constraint(m, name_case);
  cb_error err = {0};
  const cb_tensor *want = case_tensor(name_case, "y");
  cb_tensor *got = cb_module_forward(m, case_tensor(name_case, "x"), &err);
  cr_assert_not_null(got, "%s: %s", name_case, err.msg);
  cr_assert_eq(got->ndim, want->ndim, "%s: rank", name_case);
  for (int i = 0; i < want->ndim; i++)
    cr_assert_eq(got->shape[i], want->shape[i], "%s: dim %d", name_case, i);
  const double e = rel_l2(cb_f32(got), cb_f32(want), (long)cb_tensor_numel(want));
  cr_log_info("%s: rel_l2 %.3g", name_case, e);
  cr_expect(e <= TOL, "%s: relative L2 error %g > %g", name_case, e, TOL);
  cb_tensor_free(got);
  cb_module_free(m);
}

#define CASE(name_case)                                                                            \
  Test(plugin_layers, name_case) {                                                                 \
    run_case(#name_case);                                                                          \
  }

CASE(dcn_dg1)
CASE(dcn_dg2_s2_g2)
CASE(dcn_dil2)
CASE(dcnv2_dg2_bias)
CASE(dcnv2_s2)
CASE(cb_att_add)
CASE(cb_avg_mul)
CASE(cb_att_both)
CASE(nl_embedded)
CASE(nl_embedded_noscale_sub)
CASE(nl_gaussian)
CASE(nl_gaussian_sub_bn)
CASE(nl_dot)
CASE(nl_concat)
CASE(nl_concat_sub)
CASE(ga_1111)
CASE(ga_0010)
CASE(ga_0100_square)
CASE(ga_0011)
CASE(ga_1000_kv2)
CASE(ga_1111_q2)
CASE(ga_1111_spatial)

Test(plugin_layers, every_fixture_case_is_tested) {
  /* Keep this list and the CASE lines above in step with the generator. */
  const char *cases = json_string_value(json_object_get(cb_weights_metadata(fx), "cases"));
  cr_assert_not_null(cases);
  cr_assert_str_eq(cases,
                   "dcn_dg1,dcn_dg2_s2_g2,dcn_dil2,dcnv2_dg2_bias,dcnv2_s2,cb_att_add,cb_avg_mul,"
                   "cb_att_both,nl_embedded,nl_embedded_noscale_sub,nl_gaussian,"
                   "nl_gaussian_sub_bn,nl_dot,nl_concat,nl_concat_sub,ga_1111,ga_0010,"
                   "ga_0100_square,ga_0011,ga_1000_kv2,ga_1111_q2,ga_1111_spatial");
}

Test(plugin_layers, dcn_offset_conv_starts_at_zero) {
  const cb_conv_spec s = {8, 8, 3, 2, 1, 1, 1, false};
  json_t *cfg = parse("{\"type\": \"DCNv2\", \"deform_groups\": 2}");
  cb_error err = {0};
  cb_module *m = cb_build_conv(cfg, "conv2", &s, &err);
  json_decref(cfg);
  cr_assert_not_null(m, "%s", err.msg);
  cr_assert_str_eq(cb_module_kind(m), "ModulatedDeformConv2dPack");
  cr_assert_null(cb_module_find_param(m, "bias"), "bias=False gives no bias");
  cb_param *w = cb_module_find_param(m, "conv_offset.weight");
  cr_assert_not_null(w);
  cr_assert_eq(w->tensor->shape[0], 2 * 3 * 9);
  for (int64_t i = 0; i < cb_tensor_numel(w->tensor); i++)
    cr_assert_eq(cb_f32(w->tensor)[i], 0);
  cr_assert_not_null(cb_module_find_param(m, "conv_offset.bias"));
  cb_module_free(m);
}

/* The error for a plugin (or conv) config, which must name key and found value. */
static void expect_error(const char *registry, const char *text, int in_channels, const char *want1,
                         const char *want2) {
  json_t *cfg = parse(text);
  json_t *extra = json_pack("{s:i}", "in_channels", in_channels);
  cb_error err = {0};
  char name[64];
  cb_module *m =
      strcmp(registry, "CONV_LAYERS") == 0
          ? cb_build_conv(cfg, "conv2", &(cb_conv_spec){in_channels, 8, 3, 1, 1, 1, 1, true}, &err)
          : cb_build_plugin(cfg, "plugins.0.cfg", "", extra, name, sizeof name, &err);
  json_decref(cfg);
  json_decref(extra);
  cr_assert_null(m, "%s built, expected an error", text);
  cr_assert(strstr(err.msg, want1), "%s: message '%s' lacks '%s'", text, err.msg, want1);
  cr_assert(strstr(err.msg, want2), "%s: message '%s' lacks '%s'", text, err.msg, want2);
}

Test(plugin_layers, config_errors) {
  expect_error("PLUGIN_LAYERS",
               "{\"type\": \"GeneralizedAttention\", \"attention_type\": \"1121\"}", 16,
               "attention_type", "'1121'");
  expect_error("PLUGIN_LAYERS", "{\"type\": \"GeneralizedAttention\", \"attention_type\": \"111\"}",
               16, "attention_type", "'111'");
  expect_error("PLUGIN_LAYERS",
               "{\"type\": \"GeneralizedAttention\", \"position_embedding_dim\": 10}", 16,
               "position_embedding_dim", "10");
  expect_error("PLUGIN_LAYERS", "{\"type\": \"GeneralizedAttention\"}", 18,
               "position_embedding_dim", "18");
  expect_error("PLUGIN_LAYERS", "{\"type\": \"GeneralizedAttention\", \"spatial_range\": 2}", 64,
               "spatial_range", "in_channels=64");
  expect_error("PLUGIN_LAYERS", "{\"type\": \"NonLocal2d\", \"mode\": \"embeded_gaussian\"}", 16,
               "plugins.0.cfg.mode", "did you mean 'embedded_gaussian'");
  expect_error("PLUGIN_LAYERS", "{\"type\": \"NonLocal2d\", \"reduction\": 0}", 16, "reduction",
               "0");
  expect_error("PLUGIN_LAYERS", "{\"type\": \"ContextBlock\"}", 16, "ratio", "required");
  expect_error("PLUGIN_LAYERS",
               "{\"type\": \"ContextBlock\", \"ratio\": 0.25, \"pooling_type\": "
               "\"max\"}",
               16, "pooling_type", "'max'");
  expect_error("PLUGIN_LAYERS",
               "{\"type\": \"ContextBlock\", \"ratio\": 0.25, \"fusion_types\": \"channel_add\"}",
               16, "fusion_types", "a list");
  expect_error("PLUGIN_LAYERS",
               "{\"type\": \"ContextBlock\", \"ratio\": 0.25, \"fusion_types\": [\"channel_sum\"]}",
               16, "fusion_types", "'channel_sum'");
  expect_error("CONV_LAYERS", "{\"type\": \"DCN\"}", 16, "bias", "true");
  expect_error("CONV_LAYERS", "{\"type\": \"DCNv2\", \"deform_groups\": 3}", 16, "deform_groups",
               "deform_groups=3");
  expect_error("CONV_LAYERS", "{\"type\": \"DCNv2\", \"deform_grups\": 2}", 16, "deform_grups",
               "conv2");
}

/* '0100' multiplies the transposed query map by the y features (mmcv), so a
 * non-square map is refused at forward time with the sizes. */
Test(plugin_layers, transposed_query_needs_square_map) {
  json_t *cfg = parse("{\"type\": \"GeneralizedAttention\", \"num_heads\": 4, "
                      "\"attention_type\": \"0100\", \"position_embedding_dim\": 8}");
  json_t *extra = json_pack("{s:i}", "in_channels", 16);
  cb_error err = {0};
  char name[64];
  cb_module *m = cb_build_plugin(cfg, "plugins.0.cfg", "", extra, name, sizeof name, &err);
  json_decref(cfg);
  json_decref(extra);
  cr_assert_not_null(m, "%s", err.msg);
  cb_tensor *x = cb_tensor_new4(1, 16, 8, 6, &err);
  cb_tensor *y = cb_module_forward(m, x, &err);
  cr_assert_null(y, "a non-square map must be refused");
  cr_assert(strstr(err.msg, "square") && strstr(err.msg, "8 x 6"), "message: %s", err.msg);
  cb_tensor_free(x);
  x = cb_tensor_new4(1, 16, 6, 6, &err);
  y = cb_module_forward(m, x, &err);
  cr_assert_not_null(y, "a square map works: %s", err.msg);
  cb_tensor_free(y);
  cb_tensor_free(x);
  cb_module_free(m);
}
