/* cbrick bench --ab NAME=VALUE: the plan as it compiles (A) against the plan compiled with the
 * environment variable NAME set to VALUE (B), their iterations alternated in one process (A B,
 * then B A, ...), so that a shared machine's slow and fast stretches fall on both alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* A plan compiled with NAME=VALUE in the environment, which is restored afterwards. */
static cb_plan *compile_with(cb_module *m, const int64_t *shape, int threads, const char *name,
                             const char *value, cb_error *err) {
  const char *old = getenv(name);
  char *saved = old ? strdup(old) : NULL;
  if (old && !saved) {
    cb_fail(err, "out of memory");
    return NULL;
  }
  setenv(name, value, 1);
  cb_plan *plan = cb_plan_compile(m, shape, threads, err);
  if (saved)
    setenv(name, saved, 1);
  else
    unsetenv(name);
  free(saved);
  return plan;
}

static int run_timed(cb_module *m, cb_plan *plan, const cb_tensor *x, double *ms, cb_error *err) {
  double t0 = cli_now_ms();
  int rc = cli_bench_run_once(m, plan, x, err);
  if (ms) *ms = cli_now_ms() - t0;
  return rc;
}

/* Iteration i runs A then B for even i, B then A for odd i; ms[0] and ms[1] get A's and B's
 * times. With profile, both plans' profiles count the timed iterations. */
static int alternate(cb_module *m, cb_plan *const plans[2], const cb_tensor *x,
                     const cli_ab_args *a, double *ms[2], cb_error *err) {
  long iters = a->iters;
  for (long i = 0; i < a->warmup; i++)
    for (int p = 0; p < 2; p++)
      if (run_timed(m, plans[p], x, NULL, err)) return -1;
  for (int p = 0; p < 2 && a->profile; p++) {
    cb_plan_profile_reset(plans[p]);
    cb_plan_profile_enable(plans[p], true);
  }
  for (long i = 0; i < iters; i++)
    for (int k = 0; k < 2; k++) {
      int p = k ^ (int)(i % 2);
      if (run_timed(m, plans[p], x, &ms[p][i], err)) return -1;
    }
  return 0;
}

static const char *isa_of(cb_plan *plan) {
  cb_plan_stats s;
  cb_plan_get_stats(plan, &s);
  return s.isa ? s.isa : "portable";
}

/* The node of plan named `name` (looked for from index `from` on, then from the start), or
 * false where it has none. */
static bool node_named(cb_plan *plan, const char *name, int from, cb_plan_node_profile *out) {
  int n = cb_plan_profile_nodes(plan);
  for (int k = 0; k < n; k++)
    if (!cb_plan_profile_node(plan, (from + k) % n, out) && strcmp(out->name, name) == 0)
      return true;
  return false;
}

/* Per node: each plan's kernel and ms, and B/A; "-" where B has no node of that name. */
static void print_profiles(cb_plan *const plans[2]) {
  printf("%-28s %-19s %-19s %9s %9s %7s\n", "node", "kernel A", "kernel B", "A ms", "B ms", "B/A");
  cb_plan_node_profile a, b;
  for (int i = 0; i < cb_plan_profile_nodes(plans[0]); i++) {
    if (cb_plan_profile_node(plans[0], i, &a)) continue;
    if (!node_named(plans[1], a.name, i, &b)) {
      printf("%-28s %-19s %-19s %9.3f %9s %7s\n", a.name, a.kernel, "-", a.ms, "-", "-");
      continue;
    }
    printf("%-28s %-19s %-19s %9.3f %9.3f %7.3f\n", a.name, a.kernel, b.kernel, a.ms, b.ms,
           a.ms > 0 ? b.ms / a.ms : 0.0);
  }
}

static void print_profiles_json(cb_plan *const plans[2]) {
  printf(", \"nodes\": [");
  cb_plan_node_profile a, b;
  const char *sep = "";
  for (int i = 0; i < cb_plan_profile_nodes(plans[0]); i++) {
    if (cb_plan_profile_node(plans[0], i, &a)) continue;
    printf("%s{\"name\": \"%s\", \"a_kernel\": \"%s\", \"a_ms\": %.4f", sep, a.name, a.kernel,
           a.ms);
    sep = ", ";
    if (node_named(plans[1], a.name, i, &b))
      printf(", \"b_kernel\": \"%s\", \"b_ms\": %.4f", b.kernel, b.ms);
    printf("}");
  }
  printf("]");
}

static void report(const cli_ab_args *a, cb_plan *const plans[2], double *ms[2], double *ratio) {
  long n = a->iters;
  for (long i = 0; i < n; i++)
    ratio[i] = ms[1][i] / ms[0][i];
  /* cli_median sorts: each plan's fastest iteration is then its first */
  double med_a = cli_median(ms[0], n), med_b = cli_median(ms[1], n), med_r = cli_median(ratio, n);
  double min_a = ms[0][0], min_b = ms[1][0];
  if (a->json) {
    printf("{\"config\": \"%s\", \"threads\": %d, \"iters\": %ld, \"ab\": \"%s=%s\", "
           "\"a_median_ms\": %.4f, \"a_min_ms\": %.4f, \"a_isa\": \"%s\", "
           "\"b_median_ms\": %.4f, \"b_min_ms\": %.4f, \"b_isa\": \"%s\", "
           "\"ratio_median\": %.4f",
           a->config, a->threads, n, a->name, a->value, med_a, min_a, isa_of(plans[0]), med_b,
           min_b, isa_of(plans[1]), med_r);
    if (a->profile) print_profiles_json(plans);
    printf("}\n");
    return;
  }
  printf("%s, %d threads, %ld iterations of each plan, alternated\n", a->config, a->threads, n);
  printf("A (as compiled, %s kernels): median %.3f ms, min %.3f ms\n", isa_of(plans[0]), med_a,
         min_a);
  printf("B (%s=%s, %s kernels): median %.3f ms, min %.3f ms\n", a->name, a->value,
         isa_of(plans[1]), med_b, min_b);
  printf("B/A: median over the iterations %.4f\n", med_r);
  if (a->profile) print_profiles(plans);
}

/* Times both plans; ms[0], ms[1] and ratio hold a->iters doubles each. */
static int time_both(const cli_ab_args *a, cb_module *m, cb_plan *const plans[2],
                     const cb_tensor *x, double *ms[2], double *ratio, cb_error *err) {
  if (alternate(m, plans, x, a, ms, err)) return -1;
  report(a, plans, ms, ratio);
  return 0;
}

int cli_bench_ab(const cli_ab_args *a, cb_module *m, const cb_tensor *x, cb_error *err) {
  cb_plan *plans[2] = {cb_plan_compile(m, x->shape, a->threads, err), NULL};
  if (plans[0]) plans[1] = compile_with(m, x->shape, a->threads, a->name, a->value, err);
  double *ms[2] = {calloc((size_t)a->iters, sizeof(double)),
                   calloc((size_t)a->iters, sizeof(double))};
  double *ratio = calloc((size_t)a->iters, sizeof(double));
  int rc = -1;
  if (!ms[0] || !ms[1] || !ratio)
    cb_fail(err, "out of memory");
  else if (plans[0] && plans[1])
    rc = time_both(a, m, plans, x, ms, ratio, err);
  free(ms[0]);
  free(ms[1]);
  free(ratio);
  cb_plan_free(plans[0]);
  cb_plan_free(plans[1]);
  return rc;
}
