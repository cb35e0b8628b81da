#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbrick.h>

#define DATA "tests/data/config/"

static json_t *load(const char *name) {
  cb_error err = {0};
  json_t *cfg = cb_config_load(name, &err);
  cr_assert_not_null(cfg, "loading %s failed: %s", name, err.msg);
  cr_assert_eq(err.failed, 0);
  return cfg;
}

/* The error message of a load that must fail (a static copy). */
static const char *load_error(const char *name) {
  static cb_error err;
  memset(&err, 0, sizeof err);
  json_t *cfg = cb_config_load(name, &err);
  cr_assert_null(cfg, "loading %s should fail", name);
  cr_assert(err.failed);
  return err.msg;
}

static json_t *parse(const char *text) {
  json_t *j = json_loads(text, 0, NULL);
  cr_assert_not_null(j, "bad test JSON: %s", text);
  return j;
}

static void assert_json(json_t *got, const char *expected) {
  json_t *want = parse(expected);
  char *text = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
  cr_assert(json_equal(got, want), "got %s, expected %s", text ? text : "nothing", expected);
  free(text);
  json_decref(want);
}

static void assert_at(json_t *cfg, const char *dotted, const char *expected) {
  json_t *v = cb_config_get(cfg, dotted);
  cr_assert_not_null(v, "%s is missing", dotted);
  json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
  cr_assert_not_null(want, "bad test JSON: %s", expected);
  char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
  cr_assert(json_equal(v, want), "%s is %s, expected %s", dotted, text, expected);
  free(text);
  json_decref(want);
}

static void assert_contains(const char *msg, const char *part) {
  cr_assert(strstr(msg, part), "message \"%s\" lacks \"%s\"", msg, part);
}

static bool has_key_anywhere(json_t *v, const char *name) {
  if (json_is_object(v)) {
    if (json_object_get(v, name)) return true;
    const char *key;
    json_t *value;
    json_object_foreach(v, key, value) {
      if (has_key_anywhere(value, name)) return true;
    }
  } else if (json_is_array(v)) {
    size_t i;
    json_t *value;
    json_array_foreach(v, i, value) {
      if (has_key_anywhere(value, name)) return true;
    }
  }
  return false;
}

/* ---- inheritance ---- */

Test(config, plain_file_loads_unchanged) {
  json_t *cfg = load(DATA "base_runtime.json");
  assert_json(cfg, "{\"seed\": 0, \"work_dir\": \"runs\"}");
  json_decref(cfg);
}

Test(config, base_as_string) {
  json_t *cfg = load(DATA "base_string.json");
  assert_at(cfg, "model.depth", "101");
  assert_at(cfg, "model.type", "\"ResNet\"");
  assert_at(cfg, "model.norm_cfg", "{\"type\": \"BN\", \"requires_grad\": true}");
  cr_assert_null(json_object_get(cfg, "_base_"));
  json_decref(cfg);
}

Test(config, base_as_list_merges_in_order) {
  json_t *cfg = load(DATA "base_list.json");
  assert_at(cfg, "seed", "42");
  assert_at(cfg, "work_dir", "\"runs\"");
  assert_at(cfg, "model.depth", "50");
  cr_assert_eq(json_object_size(cfg), 3);
  json_decref(cfg);
}

Test(config, nested_merge_and_list_replace_through_two_levels) {
  json_t *cfg = load(DATA "nested/child.json");
  assert_json(cfg, "{\"model\": {\"type\": \"ResNet\", \"depth\": 101,"
                   " \"norm_cfg\": {\"type\": \"GN\", \"requires_grad\": true, \"num_groups\": 32},"
                   " \"out_indices\": [3],"
                   " \"stages\": [{\"name\": \"s1\", \"blocks\": 3},"
                   " {\"name\": \"s2\", \"blocks\": 4}]}}");
  json_decref(cfg);
}

Test(config, delete_replaces_base_dict) {
  json_t *cfg = load(DATA "delete.json");
  assert_at(cfg, "model.norm_cfg", "{\"type\": \"SyncBN\"}");
  assert_at(cfg, "model.depth", "50");
  json_decref(cfg);
}

Test(config, delete_key_never_survives) {
  json_t *cfg = load(DATA "delete.json");
  cr_assert_not(has_key_anywhere(cfg, "_delete_"));
  /* "plugin" and "extra" are not in the base: _delete_ is stripped there too, at every depth. */
  assert_at(cfg, "model.plugin",
            "{\"type\": \"ContextBlock\", \"inner\": {\"items\": [{\"ratio\": 0.25}]}}");
  assert_at(cfg, "extra", "{\"on\": true}");
  json_decref(cfg);
}

Test(config, delete_over_scalar_replaces_it) {
  json_t *cfg = load(DATA "delete_over_scalar.json");
  assert_at(cfg, "model.depth", "{\"value\": 18}");
  json_decref(cfg);
}

Test(config, delete_at_top_level_drops_the_bases) {
  json_t *cfg = load(DATA "top_delete.json");
  assert_json(cfg, "{\"only\": 1}");
  json_decref(cfg);
}

Test(config, delete_flag_must_be_boolean) {
  const char *msg = load_error(DATA "delete_bad_flag.json");
  assert_contains(msg, DATA "delete_bad_flag.json: ");
  assert_contains(msg, "model.norm_cfg._delete_");
  assert_contains(msg, "expected true or false, found a string");
}

Test(config, dict_over_scalar_suggests_delete) {
  const char *msg = load_error(DATA "dict_over_scalar.json");
  cr_assert_eq(strncmp(msg, DATA "dict_over_scalar.json: ", strlen(DATA) + 23), 0, "%s", msg);
  assert_contains(msg, "model.depth");
  assert_contains(msg, "an integer");
  assert_contains(msg, "\"_delete_\": true");
}

Test(config, duplicate_key_among_bases) {
  const char *msg = load_error(DATA "dup_child.json");
  assert_contains(msg, DATA "dup_child.json: ");
  assert_contains(msg, "Duplicate key is not allowed among bases");
  assert_contains(msg, "\"model\"");
  assert_contains(msg, DATA "base_model.json");
  assert_contains(msg, DATA "dup_model.json");
}

Test(config, include_cycle_lists_the_chain) {
  const char *msg = load_error(DATA "cycle_a.json");
  assert_contains(msg, DATA "cycle_b.json: ");
  assert_contains(msg, "cycle");
  assert_contains(msg, DATA "cycle_a.json -> " DATA "cycle_b.json -> " DATA "cycle_a.json");
}

Test(config, self_include_is_a_cycle) {
  const char *msg = load_error(DATA "self_cycle.json");
  assert_contains(msg, "cycle");
  assert_contains(msg, DATA "self_cycle.json -> " DATA "./self_cycle.json");
}

Test(config, missing_base_names_both_files) {
  const char *msg = load_error(DATA "missing_base.json");
  cr_assert_eq(strncmp(msg, DATA "missing_base.json: ", strlen(DATA "missing_base.json: ")), 0,
               "%s", msg);
  assert_contains(msg, DATA "no_such_base.json");
}

Test(config, base_must_be_string_or_list) {
  const char *msg = load_error(DATA "bad_base_type.json");
  assert_contains(msg, DATA "bad_base_type.json: _base_");
  assert_contains(msg, "found an integer");
}

/* ---- reading and parsing ---- */

Test(config, bad_json_reports_line_and_column) {
  const char *msg = load_error(DATA "bad_json.json");
  cr_assert_eq(strncmp(msg, DATA "bad_json.json:4:17: ", strlen(DATA "bad_json.json:4:17: ")), 0,
               "%s", msg);
  assert_contains(msg, "expected near ','");
}

Test(config, bad_json_in_a_base_names_the_base) {
  const char *msg = load_error(DATA "bad_base_json.json");
  cr_assert_eq(strncmp(msg, DATA "bad_json.json:4:17: ", strlen(DATA "bad_json.json:4:17: ")), 0,
               "%s", msg);
}

Test(config, bad_json_column_counts_the_file_as_written) {
  /* {{fileDirname}} expands to a long path earlier on the line; the column still counts
   * the characters of the file itself. */
  const char *msg = load_error(DATA "bad_json_after_subst.json");
  assert_contains(msg, DATA "bad_json_after_subst.json:2:39: ");
}

Test(config, duplicate_json_key_is_refused) {
  const char *msg = load_error(DATA "duplicate_key.json");
  assert_contains(msg, DATA "duplicate_key.json:2:4: ");
  assert_contains(msg, "duplicate object key");
}

Test(config, top_level_must_be_an_object) {
  const char *msg = load_error(DATA "not_object.json");
  assert_contains(msg, DATA "not_object.json: ");
  assert_contains(msg, "found a list");
}

Test(config, missing_file) {
  const char *msg = load_error(DATA "no_such_file.json");
  assert_contains(msg, DATA "no_such_file.json: ");
  assert_contains(msg, "No such file");
}

Test(config, directory_is_refused) {
  const char *msg = load_error(DATA "nested");
  assert_contains(msg, DATA "nested: is a directory");
}

Test(config, empty_path_is_refused) {
  cb_error err = {0};
  cr_assert_null(cb_config_load("", &err));
  cr_assert(err.failed);
}

/* ---- substitutions ---- */

Test(config, substitutes_file_names_and_environment) {
  cr_assert_eq(setenv("CBRICK_TEST_SET", "hello", 1), 0);
  unsetenv("CBRICK_TEST_UNSET");
  unsetenv("CBRICK_TEST_UNSET_NUMBER");
  char cwd[4096];
  cr_assert_not_null(getcwd(cwd, sizeof cwd));
  char dir[4200];
  snprintf(dir, sizeof dir, "\"%s/tests/data/config\"", cwd);
  json_t *cfg = load(DATA "subst.json");
  assert_at(cfg, "dir", dir);
  assert_at(cfg, "base", "\"subst.json\"");
  assert_at(cfg, "stem", "\"subst\"");
  assert_at(cfg, "ext", "\".json\"");
  assert_at(cfg, "env_default", "\"fallback\"");
  assert_at(cfg, "env_default_number", "7");
  assert_at(cfg, "env_set", "\"hello\"");
  assert_at(cfg, "env_required", "\"hello\"");
  assert_at(cfg, "untouched", "\"{{notAVariable}}\"");
  json_decref(cfg);
}

Test(config, environment_overrides_the_default) {
  cr_assert_eq(setenv("CBRICK_TEST_SET", "x", 1), 0);
  cr_assert_eq(setenv("CBRICK_TEST_UNSET_NUMBER", "12", 1), 0);
  json_t *cfg = load(DATA "subst.json");
  assert_at(cfg, "env_default_number", "12");
  json_decref(cfg);
}

Test(config, missing_environment_variable) {
  unsetenv("CBRICK_TEST_MISSING_VAR");
  const char *msg = load_error(DATA "subst_missing_env.json");
  assert_contains(msg, DATA "subst_missing_env.json: ");
  assert_contains(msg, "CBRICK_TEST_MISSING_VAR");
}

Test(config, empty_default_counts_as_none) {
  unsetenv("CBRICK_TEST_MISSING_VAR");
  const char *msg = load_error(DATA "subst_empty_default.json");
  assert_contains(msg, DATA "subst_empty_default.json: ");
  assert_contains(msg, "CBRICK_TEST_MISSING_VAR");
}

/* ---- cb_config_get ---- */

Test(config, get_walks_dicts_and_lists) {
  json_t *cfg = load(DATA "base_model.json");
  assert_at(cfg, "model.stages.1.name", "\"s2\"");
  assert_at(cfg, "model.out_indices.3", "3");
  cr_assert_eq(cb_config_get(cfg, ""), cfg);
  cr_assert_null(cb_config_get(cfg, "model.stages.2"));
  cr_assert_null(cb_config_get(cfg, "model.stages.x"));
  cr_assert_null(cb_config_get(cfg, "model.depth.x"));
  cr_assert_null(cb_config_get(cfg, "model.missing"));
  cr_assert_null(cb_config_get(cfg, "model."));
  cr_assert_null(cb_config_get(NULL, "model"));
  json_decref(cfg);
}

/* ---- --cfg-options values ---- */

static void assert_value(const char *text, const char *expected) {
  json_t *v = cb_config_parse_value(text);
  cr_assert_not_null(v, "parsing %s failed", text);
  json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
  cr_assert_not_null(want, "bad test JSON: %s", expected);
  char *got = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  cr_assert(json_equal(v, want), "%s parsed as %s, expected %s", text, got, expected);
  free(got);
  json_decref(want);
  json_decref(v);
}

Test(config_value, integers) {
  assert_value("5", "5");
  assert_value("-12", "-12");
  assert_value("+3", "3");
  assert_value("007", "7");
  assert_value("1_000", "1000");
}

Test(config_value, floats) {
  assert_value("0.5", "0.5");
  assert_value("-2.5", "-2.5");
  assert_value("1e3", "1000.0");
  assert_value("1.", "1.0");
  assert_value(".25", "0.25");
  assert_value("1E-2", "0.01");
}

Test(config_value, booleans_in_any_case) {
  assert_value("true", "true");
  assert_value("True", "true");
  assert_value("TRUE", "true");
  assert_value("false", "false");
  assert_value("False", "false");
  assert_value("fAlSe", "false");
}

Test(config_value, none_is_null_only_when_capitalised) {
  assert_value("None", "null");
  assert_value("none", "\"none\"");
  assert_value("null", "\"null\"");
}

Test(config_value, strings) {
  assert_value("abc", "\"abc\"");
  assert_value("'abc'", "\"abc\"");
  assert_value("\"abc\"", "\"abc\"");
  assert_value("'5'", "5");
  assert_value("", "\"\"");
  assert_value("1__0", "\"1__0\"");
  assert_value("0x10", "\"0x10\"");
  assert_value("inf", "\"inf\"");
  assert_value("configs/a.json", "\"configs/a.json\"");
}

Test(config_value, lists_and_tuples) {
  assert_value("[1,2,3]", "[1, 2, 3]");
  assert_value("[1, 2.5, 'a', True, None]", "[1, 2.5, \"a\", true, null]");
  assert_value("(1,2)", "[1, 2]");
  assert_value("(7)", "[7]");
  assert_value("[]", "[]");
  assert_value("()", "[]");
  assert_value("['a','b']", "[\"a\", \"b\"]");
  assert_value("[1,]", "[1]");
}

Test(config_value, nested) {
  assert_value("[(1,2),(3,4)]", "[[1, 2], [3, 4]]");
  assert_value("[[1,2],[3]]", "[[1, 2], [3]]");
  assert_value("([1],(2,[3,4]))", "[[1], [2, [3, 4]]]");
  assert_value("[1],[2]", "[[1], [2]]");
}

Test(config_value, unbracketed_commas_make_a_list) {
  assert_value("1,2,3", "[1, 2, 3]");
  assert_value("a,b", "[\"a\", \"b\"]");
  assert_value("1,", "[1]");
  assert_value("(1,2),(3,4)", "[[1, 2], [3, 4]]");
}

Test(config_value, bracket_mismatch_is_refused) {
  cr_assert_null(cb_config_parse_value("[1,2"));
  cr_assert_null(cb_config_parse_value("(1,2]"));
  cr_assert_null(cb_config_parse_value("1]"));
  cr_assert_null(cb_config_parse_value("[(1,2]]"));
  cr_assert_null(cb_config_parse_value(NULL));
}

/* ---- cb_config_apply_option ---- */

static json_t *model(void) {
  return load(DATA "base_model.json");
}

static void apply_ok(json_t *cfg, const char *option) {
  cb_error err = {0};
  cr_assert_eq(cb_config_apply_option(cfg, option, &err), 0, "%s: %s", option, err.msg);
}

static const char *apply_error(json_t *cfg, const char *option) {
  static cb_error err;
  memset(&err, 0, sizeof err);
  cr_assert_eq(cb_config_apply_option(cfg, option, &err), -1, "%s should fail", option);
  cr_assert(err.failed);
  return err.msg;
}

Test(config_option, sets_every_value_form) {
  json_t *cfg = model();
  apply_ok(cfg, "model.depth=101");
  apply_ok(cfg, "model.norm_cfg.requires_grad=False");
  apply_ok(cfg, "model.norm_cfg.momentum=0.1");
  apply_ok(cfg, "model.norm_cfg.type=SyncBN");
  apply_ok(cfg, "model.init=None");
  apply_ok(cfg, "model.out_indices=(1,3)");
  apply_ok(cfg, "model.strides=1,2,2,1");
  apply_ok(cfg, "model.name='a b'");
  assert_at(cfg, "model.depth", "101");
  assert_at(cfg, "model.norm_cfg",
            "{\"type\": \"SyncBN\", \"requires_grad\": false,"
            " \"momentum\": 0.1}");
  assert_at(cfg, "model.init", "null");
  assert_at(cfg, "model.out_indices", "[1, 3]");
  assert_at(cfg, "model.strides", "[1, 2, 2, 1]");
  assert_at(cfg, "model.name", "\"ab\""); /* mmengine drops every space */
  json_decref(cfg);
}

Test(config_option, splits_at_the_first_equals) {
  json_t *cfg = model();
  apply_ok(cfg, "model.expr=a=b");
  assert_at(cfg, "model.expr", "\"a=b\"");
  json_decref(cfg);
}

Test(config_option, list_index_override) {
  json_t *cfg = model();
  apply_ok(cfg, "model.stages.0.blocks=5");
  apply_ok(cfg, "model.out_indices.1=9");
  assert_at(cfg, "model.stages",
            "[{\"name\": \"s1\", \"blocks\": 5}, {\"name\": \"s2\", \"blocks\": 4}]");
  assert_at(cfg, "model.out_indices", "[0, 9, 2, 3]");
  json_decref(cfg);
}

Test(config_option, index_past_end) {
  json_t *cfg = model();
  const char *msg = apply_error(cfg, "model.stages.2.blocks=5");
  assert_contains(msg, "model.stages.2.blocks");
  assert_contains(msg, "index 2");
  assert_contains(msg, "length 2");
  msg = apply_error(cfg, "model.out_indices.4=1");
  assert_contains(msg, "length 4");
  assert_at(cfg, "model.out_indices", "[0, 1, 2, 3]");
  json_decref(cfg);
}

Test(config_option, creates_missing_dicts) {
  json_t *cfg = model();
  apply_ok(cfg, "train.optimizer.lr=0.01");
  apply_ok(cfg, "model.plugin.cfg.ratio=0.25");
  assert_at(cfg, "train", "{\"optimizer\": {\"lr\": 0.01}}");
  assert_at(cfg, "model.plugin", "{\"cfg\": {\"ratio\": 0.25}}");
  json_decref(cfg);
}

Test(config_option, replaces_a_dict_with_a_scalar) {
  json_t *cfg = model();
  apply_ok(cfg, "model.norm_cfg=None");
  assert_at(cfg, "model.norm_cfg", "null");
  json_decref(cfg);
}

Test(config_option, refuses_setting_through_a_scalar) {
  json_t *cfg = model();
  const char *msg = apply_error(cfg, "model.depth.x=1");
  assert_contains(msg, "model.depth is an integer");
  msg = apply_error(cfg, "model.stages.x=1");
  assert_contains(msg, "\"x\" is not an index");
  json_decref(cfg);
}

Test(config_option, refuses_malformed_options) {
  json_t *cfg = model();
  assert_contains(apply_error(cfg, "model.depth"), "expected KEY=VALUE");
  assert_contains(apply_error(cfg, "=5"), "key before '=' is empty");
  assert_contains(apply_error(cfg, "model..depth=5"), "empty part");
  assert_contains(apply_error(cfg, "model.depth.=5"), "empty part");
  assert_contains(apply_error(cfg, "model.out_indices=[1,2"), "unbalanced brackets");
  assert_contains(apply_error(cfg, "model.out_indices=(1,2]"), "unbalanced brackets");
  assert_at(cfg, "model.depth", "50");
  assert_at(cfg, "model.out_indices", "[0, 1, 2, 3]");
  json_decref(cfg);
}

Test(config, json_kind_names_values_as_a_python_config_does) {
  const char *text[] = {"{}", "[]", "\"s\"", "3", "2.5", "true", "null"};
  const char *want[] = {"a dict",  "a list",    "a string", "an integer",
                        "a float", "a boolean", "null"};
  for (int i = 0; i < 7; i++) {
    json_t *v = json_loads(text[i], JSON_DECODE_ANY, NULL);
    cr_assert_not_null(v, "bad test JSON: %s", text[i]);
    cr_expect_str_eq(cb_json_kind(v), want[i], "%s", text[i]);
    json_decref(v);
  }
  cr_expect_str_eq(cb_json_kind(NULL), "nothing");
}
