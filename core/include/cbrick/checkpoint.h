#ifndef CBRICK_CHECKPOINT_H
#define CBRICK_CHECKPOINT_H

#include <stddef.h>
#include "io.h"

/* Checkpoints: PyTorch .pth files (the zip format torch.save writes since
 * PyTorch 1.6) and safetensors files, told apart by their first bytes.
 *
 * A .pth file's pickle is interpreted, never executed: only the globals that
 * rebuild tensors and state dicts (collections.OrderedDict, torch._utils.
 * _rebuild_tensor_v2, _rebuild_parameter, torch.Size, torch.*Storage, ...) are
 * honoured; globals that could run code (os.*, posix.*, subprocess.*, sys.*,
 * builtins.eval/exec/getattr/__import__, ...) make the read fail, naming the
 * global; any other global (numpy scalars, mmengine's HistoryBuffer, ...) is an
 * opaque placeholder, so a checkpoint's meta / optimizer / message_hub load
 * structurally and are then ignored.
 *
 * The state dict is the top-level "state_dict" if it is a dict, else "model",
 * else the top-level dict itself. Nested dicts of tensors are flattened with
 * dotted keys; entries that are not tensors are skipped. Tensors come back
 * contiguous: float16, bfloat16 and float64 become float32; int64, int32, int16
 * and int8 become int64; uint8 and bool become uint8. */

CB_API cb_weights *cb_checkpoint_read(const char *path, cb_error *err);
/* The same for a .pth file's bytes (safetensors is read from files only);
 * name labels the messages. */
CB_API cb_weights *cb_checkpoint_read_memory(const void *data, size_t size, const char *name,
                                             cb_error *err);

/* A copy holding only the keys that start with prefix, with prefix removed
 * ("backbone." turns "backbone.conv1.weight" into "conv1.weight"). */
CB_API cb_weights *cb_checkpoint_strip_prefix(const cb_weights *w, const char *prefix,
                                              cb_error *err);
/* A copy with a leading "module." (torch.nn.DataParallel) removed from every key that has it. */
CB_API cb_weights *cb_checkpoint_strip_module(const cb_weights *w, cb_error *err);

#endif
