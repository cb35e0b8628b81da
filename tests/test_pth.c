#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbrick.h>
#include <cbrick/checkpoint.h>

#define FIXTURES "tests/fixtures/pth/"

static cb_weights *read_ok(const char *path) {
  cb_error err = {0};
  cb_weights *w = cb_checkpoint_read(path, &err);
  cr_assert_not_null(w, "%s: %s", path, err.msg);
  return w;
}

static void assert_same_tensor(const char *name, const cb_tensor *got, const cb_tensor *want) {
  cr_assert_not_null(got, "missing tensor '%s'", name);
  cr_assert_eq(got->dtype, want->dtype, "'%s': dtype %s, expected %s", name,
               cb_dtype_name(got->dtype), cb_dtype_name(want->dtype));
  cr_assert(cb_tensor_same_shape(got, want), "'%s': shape differs", name);
  cr_assert_eq(memcmp(got->data, want->data, cb_tensor_nbytes(want)), 0, "'%s': values differ",
               name);
}

/* got must hold exactly the tensors of want, bit for bit. */
static void assert_same_weights(const cb_weights *got, const cb_weights *want) {
  cr_assert_eq(cb_weights_count(got), cb_weights_count(want), "%d tensors, expected %d",
               cb_weights_count(got), cb_weights_count(want));
  for (int i = 0; i < cb_weights_count(want); i++) {
    const char *name = cb_weights_name(want, i);
    assert_same_tensor(name, cb_weights_get(got, name), cb_weights_tensor(want, i));
  }
}

static void check_fixture(const char *name) {
  char pth[256], st[256];
  snprintf(pth, sizeof(pth), FIXTURES "%s.pth", name);
  snprintf(st, sizeof(st), FIXTURES "%s.safetensors", name);
  cb_weights *got = read_ok(pth), *want = read_ok(st);
  assert_same_weights(got, want);
  cb_weights_free(got);
  cb_weights_free(want);
}

Test(pth, torchvision_style_state_dict) {
  check_fixture("tiny_net");
}
Test(pth, mmseg_checkpoint_with_meta_and_optimizer) {
  check_fixture("mmseg");
}
Test(pth, dtypes_are_converted) {
  check_fixture("dtypes");
}
Test(pth, shared_storages_and_views) {
  check_fixture("views");
}
Test(pth, model_key_is_the_state_dict) {
  check_fixture("model_key");
}
Test(pth, hand_made_archive) {
  check_fixture("small");
}
Test(pth, zip64_records) {
  check_fixture("small_zip64");
}

Test(pth, keeps_state_dict_order) {
  cb_weights *w = read_ok(FIXTURES "tiny_net.pth");
  cr_assert_str_eq(cb_weights_name(w, 0), "conv1.weight");
  cr_assert_str_eq(cb_weights_name(w, 1), "bn1.weight");
  cr_assert_eq(cb_weights_get(w, "bn1.num_batches_tracked")->dtype, CB_I64);
  cb_weights_free(w);
}

Test(pth, strip_module_prefix) {
  cb_error err = {0};
  cb_weights *raw = read_ok(FIXTURES "dataparallel.pth");
  cr_assert_not_null(cb_weights_get(raw, "module.conv1.weight"));
  cb_weights *stripped = cb_checkpoint_strip_module(raw, &err);
  cr_assert_not_null(stripped, "%s", err.msg);
  cb_weights *want = read_ok(FIXTURES "dataparallel.safetensors");
  assert_same_weights(stripped, want);
  cb_weights_free(raw);
  cb_weights_free(stripped);
  cb_weights_free(want);
}

Test(pth, strip_prefix_keeps_only_prefixed_keys) {
  cb_error err = {0};
  cb_weights *w = read_ok(FIXTURES "mmseg.pth");
  cb_weights *backbone = cb_checkpoint_strip_prefix(w, "backbone.", &err);
  cr_assert_not_null(backbone, "%s", err.msg);
  cr_assert_eq(cb_weights_count(backbone), cb_weights_count(w) - 1);
  cr_assert_null(cb_weights_get(backbone, "decode_head.conv_seg.weight"));
  assert_same_tensor("conv1.weight", cb_weights_get(backbone, "conv1.weight"),
                     cb_weights_get(w, "backbone.conv1.weight"));
  cb_weights_free(backbone);
  cb_weights_free(w);
}

Test(pth, optimizer_and_meta_are_not_in_the_result) {
  cb_weights *w = read_ok(FIXTURES "mmseg.pth");
  for (int i = 0; i < cb_weights_count(w); i++) {
    const char *name = cb_weights_name(w, i);
    cr_assert(strncmp(name, "backbone.", 9) == 0 || strncmp(name, "decode_head.", 12) == 0,
              "unexpected key '%s'", name);
  }
  cb_weights_free(w);
}

Test(pth, safetensors_is_detected) {
  cb_weights *w = read_ok(FIXTURES "small.safetensors");
  cr_assert_eq(cb_weights_count(w), 1);
  cr_assert_float_eq(cb_f32(cb_weights_get(w, "w"))[5], 2.5f, 0);
  cb_weights_free(w);
}

Test(pth, read_from_memory) {
  FILE *f = fopen(FIXTURES "small.pth", "rb");
  cr_assert_not_null(f);
  unsigned char buf[4096];
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  cb_error err = {0};
  cb_weights *w = cb_checkpoint_read_memory(buf, n, "small", &err);
  cr_assert_not_null(w, "%s", err.msg);
  cr_assert_float_eq(cb_f32(cb_weights_get(w, "w"))[3], 1.5f, 0);
  cb_weights_free(w);
  cr_assert_null(cb_checkpoint_read_memory(buf, 3, "short", &err));
  cr_assert(strstr(err.msg, "not a PyTorch zip checkpoint"), "%s", err.msg);
}

typedef struct bad_case {
  const char *file;
  const char *needle;
} bad_case;

static const bad_case bad_cases[] = {
    {"evil_os_system",
     "refusing to load global 'os.system' (only tensors, containers and numbers are allowed)"},
    {"evil_posix_system", "refusing to load global 'posix.system'"},
    {"evil_builtins_eval", "refusing to load global 'builtins.eval'"},
    {"evil_subprocess", "refusing to load global 'subprocess.Popen'"},
    {"evil_getattr", "refusing to load global '__builtin__.getattr'"},
    {"bad_opcode", "unknown pickle opcode 0xff"},
    {"stack_underflow", "pickle stack underflow"},
    {"memo_unset", "memo entry is read before it is written"},
    {"no_stop", "without a STOP opcode"},
    {"shared_dict", "'b' is a dict already seen in the state dict"},
    {"cyclic_dict", "'self' is a dict already seen"},
    {"offset_out_of_range", "runs past its storage"},
    {"absurd_shape", "shape is too large"},
    {"huge_broadcast", "far more than the file holds"},
    {"storage_too_short", "holds 20 bytes, but 6 elements of FloatStorage need 24"},
    {"storage_missing", "storage '7' is missing"},
    {"storage_type", "stored as ComplexFloatStorage"},
    {"big_endian", "big-endian"},
    {"deflated", "is compressed"},
    {"truncated", "no zip end-of-central-directory record"},
    {"bad_crc", "fails its CRC-32 check"},
    {"legacy", "legacy (pre-1.6) .pth format is not supported; re-save it with torch.save"},
    {"bare_tensor", "holds a tensor, not a dict"},
};

Test(pth, hostile_and_broken_files_are_refused) {
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(*bad_cases); i++) {
    char path[256];
    snprintf(path, sizeof(path), FIXTURES "%s.pth", bad_cases[i].file);
    cb_error err = {0};
    cb_weights *w = cb_checkpoint_read(path, &err);
    cr_assert_null(w, "%s: read should fail with '%s'", path, bad_cases[i].needle);
    cr_assert(err.failed, "%s: no error flagged", path);
    cr_assert(strstr(err.msg, path), "message does not name the file: %s", err.msg);
    cr_assert(strstr(err.msg, bad_cases[i].needle), "%s: expected '%s' in: %s", path,
              bad_cases[i].needle, err.msg);
  }
}

Test(pth, missing_file) {
  cb_error err = {0};
  cr_assert_null(cb_checkpoint_read(FIXTURES "does_not_exist.pth", &err));
  cr_assert(strstr(err.msg, "cannot open"), "%s", err.msg);
}

/* Every prefix of a valid archive is refused cleanly (a truncated download). */
Test(pth, every_truncation_is_refused) {
  FILE *f = fopen(FIXTURES "views.pth", "rb");
  cr_assert_not_null(f);
  static unsigned char buf[8192];
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  cr_assert(n < sizeof(buf));
  for (size_t len = 0; len < n; len++) {
    cb_error err = {0};
    cb_weights *w = cb_checkpoint_read_memory(buf, len, "views", &err);
    cr_assert_null(w, "a %zu-byte prefix was accepted", len);
    cr_assert(err.failed);
  }
}
