#include <criterion/criterion.h>
#include <math.h>

#include "test_util.h"

double rel_l2(const float *got, const float *want, long n) {
  double diff = 0, norm = 0;
  for (long i = 0; i < n; i++) {
    double d = (double)got[i] - (double)want[i];
    diff += d * d;
    norm += (double)want[i] * want[i];
  }
  return norm > 0 ? sqrt(diff / norm) : sqrt(diff);
}

cb_tensor *fixture_tensor(const cb_weights *w, const char *name) {
  cr_assert_not_null(w, "fixture not loaded (looking for %s)", name);
  const cb_tensor *t = cb_weights_get(w, name);
  cr_assert_not_null(t, "fixture tensor %s is missing", name);
  return (cb_tensor *)t;
}
