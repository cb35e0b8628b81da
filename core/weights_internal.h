#ifndef CBRICK_WEIGHTS_INTERNAL_H
#define CBRICK_WEIGHTS_INTERNAL_H

#include <stdbool.h>
#include "cbrick/io.h"

/* Adds a tensor that shares t's data instead of owning it: the data must outlive w (it lies in
 * a mapping w keeps, or in the tensors of weights freed after w). Only the cb_tensor header is
 * allocated, and cb_weights_free frees only that. */
int cb_weights_add_borrowed(cb_weights *w, const char *name, const cb_tensor *t, cb_error *err);

/* w unmaps [addr, addr + len) when freed. */
void cb_weights_keep_mapping(cb_weights *w, void *addr, size_t len);

/* revise_keys: with borrow, the result shares the tensors of w, which must outlive it. */
cb_weights *cb_weights_revise(const cb_weights *w, const cb_key_rule *rules, int n, bool borrow,
                              cb_error *err);

#endif
