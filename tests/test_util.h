#ifndef CBRICK_TEST_UTIL_H
#define CBRICK_TEST_UTIL_H

#include <cbrick.h>

/* ||got - want|| / ||want|| (the plain norm of got - want when want is all zero). */
double rel_l2(const float *got, const float *want, long n);

/* The named tensor of a fixture; fails the running test when it is missing. */
cb_tensor *fixture_tensor(const cb_weights *w, const char *name);

#endif
