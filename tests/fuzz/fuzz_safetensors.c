/* libFuzzer target for the safetensors reader: header JSON, offsets, dtype
 * conversion. An input that reads is written back and read again. Any input
 * must give weights or an error, never a crash or a leak. */
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
  fuzz_temp_path(in_path, sizeof in_path, "st-in");
  fuzz_temp_path(out_path, sizeof out_path, "st-out");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_write_input(in_path, data, size);
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
