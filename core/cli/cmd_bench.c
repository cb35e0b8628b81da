/* cbrick bench: times the compiled plan (or the reference forward) of a backbone, and the
 * machine's float32 FMA peak. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "cli.h"

#define AB_NAME_MAX 128

typedef struct bench_args {
  cli_model_args model;
  const char *weights, *shape, *ab;
  long threads, iters, warmup;
  bool profile, json, peak, reference;
  char ab_name[AB_NAME_MAX]; /* --ab NAME=VALUE, split by check_ab */
  const char *ab_value;
} bench_args;

typedef struct bench_result {
  double median, min, max, flops;
  cb_plan_stats stats;
} bench_result;

static int parse_count(const char *option, const char *text, long min, long *out) {
  char *end;
  long v = strtol(text, &end, 10);
  if (!*text || *end || v < min || v > 1000000)
    return cli_usage_error(CLI_USAGE_BENCH, "%s: expected an integer >= %ld, found '%s'", option,
                           min, text);
  *out = v;
  return CLI_OK;
}

static int parse_option(bench_args *b, int argc, char **argv, int *i) {
  const char *arg = argv[*i];
  bool takes = strcmp(arg, "--weights") == 0 || strcmp(arg, "--shape") == 0 ||
               strcmp(arg, "--threads") == 0 || strcmp(arg, "--iters") == 0 ||
               strcmp(arg, "--warmup") == 0 || strcmp(arg, "--ab") == 0;
  if (!takes) {
    bool *flag = strcmp(arg, "--profile") == 0     ? &b->profile
                 : strcmp(arg, "--json") == 0      ? &b->json
                 : strcmp(arg, "--peak") == 0      ? &b->peak
                 : strcmp(arg, "--reference") == 0 ? &b->reference
                                                   : NULL;
    if (!flag) return cli_usage_error(CLI_USAGE_BENCH, "bench: unknown option '%s'", arg);
    *flag = true;
    (*i)++;
    return CLI_OK;
  }
  if (*i + 1 >= argc) return cli_usage_error(CLI_USAGE_BENCH, "%s needs a value", arg);
  const char *v = argv[*i + 1];
  *i += 2;
  if (strcmp(arg, "--weights") == 0)
    b->weights = v;
  else if (strcmp(arg, "--shape") == 0)
    b->shape = v;
  else if (strcmp(arg, "--ab") == 0)
    b->ab = v;
  else if (strcmp(arg, "--threads") == 0)
    return parse_count(arg, v, 1, &b->threads);
  else if (strcmp(arg, "--iters") == 0)
    return parse_count(arg, v, 1, &b->iters);
  else
    return parse_count(arg, v, 0, &b->warmup);
  return CLI_OK;
}

static int check_ab(bench_args *b) {
  const char *eq = strchr(b->ab, '=');
  if (!eq || eq == b->ab || eq - b->ab >= AB_NAME_MAX)
    return cli_usage_error(CLI_USAGE_BENCH,
                           "--ab: expected NAME=VALUE, an environment variable that the plan "
                           "reads when it compiles (CBRICK_WINOGRAD=0, say), found '%s'",
                           b->ab);
  if (b->reference || b->peak)
    return cli_usage_error(CLI_USAGE_BENCH,
                           "bench: --ab times two compiled plans, not with --reference or --peak");
  snprintf(b->ab_name, sizeof b->ab_name, "%.*s", (int)(eq - b->ab), b->ab);
  b->ab_value = eq + 1;
  return CLI_OK;
}

static int parse(bench_args *b, int argc, char **argv) {
  for (int i = 0; i < argc;) {
    int used = cli_model_arg(&b->model, argc, argv, &i, CLI_USAGE_BENCH);
    if (used < 0) return CLI_USAGE;
    if (used) continue;
    int rc = parse_option(b, argc, argv, &i);
    if (rc != CLI_OK) return rc;
  }
  if (!b->peak && !b->model.config)
    return cli_usage_error(CLI_USAGE_BENCH, "bench: CONFIG is missing");
  if (b->reference && b->profile)
    return cli_usage_error(CLI_USAGE_BENCH, "bench: --profile needs the plan (not --reference)");
  return b->ab ? check_ab(b) : CLI_OK;
}

/* VmHWM of this process image; ru_maxrss would include the parent's RSS at fork. */
static size_t peak_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  unsigned long long kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
  if (f) fclose(f);
  if (kb) return (size_t)kb * 1024;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (size_t)ru.ru_maxrss * 1024;
}

/* ---- the FMA peak: independent accumulator chains, one loop per thread ---- */

#define PEAK_ITERS 20000000L

/* fma_loop_<name>: the flops of PEAK_ITERS steps of 12 chains of vectors of `lanes` floats,
 * plus their sum, kept live. */
#define FMA_LOOP(name, isa, lanes)                                                                 \
  __attribute__((target(isa), optimize("O3"))) static double fma_loop_##name(void) {               \
    typedef float vec __attribute__((vector_size(4 * (lanes))));                                   \
    vec acc[12], a = {0}, m = {0};                                                                 \
    for (int i = 0; i < (lanes); i++)                                                              \
      a[i] = 1e-7f, m[i] = 0.9999999f;                                                             \
    for (int k = 0; k < 12; k++)                                                                   \
      acc[k] = a * (float)(k + 1);                                                                 \
    for (long i = 0; i < PEAK_ITERS; i++) {                                                        \
      _Pragma("GCC unroll 12") for (int k = 0; k < 12; k++) acc[k] = acc[k] * m + a;               \
    }                                                                                              \
    float s = 0;                                                                                   \
    for (int k = 0; k < 12; k++)                                                                   \
      s += acc[k][0];                                                                              \
    return s + 12.0 * (lanes)*2 * (double)PEAK_ITERS;                                              \
  }

FMA_LOOP(avx512, "avx512f,fma", 16)
FMA_LOOP(avx2, "avx2,fma", 8)

/* The peak of the instruction set that the kernels use (AVX2's on the portable path too). */
static void *peak_thread(void *arg) {
  double *flops = arg;
  __builtin_cpu_init();
  bool avx512 = strcmp(cb_kernels_isa(), "avx512") == 0;
  *flops = avx512 ? fma_loop_avx512() : __builtin_cpu_supports("avx2") ? fma_loop_avx2() : 0.0;
  *flops = floor(*flops);
  return NULL;
}

static int run_peak(const bench_args *b) {
  int threads = b->threads > 0 ? (int)b->threads : 1;
  pthread_t tids[64];
  double flops[64] = {0}, total = 0;
  if (threads > 64) threads = 64;
  double t0 = cli_now_ms();
  int started = 0;
  for (; started < threads; started++)
    if (pthread_create(&tids[started], NULL, peak_thread, &flops[started])) break;
  for (int i = 0; i < started; i++) {
    pthread_join(tids[i], NULL);
    total += flops[i];
  }
  double ms = cli_now_ms() - t0;
  const char *isa = strcmp(cb_kernels_isa(), "avx512") == 0 ? "avx512" : "avx2";
  double trip = started > 1 ? cli_round_trip_ns() : -1;
  if (b->json) {
    printf("{\"peak_gflops\": %.1f, \"threads\": %d, \"isa\": \"%s\"", total / ms / 1e6, started,
           isa);
    if (trip >= 0) printf(", \"round_trip_ns\": %.0f", trip);
    printf("}\n");
  } else {
    printf("fp32 FMA peak: %.1f GFLOP/s on %d threads (%s)\n", total / ms / 1e6, started, isa);
    if (trip >= 0) printf("cache-line round trip between two threads: %.0f ns\n", trip);
  }
  return total > 0 ? CLI_OK : cli_fail("bench --peak: no AVX2 or AVX-512 on this machine");
}

/* ---- timing a model ---- */

static cb_tensor *random_input(const bench_args *b, cb_error *err) {
  int ndim;
  int64_t dims[CB_MAX_DIMS];
  if (cb_shape_parse(b->shape ? b->shape : "1x3x224x224", &ndim, dims, err)) {
    cb_error_prefix(err, "--shape: ");
    return NULL;
  }
  if (ndim != 4) {
    cb_fail(err, "--shape: expected NxCxHxW");
    return NULL;
  }
  cb_tensor *x = cb_tensor_new(CB_F32, 4, dims, err);
  if (!x) return NULL;
  cb_rng rng;
  cb_rng_seed(&rng, b->model.seed + 1);
  for (int64_t i = 0; i < cb_tensor_numel(x); i++)
    cb_f32(x)[i] = (float)cb_rng_normal(&rng);
  return x;
}

int cli_bench_run_once(cb_module *m, cb_plan *plan, const cb_tensor *x, cb_error *err) {
  cb_tensor_list outs = {0};
  int rc = plan ? cb_plan_run(plan, x, &outs, err) : cb_module_forward_multi(m, x, &outs, err);
  cb_tensor_list_clear(&outs);
  return rc;
}

static int time_runs(const bench_args *b, cb_module *m, cb_plan *plan, const cb_tensor *x,
                     bench_result *r, cb_error *err) {
  long iters = b->iters > 0 ? b->iters : 10, warmup = b->warmup >= 0 ? b->warmup : 2;
  double *ms = calloc((size_t)iters, sizeof *ms);
  if (!ms) return cb_fail(err, "out of memory");
  int rc = 0;
  for (long i = 0; rc == 0 && i < warmup; i++)
    rc = cli_bench_run_once(m, plan, x, err);
  if (plan && b->profile) {
    cb_plan_profile_reset(plan);
    cb_plan_profile_enable(plan, true);
  }
  for (long i = 0; rc == 0 && i < iters; i++) {
    double t0 = cli_now_ms();
    rc = cli_bench_run_once(m, plan, x, err);
    ms[i] = cli_now_ms() - t0;
  }
  r->median = cli_median(ms, iters);
  r->min = ms[0];
  r->max = ms[iters - 1];
  free(ms);
  return rc;
}

static int load_weights(cb_module *m, const char *path, cb_error *err) {
  cb_weights *w = cb_safetensors_read(path, err);
  int rc = w ? cb_module_load_weights(m, w, NULL, true, stderr, err) : -1;
  cb_weights_free(w);
  return rc ? cb_error_prefix(err, "%s: ", path) : 0;
}

static void report(const bench_args *b, const bench_result *r, const cb_tensor *x) {
  char shape[128];
  cb_shape_format(4, x->shape, shape, sizeof shape);
  double gflops = r->median > 0 ? r->flops / r->median / 1e6 : 0;
  size_t rss = peak_rss_bytes();
  if (b->json) {
    printf("{\"config\": \"%s\", \"shape\": \"%s\", \"threads\": %ld, \"iters\": %ld, "
           "\"mode\": \"%s\", \"median_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f, "
           "\"gflops\": %.2f, \"flops\": %.0f, \"peak_rss_bytes\": %zu, \"arena_bytes\": %zu, "
           "\"activations_bytes\": %zu, \"packed_weight_bytes\": %zu, \"isa\": \"%s\"}\n",
           b->model.config, shape, b->threads, b->iters, b->reference ? "reference" : "plan",
           r->median, r->min, r->max, gflops, r->flops, rss, r->stats.arena_bytes,
           r->stats.values_bytes, r->stats.weight_bytes,
           r->stats.isa ? r->stats.isa : cb_kernels_isa());
    return;
  }
  printf("%s %s, %ld threads, %ld iterations (%s)\n", b->model.config, shape, b->threads, b->iters,
         b->reference ? "reference forward" : "plan");
  printf("median %.3f ms, min %.3f ms, max %.3f ms, %.1f GFLOP/s (%.2f GFLOP per run)\n", r->median,
         r->min, r->max, gflops, r->flops / 1e9);
  if (!b->reference)
    printf("plan: %d nodes, %d convs (%d BatchNorms, %d ReLUs, %d sums fused, %d merged), %d "
           "opaque; arena %.1f MiB vs %.1f MiB of activations; packed weights %.1f MiB; "
           "%s kernels\n",
           r->stats.nodes, r->stats.convs, r->stats.fused_bn, r->stats.fused_relu,
           r->stats.fused_add, r->stats.merged_convs, r->stats.opaque,
           (double)r->stats.arena_bytes / 1048576.0, (double)r->stats.values_bytes / 1048576.0,
           (double)r->stats.weight_bytes / 1048576.0, r->stats.isa);
  printf("peak RSS %.1f MiB\n", (double)rss / 1048576.0);
}

static int bench_ab(const bench_args *b, cb_module *m, const cb_tensor *x, cb_error *err) {
  cli_ab_args a = {.config = b->model.config,
                   .name = b->ab_name,
                   .value = b->ab_value,
                   .threads = (int)b->threads,
                   .iters = b->iters,
                   .warmup = b->warmup,
                   .json = b->json,
                   .profile = b->profile};
  return cli_bench_ab(&a, m, x, err);
}

static int bench_model(const bench_args *b, cb_module *m, cb_error *err) {
  cb_tensor *x = random_input(b, err);
  if (!x) return -1;
  cb_module_train(m, false);
  cb_set_num_threads((int)b->threads);
  if (b->ab) {
    int rc = bench_ab(b, m, x, err);
    cb_tensor_free(x);
    return rc;
  }
  bench_result r = {0};
  cb_plan *plan = cb_plan_compile(m, x->shape, (int)b->threads, err);
  int rc = plan ? 0 : -1;
  if (plan) {
    cb_plan_get_stats(plan, &r.stats);
    r.flops = r.stats.flops;
  }
  if (plan && b->reference) {
    cb_plan_free(plan);
    plan = NULL;
  }
  if (rc == 0) rc = time_runs(b, m, plan, x, &r, err);
  if (rc == 0) report(b, &r, x);
  if (rc == 0 && b->profile) cb_plan_profile_print(plan, stdout);
  cb_plan_free(plan);
  cb_tensor_free(x);
  return rc;
}

int cli_forward_plan(cb_module *m, const cb_tensor *x, const char *threads, cb_tensor_list *outs,
                     cb_error *err) {
  long n = 0;
  if (threads) {
    char *end;
    n = strtol(threads, &end, 10);
    if (!*threads || *end || n < 1 || n > 64)
      return cb_fail(err, "--threads: expected an integer from 1 to 64, found '%s'", threads);
  }
  if (!m->ops->lower || x->ndim != 4 || x->dtype != CB_F32)
    return cb_module_forward_multi(m, x, outs, err);
  cb_plan *plan = cb_plan_compile(m, x->shape, (int)n, err);
  int rc = plan ? cb_plan_run(plan, x, outs, err) : -1;
  cb_plan_free(plan);
  return rc;
}

int cmd_bench(int argc, char **argv, const cli_globals *g) {
  bench_args b = {.threads = 0, .iters = 10, .warmup = 2};
  cb_error err = {0};
  cb_module *m = NULL;
  json_t *cfg = NULL;
  int rc = parse(&b, argc, argv);
  if (b.threads == 0) {
    cb_set_num_threads(0); /* CBRICK_NUM_THREADS, else every processor */
    b.threads = cb_get_num_threads();
  }
  if (rc == CLI_OK && b.peak) {
    cli_model_args_free(&b.model);
    return run_peak(&b);
  }
  if (rc == CLI_OK) {
    rc = CLI_FAIL;
    if (cli_load_plugins(g, &err) == 0 && (cfg = cli_load_config(&b.model, &err)) &&
        (m = cli_build_backbone(cfg, &b.model, !b.weights, &err)) &&
        (!b.weights || load_weights(m, b.weights, &err) == 0) && bench_model(&b, m, &err) == 0)
      rc = CLI_OK;
    if (rc != CLI_OK) cli_fail("%s", err.msg);
  }
  cb_module_free(m);
  json_decref(cfg);
  cli_model_args_free(&b.model);
  return rc;
}
