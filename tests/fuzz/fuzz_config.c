/* libFuzzer target for configs: the input up to its first NUL byte is a config
 * file (loaded with cb_config_load from a folder that holds a few _base_ files);
 * each line after the NUL is a --cfg-options item applied to the result (or to
 * an empty config when loading failed). Any input must give a config or an
 * error, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cbrick.h>

static const char *const bases[][2] = {
    {"base.json", "{\"model\": {\"backbone\": {\"type\": \"ResNet\", \"depth\": 50, "
                  "\"out_indices\": [0, 1, 2, 3], \"norm_cfg\": {\"type\": \"BN\"}}}}"},
    {"runtime.json", "{\"seed\": 1, \"custom_imports\": {\"imports\": []}}"},
    {"list.json", "{\"_base_\": [\"base.json\", \"runtime.json\"], \"x\": [1, 2]}"},
    {"cycle.json", "{\"_base_\": \"cycle2.json\"}"},
    {"cycle2.json", "{\"_base_\": \"cycle.json\"}"},
    {"subst.json", "{\"d\": \"{{fileDirname}}\", \"e\": \"{{$CBRICK_FUZZ_UNSET:7}}\"}"},
    {"sub/child.json", "{\"_base_\": \"../base.json\", \"model\": {\"_delete_\": true}}"},
};

static char dir[64];
static char cfg_path[128];

static void write_text(const char *path, const char *text, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) abort(); /* the fuzzer's own set-up, not the input */
  if (n && fwrite(text, 1, n, f) != n) abort();
  fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  snprintf(dir, sizeof dir, "/tmp/cbrick-fuzz-config-XXXXXX");
  if (!mkdtemp(dir)) abort();
  char path[256];
  snprintf(path, sizeof path, "%s/sub", dir);
  mkdir(path, 0700);
  for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, bases[i][0]);
    write_text(path, bases[i][1], strlen(bases[i][1]));
  }
  snprintf(cfg_path, sizeof cfg_path, "%s/fuzz.json", dir);
  cb_set_quiet(1);
  return 0;
}

static void apply_options(json_t *cfg, const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return;
  memcpy(text, data, size);
  text[size] = '\0';
  for (char *line = text, *next; line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    cb_error err = {0};
    cb_config_apply_option(cfg, line, &err);
    json_t *got = cb_config_get(cfg, line);
    (void)got;
  }
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t cfg_size = nul ? (size_t)(nul - data) : size;
  write_text(cfg_path, (const char *)data, cfg_size);
  cb_error err = {0};
  json_t *cfg = cb_config_load(cfg_path, &err);
  if (!cfg) cfg = json_object();
  if (nul) apply_options(cfg, nul + 1, size - cfg_size - 1);
  char *dumped = json_dumps(cfg, JSON_COMPACT);
  free(dumped);
  json_decref(cfg);
  return 0;
}
