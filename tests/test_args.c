#include <criterion/criterion.h>
#include <string.h>

#include <cbrick.h>

/* The args of one config object, read from text, at path "cfg". */
static cb_args *args_of(const char *text, json_t **cfg) {
  cb_error err = {0};
  *cfg = json_loads(text, 0, NULL);
  cr_assert_not_null(*cfg, "bad test JSON: %s", text);
  cb_args *a = cb_args_new(*cfg, "cfg", &err);
  cr_assert_not_null(a, "%s", err.msg);
  return a;
}

static void expect_message(const cb_error *err, const char *want) {
  cr_assert(err->failed);
  cr_expect(strstr(err->msg, want), "expected '%s' in: %s", want, err->msg);
}

/* A reader's result rc was a failure with want in its message; err is cleared for the next. */
static void expect_failure(int rc, cb_error *err, const char *want) {
  cr_expect_eq(rc, -1, "expected a failure with '%s'", want);
  expect_message(err, want);
  memset(err, 0, sizeof *err);
}

Test(args, new_refuses_what_is_not_an_object) {
  cb_error err = {0};
  json_t *v = json_integer(3);
  cr_expect_null(cb_args_new(v, "model.neck", &err));
  expect_message(&err, "model.neck: expected an object, found an integer");
  json_decref(v);
  memset(&err, 0, sizeof err);
  cr_expect_null(cb_args_new(NULL, "model.neck", &err));
  expect_message(&err, "model.neck: expected an object, found nothing");
}

Test(args, int_list_reads_a_list_a_bare_integer_or_the_default) {
  json_t *cfg;
  cb_args *a = args_of("{\"l\": [3, 4, 5], \"s\": 7}", &cfg);
  cb_error err = {0};
  long long out[4], def[] = {1, 2};
  int n = 0;
  cr_assert_eq(cb_args_int_list(a, "l", def, 2, out, 4, &n, &err), 0, "%s", err.msg);
  cr_expect(n == 3 && out[0] == 3 && out[1] == 4 && out[2] == 5);
  cr_assert_eq(cb_args_int_list(a, "s", def, 2, out, 4, &n, &err), 0, "%s", err.msg);
  cr_expect(n == 1 && out[0] == 7);
  cr_assert_eq(cb_args_int_list(a, "absent", def, 2, out, 4, &n, &err), 0, "%s", err.msg);
  cr_expect(n == 2 && out[0] == 1 && out[1] == 2);
  cb_args_free(a);
  json_decref(cfg);
}

Test(args, int_list_names_the_bad_item_and_the_length) {
  json_t *cfg;
  cb_args *a = args_of("{\"l\": [3, \"x\"], \"long\": [1, 2, 3], \"d\": {}}", &cfg);
  long long out[2];
  int n = 0;
  cb_error err = {0};
  expect_failure(cb_args_int_list(a, "l", NULL, 0, out, 2, &n, &err), &err,
                 "cfg.l: item 1: expected an integer, found a string");
  expect_failure(cb_args_int_list(a, "long", NULL, 0, out, 2, &n, &err), &err,
                 "cfg.long: expected at most 2 items, found 3");
  expect_failure(cb_args_int_list(a, "d", NULL, 0, out, 2, &n, &err), &err,
                 "cfg.d: expected a list of integers, found a dict");
  cb_args_free(a);
  json_decref(cfg);
}

Test(args, bool_list_names_the_bad_item_and_the_length) {
  json_t *cfg;
  cb_args *a = args_of("{\"ok\": [true, false], \"bad\": [true, 1.5], \"long\": [true, true, "
                       "true], \"s\": \"yes\"}",
                       &cfg);
  bool out[2];
  int n = 0;
  cb_error err = {0};
  cr_assert_eq(cb_args_bool_list(a, "ok", out, 2, &n, &err), 0, "%s", err.msg);
  cr_expect(n == 2 && out[0] && !out[1]);
  expect_failure(cb_args_bool_list(a, "bad", out, 2, &n, &err), &err,
                 "cfg.bad: item 1: expected true or false, found a float");
  expect_failure(cb_args_bool_list(a, "long", out, 2, &n, &err), &err,
                 "cfg.long: expected at most 2 items, found 3");
  expect_failure(cb_args_bool_list(a, "s", out, 2, &n, &err), &err,
                 "cfg.s: expected a list of booleans, found a string 'yes'");
  cb_args_free(a);
  json_decref(cfg);
}

Test(args, int_pair_takes_one_integer_or_two) {
  json_t *cfg;
  cb_args *a = args_of("{\"one\": 3, \"two\": [1, 2], \"bad\": [1, null], \"three\": [1, 2, 3], "
                       "\"big\": [1, 99]}",
                       &cfg);
  int out[2] = {0, 0};
  bool scalar = false;
  cb_error err = {0};
  cr_assert_eq(cb_args_int_pair(a, "one", 0, 10, out, &scalar, &err), 0, "%s", err.msg);
  cr_expect(out[0] == 3 && out[1] == 3 && scalar);
  cr_assert_eq(cb_args_int_pair(a, "two", 0, 10, out, &scalar, &err), 0, "%s", err.msg);
  cr_expect(out[0] == 1 && out[1] == 2 && !scalar);
  expect_failure(cb_args_int_pair(a, "bad", 0, 10, out, NULL, &err), &err,
                 "cfg.bad: item 1: expected an integer, found null");
  expect_failure(cb_args_int_pair(a, "three", 0, 10, out, NULL, &err), &err,
                 "cfg.three: expected an integer or [h, w], found a list of 3 items");
  expect_failure(cb_args_int_pair(a, "big", 0, 10, out, NULL, &err), &err,
                 "cfg.big: must be between 0 and 10, found 99");
  cb_args_free(a);
  json_decref(cfg);
}
