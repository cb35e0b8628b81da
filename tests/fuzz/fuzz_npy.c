/* libFuzzer target for the .npy reader: preamble, the header's Python dict
 * literal and the data size. An input that reads is written back and read
 * again. Any input must give a tensor or an error, never a crash or a leak. */
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
  if (temp_path(in_path, sizeof in_path, "npy-in") ||
      temp_path(out_path, sizeof out_path, "npy-out"))
    abort(); /* the fuzzer's own set-up, not the input */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(in_path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  cb_error err = {0};
  cb_tensor *t = cb_npy_read(in_path, &err);
  if (t && cb_npy_write(out_path, t, &err) == 0) {
    cb_tensor *again = cb_npy_read(out_path, &err);
    if (!again || !cb_tensor_same_shape(again, t)) abort(); /* round trip broke */
    cb_tensor_free(again);
  }
  cb_tensor_free(t);
  return 0;
}
