#ifndef CBRICK_PTH_H
#define CBRICK_PTH_H

#include <stddef.h>
#include "cbrick/io.h"

/* The state dict of a torch.save zip archive held in memory (see checkpoint.h). */
cb_weights *pth_read_memory(const unsigned char *data, size_t size, const char *label,
                            cb_error *err);

#endif
