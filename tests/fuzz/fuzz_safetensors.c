/* libFuzzer target for the safetensors reader: header JSON, offsets, dtype
 * conversion. An input that reads is written back and read again. Any input
 * must give weights or an error, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cbrick.h>

static char in_path[64], out_path[64];

static int temp_path(char *path, size_t cap, const char *stem) {
  snprintf(path, cap, "/tmp/cbrick-fuzz-%s-XXXXXX", stem);
  int fd = mkstemp(path);
  if (fd < 0) return -1;
  close(fd);
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  if (temp_path(in_path, sizeof in_path, "st-in") || temp_path(out_path, sizeof out_path, "st-out"))
    abort(); /* the fuzzer's own set-up, not the input */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(in_path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  cb_error err = {0};
  cb_weights *w = cb_safetensors_read(in_path, &err);
  if (w && cb_safetensors_write(out_path, w, NULL, &err) == 0) {
    cb_weights *again = cb_safetensors_read(out_path, &err);
    if (!again || cb_weights_count(again) != cb_weights_count(w)) abort(); /* round trip broke */
    cb_weights_free(again);
  }
  cb_weights_free(w);
  return 0;
}
