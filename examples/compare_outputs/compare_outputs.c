/* compare_outputs: an application linked against libcbrick. It compares the tensors
 * PREFIX_A0, PREFIX_A1, ... of one safetensors file with PREFIX_B0, PREFIX_B1, ... of another
 * and prints each relative L2 error, ||b - a|| / ||a||, and the largest.
 *
 *   compare_outputs EXPECTED.safetensors out. ACTUAL.safetensors feat. [TOLERANCE]
 *
 * Exit status: 0 when every error is within TOLERANCE (default 1e-4), 1 otherwise. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cbrick.h>

static int relative_l2(const cb_tensor *a, const cb_tensor *b, double *out, cb_error *err) {
  char sa[128], sb[128];
  cb_shape_format(a->ndim, a->shape, sa, sizeof sa);
  cb_shape_format(b->ndim, b->shape, sb, sizeof sb);
  if (a->dtype != CB_F32 || b->dtype != CB_F32 || !cb_tensor_same_shape(a, b))
    return cb_fail(err, "expected two float32 tensors of one shape, found %s %s and %s %s",
                   cb_dtype_name(a->dtype), sa, cb_dtype_name(b->dtype), sb);
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < cb_tensor_numel(a); i++) {
    const double d = (double)cb_f32(b)[i] - cb_f32(a)[i];
    diff += d * d;
    norm += (double)cb_f32(a)[i] * cb_f32(a)[i];
  }
  *out = norm > 0 ? sqrt(diff / norm) : sqrt(diff);
  return 0;
}

/* Pairs PREFIX_A<i> with PREFIX_B<i> from i = 0 until A has no more; B must have the same count. */
static int compare(const cb_weights *a, const char *pa, const cb_weights *b, const char *pb,
                   double *worst, cb_error *err) {
  char na[256], nb[256];
  int i = 0;
  for (;; i++) {
    snprintf(na, sizeof na, "%s%d", pa, i);
    snprintf(nb, sizeof nb, "%s%d", pb, i);
    const cb_tensor *ta = cb_weights_get(a, na), *tb = cb_weights_get(b, nb);
    if (!ta && !tb) break;
    if (!ta || !tb) return cb_fail(err, "%s: present in only one of the files", ta ? nb : na);
    double e = 0;
    if (relative_l2(ta, tb, &e, err)) return cb_error_prefix(err, "%s vs %s: ", na, nb);
    printf("%s vs %s: relative L2 %.3g\n", na, nb, e);
    if (e > *worst || isnan(e)) *worst = e;
  }
  if (i == 0) return cb_fail(err, "no tensor named %s0", pa);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: %s EXPECTED.safetensors PREFIX ACTUAL.safetensors PREFIX [TOL]\n",
            argv[0]);
    return 2;
  }
  const double tolerance = argc == 6 ? atof(argv[5]) : 1e-4;
  cb_error err = {0};
  double worst = 0;
  cb_weights *a = cb_safetensors_read(argv[1], &err);
  cb_weights *b = a ? cb_safetensors_read(argv[3], &err) : NULL;
  int rc = b ? compare(a, argv[2], b, argv[4], &worst, &err) : -1;
  cb_weights_free(a);
  cb_weights_free(b);
  if (rc) {
    fprintf(stderr, "compare_outputs: %s\n", err.msg);
    return 1;
  }
  printf("max relative L2 %.3g (tolerance %.3g)\n", worst, tolerance);
  return worst <= tolerance ? 0 : 1;
}
