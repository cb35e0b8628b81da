#ifndef CBRICK_GUARD_H
#define CBRICK_GUARD_H

#include <stdint.h>
#include "module.h"

/* A memory guard for forward passes: an upper bound of the memory a forward of
 * m on an input of a given shape needs, checked against a limit before any
 * large tensor is allocated. */

/* Physical memory in bytes (sysconf), or 0 when unknown. */
CB_API int64_t cb_memory_physical(void);
/* 80% of physical memory; INT64_MAX when physical memory is unknown. */
CB_API int64_t cb_memory_default_limit(void);

/* "8G", "512M", "1.5GiB", "64k", "1000000" (bytes; K, M, G, T are powers of 1024,
 * an optional "i" and "B" may follow); "none" gives INT64_MAX (no limit). */
CB_API int cb_memory_parse_size(const char *text, int64_t *bytes, cb_error *err);
/* "37.2 GiB", "512.0 MiB", "100 B". */
CB_API void cb_memory_format(int64_t bytes, char *buf, size_t cap);

/* Parameters and buffers of m, plus the input, plus twice the largest input +
 * output of any one module call, plus the outputs m returns. The activation
 * sizes come from a forward of m (eval mode, restored afterwards) on a zero input
 * of at most 64x64 pixels and batch 1, scaled by the ratio of the real input's
 * size. Fails with the probe's error when that forward fails. */
CB_API int cb_memory_estimate(cb_module *m, int ndim, const int64_t *shape, int64_t *bytes,
                              cb_error *err);
/* An error when need (from cb_memory_estimate) exceeds limit: "estimated memory 37.2 GiB
 * for input 1x3x20000x20000 exceeds the limit 19.1 GiB (limit_name)"; limit_name may be NULL. */
CB_API int cb_memory_check(int64_t need, int ndim, const int64_t *shape, int64_t limit,
                           const char *limit_name, cb_error *err);

#endif
