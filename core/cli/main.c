#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char help_text[] =
    "usage: cbrick [--plugin FILE.so]... [--quiet] COMMAND [ARGS]\n"
    "\n"
    "Builds and runs backbones described by mmseg-style JSON configs.\n"
    "\n"
    "commands:\n"
    "  " CLI_USAGE_LIST "\n"
    "      every registered name with the plugin that provides it\n"
    "  " CLI_USAGE_CONFIG "\n"
    "      the fully resolved config as JSON\n"
    "  " CLI_USAGE_BUILD "\n"
    "      builds model.backbone, prints it and its parameter count; with --shape runs\n"
    "      forward on zeros (eval mode) and prints each output's shape\n"
    "  " CLI_USAGE_RUN "\n"
    "      runs model.backbone on an input and prints shape, mean and std of each output.\n"
    "      Without --weights the weights come from init_weights seeded with --seed (default\n"
    "      0); --shape draws a random normal input seeded with seed + 1. Eval mode unless\n"
    "      --train. --prefix selects the file keys that start with it (stripped);\n"
    "      --non-strict skips missing keys and shape mismatches instead of failing.\n"
    "      --output OUT.safetensors writes the outputs as feat.0, feat.1, ...;\n"
    "      --output OUT.npy writes OUT.npy for a single output, else OUT.0.npy, OUT.1.npy, ...\n"
    "      --save-weights W.safetensors writes the state dict used (before running).\n"
    "      Eval mode runs a compiled plan (BatchNorm folded, fused epilogues) on --threads\n"
    "      threads (default CBRICK_NUM_THREADS or every processor); --reference runs the\n"
    "      module tree layer by layer instead.\n"
    "  " CLI_USAGE_BENCH "\n"
    "      times the plan (or --reference) on a random input: median, min, max ms, GFLOP/s,\n"
    "      peak RSS; --profile adds a per-node table, --json prints one object; --peak\n"
    "      measures the float32 FMA peak of the machine (on two threads or more also a cache\n"
    "      line's round trip between two threads); --ab NAME=VALUE also compiles the plan with\n"
    "      environment variable NAME set to VALUE (CBRICK_WINOGRAD=0, CBRICK_ISA=avx2) and\n"
    "      alternates the two plans' iterations: each one's median and min, and the median of\n"
    "      B/A over the iterations (with --profile, each node's kernel and time in both)\n"
    "  --max-memory SIZE (run, build --shape) refuses a forward whose estimated memory exceeds\n"
    "      SIZE (8G, 512M, none; default 80% of the machine's memory)\n"
    "  " CLI_USAGE_CONVERT "\n"
    "      a PyTorch checkpoint's state dict as safetensors; --revise rewrites every key with\n"
    "      a regular expression as mmengine's revise_keys (repeatable, in order),\n"
    "      --strip-module drops a leading 'module.', --prefix keeps only the keys under it\n"
    "  " CLI_USAGE_INSPECT "\n"
    "      keys, dtypes, shapes, byte sizes and metadata of a .pth or .safetensors file\n"
    "\n"
    "options (before or after the command):\n"
    "  --plugin FILE.so   load a plugin after the built-in ones (repeatable)\n"
    "  --quiet            silence warnings\n"
    "  --help             this text\n"
    "\n"
    "Plugins are loaded from the built-in folder and each folder of CBRICK_PLUGIN_PATH.\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv, const cli_globals *g);
} command;

static const command commands[] = {
    {"list", cmd_list},       {"config", cmd_config},   {"build", cmd_build}, {"run", cmd_run},
    {"convert", cmd_convert}, {"inspect", cmd_inspect}, {"bench", cmd_bench}};

static const char *usage_line =
    "cbrick [--plugin FILE.so]... [--quiet] list|config|build|run|convert|inspect|bench ...";

/* Moves the global options out of argv, leaving the command and its arguments in rest. */
static int split_globals(int argc, char **argv, cli_globals *g, char **rest, int *n_rest,
                         bool *help) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--plugin") == 0) {
      if (i + 1 >= argc) return cli_usage_error(usage_line, "--plugin needs a file");
      g->plugins[g->n_plugins++] = argv[++i];
    } else if (strncmp(arg, "--plugin=", 9) == 0) {
      g->plugins[g->n_plugins++] = arg + 9;
    } else if (strcmp(arg, "--quiet") == 0 || strcmp(arg, "-q") == 0) {
      g->quiet = true;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      *help = true;
    } else {
      rest[(*n_rest)++] = argv[i];
    }
  }
  return 0;
}

static int dispatch(int argc, char **argv, const cli_globals *g, bool help) {
  if (argc == 0 || help || strcmp(argv[0], "help") == 0) {
    fputs(help_text, help || argc ? stdout : stderr);
    return help || argc ? CLI_OK : CLI_USAGE;
  }
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (strcmp(argv[0], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1, g);
  return cli_usage_error(
      usage_line,
      "unknown command '%s' (commands: list, config, build, run, convert, inspect, bench)",
      argv[0]);
}

int main(int argc, char **argv) {
  cli_globals g = {0};
  bool help = false;
  int n_rest = 0;
  g.plugins = calloc((size_t)argc, sizeof(*g.plugins));
  char **rest = calloc((size_t)argc + 1, sizeof(*rest));
  if (!g.plugins || !rest) {
    free(g.plugins);
    free(rest);
    return cli_fail("out of memory");
  }
  int rc = split_globals(argc, argv, &g, rest, &n_rest, &help);
  if (rc == 0) {
    cb_set_quiet(g.quiet);
    rc = dispatch(n_rest, rest, &g, help);
  }
  cb_plugin_unload_all();
  free(g.plugins);
  free(rest);
  return rc;
}
