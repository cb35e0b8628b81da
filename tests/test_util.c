#include <criterion/criterion.h>
#include <math.h>

#include "test_util.h"

double rel_l2(const float *got, const float *want, long n) {
  double diff = 0, norm = 0;
  for (long i = 0; i < n; i++) {
    double d = (double)got[i] - (double)want[i];
    diff += d * d;
    norm += (double)want[i] * want[i];
  }
  return norm > 0 ? sqrt(diff / norm) : sqrt(diff);
}

cb_tensor *fixture_tensor(const cb_weights *w, const char *name) {
  cr_assert_not_null(w, "fixture not loaded (looking for %s)", name);
  const cb_tensor *t = cb_weights_get(w, name);
  cr_assert_not_null(t, "fixture tensor %s is missing", name);
  return (cb_tensor *)t;
}

bool fixture_is_expectation(const char *name) {
  return strcmp(name, "input") == 0 || strncmp(name, "out.", 4) == 0 ||
         strncmp(name, "mmseg.", 6) == 0 || strncmp(name, "state.", 6) == 0;
}

cb_weights *fixture_model_weights(const cb_weights *w) {
  cb_error err = {0};
  cb_weights *out = cb_weights_new(&err);
  cr_assert_not_null(out, "%s", err.msg);
  for (int i = 0; i < cb_weights_count(w); i++) {
    const char *name = cb_weights_name(w, i);
    if (fixture_is_expectation(name)) continue;
    cb_tensor *t = cb_tensor_clone(cb_weights_tensor(w, i), &err);
    cr_assert_not_null(t, "%s", err.msg);
    cr_assert_eq(cb_weights_add(out, name, t, &err), 0, "%s", err.msg);
  }
  return out;
}

void load_builtin_plugins(void) {
  cb_error err = {0};
  cb_set_quiet(1);
  cr_assert_eq(cb_plugin_load_default(&err), 0, "%s", err.msg);
}

void unload_plugins(void) {
  cb_plugin_unload_all();
}

const char *test_build_dir(void) {
  const char *build = getenv("CBRICK_BUILD");
  return build && *build ? build : "build";
}

const char *test_plugin_path(const char *file) {
  static char paths[4][512];
  static int next;
  char *p = paths[next++ % 4];
  snprintf(p, 512, "%s/tests/plugins/%s", test_build_dir(), file);
  return p;
}

void load_test_plugin(const char *file) {
  cb_error err = {0};
  cr_assert_eq(cb_plugin_load_file(test_plugin_path(file), &err), 0, "%s", err.msg);
}

cb_module *build_backbone_text(const char *text, cb_error *err) {
  json_error_t jerr;
  json_t *cfg = json_loads(text, 0, &jerr);
  cr_assert_not_null(cfg, "bad test JSON %s: %s", text, jerr.text);
  cb_module *m = cb_build("BACKBONES", cfg, NULL, "model.backbone", err);
  json_decref(cfg);
  return m;
}

cb_module *build_backbone_ok(const char *text) {
  cb_error err = {0};
  cb_module *m = build_backbone_text(text, &err);
  cr_assert_not_null(m, "%s: %s", text, err.msg);
  return m;
}

void expect_backbone_error(const char *text, const char *needle) {
  cb_error err = {0};
  cb_module *m = build_backbone_text(text, &err);
  cr_assert_null(m, "built %s, expected an error with '%s'", text, needle);
  cr_assert(strstr(err.msg, needle), "error for %s:\n  %s\nlacks '%s'", text, err.msg, needle);
}

static bool ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && strcmp(s + n - t, tail) == 0;
}

static int randomize_norm(const char *name, cb_param *p, void *ud) {
  cb_rng *rng = ud;
  if (p->tensor->dtype != CB_F32 || strstr(name, "conv") || strstr(name, "downsample.0")) return 0;
  if (ends_with(name, ".running_var") || ends_with(name, ".weight"))
    cb_init_uniform(p->tensor, 0.5, 1.5, rng);
  else if (ends_with(name, ".running_mean") || ends_with(name, ".bias"))
    cb_init_uniform(p->tensor, -0.2, 0.2, rng);
  return 0;
}

void randomize_norms(cb_module *m, cb_rng *rng) {
  cb_module_visit_state(m, randomize_norm, rng);
}

void use_kernels_or_skip(const char *isa) {
  setenv("CBRICK_ISA", isa, 1);
  if (strcmp(cb_kernels_isa(), isa) != 0)
    cr_skip_test("the processor has no %s kernels (%s here)", isa, cb_kernels_isa());
}
