/* libFuzzer target for the .npy reader: preamble, the header's Python dict
 * literal and the data size. An input that reads is written back and read
 * again. Any input must give a tensor or an error, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cbrick.h>

#include "fuzz_files.h"

static char in_path[64], out_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  fuzz_temp_path(in_path, sizeof in_path, "npy-in");
  fuzz_temp_path(out_path, sizeof out_path, "npy-out");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_write_input(in_path, data, size);
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
