#ifndef CBRICK_PREFIX_H
#define CBRICK_PREFIX_H

#include <stdio.h>
#include <string.h>

/* mmengine's rule: a key prefix always ends with '.', so "backbone" means "backbone.".
 * The empty prefix stays empty. */
static inline void cb_prefix_with_dot(const char *prefix, char *out, size_t cap) {
  size_t n = prefix ? strlen(prefix) : 0;
  snprintf(out, cap, "%s%s", n ? prefix : "", n && prefix[n - 1] != '.' ? "." : "");
}

#endif
