#ifndef CBRICK_CLI_H
#define CBRICK_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <cbrick.h>

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Options accepted anywhere on the command line. */
typedef struct cli_globals {
  const char **plugins;
  int n_plugins;
  bool quiet;
} cli_globals;

/* What config, build and run share: the config file and its overrides. */
typedef struct cli_model_args {
  const char *config;
  const char **options;
  int n_options;
  uint64_t seed;
} cli_model_args;

/* The monotonic clock in milliseconds, for the commands' timings. */
double cli_now_ms(void);
/* A cache line's round trip between two threads in ns (bench_round_trip.c), or -1 where no
 * second thread starts. */
double cli_round_trip_ns(void);
/* Sorts v[0..n) (n >= 1) and returns its median. */
double cli_median(double *v, long n);
/* "cbrick: <message>" on stderr; returns CLI_FAIL. */
int cli_fail(const char *fmt, ...) CB_PRINTF(1, 2);
/* "cbrick: <message>" and the usage line on stderr; returns CLI_USAGE. */
int cli_usage_error(const char *usage, const char *fmt, ...) CB_PRINTF(2, 3);

/* Parses the options every model command takes at argv[*i] (the config path,
 * --cfg-options K=V..., --seed N). Returns 1 when consumed (advancing *i), 0 when
 * argv[*i] is not one of them, a negative value after printing a usage error. */
int cli_model_arg(cli_model_args *a, int argc, char **argv, int *i, const char *usage);
/* Frees what cli_model_arg allocated. */
void cli_model_args_free(cli_model_args *a);

int cli_load_plugins(const cli_globals *g, cb_error *err);
/* cb_config_load plus every --cfg-options item. */
json_t *cli_load_config(const cli_model_args *a, cb_error *err);
/* custom_imports, then model.backbone built and initialised with seed. */
cb_module *cli_build_backbone(json_t *cfg, const cli_model_args *a, bool init, cb_error *err);
/* Every output of m for x through a compiled plan on threads ("N", or NULL for the default); a
 * model whose root has no lower hook, or a non-NCHW input, runs the reference forward. */
int cli_forward_plan(cb_module *m, const cb_tensor *x, const char *threads, cb_tensor_list *outs,
                     cb_error *err);

int cmd_list(int argc, char **argv, const cli_globals *g);
int cmd_config(int argc, char **argv, const cli_globals *g);
int cmd_build(int argc, char **argv, const cli_globals *g);
int cmd_run(int argc, char **argv, const cli_globals *g);
int cmd_bench(int argc, char **argv, const cli_globals *g);
int cmd_convert(int argc, char **argv, const cli_globals *g);
int cmd_inspect(int argc, char **argv, const cli_globals *g);

#define CLI_USAGE_LIST "cbrick list [REGISTRY]"
#define CLI_USAGE_CONFIG "cbrick config CONFIG [--cfg-options K=V ...]"
#define CLI_USAGE_BUILD                                                                            \
  "cbrick build CONFIG [--cfg-options K=V ...] [--shape NxCxHxW] [--seed N] [--max-memory SIZE]"
#define CLI_USAGE_CONVERT                                                                          \
  "cbrick convert IN.pth|IN.safetensors OUT.safetensors [--revise PATTERN=REPL]... "               \
  "[--strip-module] [--prefix P]"
#define CLI_USAGE_INSPECT "cbrick inspect FILE"
#define CLI_USAGE_RUN                                                                              \
  "cbrick run CONFIG [--cfg-options K=V ...] [--weights W.safetensors|W.pth [--prefix P] "         \
  "[--non-strict]] (--input X.npy | --shape NxCxHxW | --image IMG [--resize HxW] [--pad HxW]) "    \
  "[--output OUT.safetensors|OUT.npy] [--viz DIR] [--train] [--seed N] [--max-memory SIZE] "       \
  "[--save-weights W.safetensors] [--reference] [--threads N]"
#define CLI_USAGE_BENCH                                                                            \
  "cbrick bench CONFIG [--cfg-options K=V ...] [--weights W.safetensors] [--shape NxCxHxW] "       \
  "[--threads N] [--iters K] [--warmup W] [--profile] [--json] [--reference] [--ab NAME=VALUE] "   \
  "| cbrick bench --peak [--threads N] [--json]"

/* cbrick bench --ab NAME=VALUE (bench_ab.c): the plan against the plan compiled with NAME=VALUE
 * in the environment, iterations alternated; with profile, both plans' per-node times too. */
typedef struct cli_ab_args {
  const char *config, *name, *value;
  int threads;
  long iters, warmup;
  bool json, profile;
} cli_ab_args;

int cli_bench_ab(const cli_ab_args *a, cb_module *m, const cb_tensor *x, cb_error *err);
/* One forward of plan on x, or of m's module tree when plan is NULL; the outputs are dropped. */
int cli_bench_run_once(cb_module *m, cb_plan *plan, const cb_tensor *x, cb_error *err);

#endif
