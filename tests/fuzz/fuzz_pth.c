/* libFuzzer target for the .pth reader: zip parsing, the pickle machine and
 * tensor views. Any input must give weights or an error, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <cbrick.h>
#include <cbrick/checkpoint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cb_error err = {0};
  cb_weights *w = cb_checkpoint_read_memory(data, size, "fuzz.pth", &err);
  if (w) {
    cb_weights *stripped = cb_checkpoint_strip_module(w, &err);
    cb_weights_free(stripped);
  }
  cb_weights_free(w);
  return 0;
}
