/* IEEE half precision to float32, for the checkpoint readers. */
#ifndef CBRICK_FLOAT16_H
#define CBRICK_FLOAT16_H

#include <stdint.h>

float cb_half_to_float(uint16_t h);

#endif
