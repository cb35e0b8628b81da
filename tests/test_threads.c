/* Threads: models built and run concurrently give what they give alone, and the
 * registry stays sound while plugins load and roll back in another thread. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbrick.h>
#include <cbrick/plan.h>

#include "test_util.h"

TestSuite(threads, .init = load_builtin_plugins, .fini = unload_plugins);

/* One model's job: build from config text, initialise with seed, run on a seeded
 * input (reference forward, or a compiled plan), keep the outputs. */
typedef struct model_job {
  const char *config;
  uint64_t seed;
  bool plan;
  int repeats;
  cb_tensor_list outs;
  cb_error err;
  int rc;
} model_job;

static const char *const configs[2] = {
    "{\"type\": \"ResNet\", \"depth\": 18, \"out_indices\": [1, 3]}",
    "{\"type\": \"ResNetV1c\", \"depth\": 18, \"strides\": [1, 2, 1, 1], "
    "\"dilations\": [1, 1, 2, 4], \"contract_dilation\": true}",
};

static cb_tensor *seeded_input(uint64_t seed, cb_error *err) {
  cb_tensor *x = cb_tensor_new4(1, 3, 48, 40, err);
  if (!x) return NULL;
  cb_rng rng;
  cb_rng_seed(&rng, seed);
  for (int64_t i = 0; i < cb_tensor_numel(x); i++)
    cb_f32(x)[i] = (float)cb_rng_normal(&rng);
  return x;
}

static int run_once(cb_module *m, const cb_tensor *x, model_job *job) {
  cb_tensor_list_clear(&job->outs);
  if (!job->plan) return cb_module_forward_multi(m, x, &job->outs, &job->err);
  cb_plan *plan = cb_plan_compile(m, x->shape, 1, &job->err);
  int rc = plan ? cb_plan_run(plan, x, &job->outs, &job->err) : -1;
  cb_plan_free(plan);
  return rc;
}

static int model_job_run(model_job *job) {
  json_error_t jerr;
  json_t *cfg = json_loads(job->config, 0, &jerr);
  if (!cfg) return cb_fail(&job->err, "bad test JSON: %s", jerr.text);
  cb_module *m = cb_build("BACKBONES", cfg, NULL, "model", &job->err);
  json_decref(cfg);
  if (!m) return -1;
  cb_rng rng;
  cb_rng_seed(&rng, job->seed);
  cb_tensor *x = NULL;
  int rc = cb_module_init_weights(m, &rng, &job->err);
  if (rc == 0) {
    cb_module_train(m, false);
    x = seeded_input(job->seed + 1, &job->err);
    rc = x ? 0 : -1;
  }
  for (int i = 0; rc == 0 && i < job->repeats; i++)
    rc = run_once(m, x, job);
  cb_tensor_free(x);
  cb_module_free(m);
  return rc;
}

static void *model_thread(void *arg) {
  model_job *job = arg;
  job->rc = model_job_run(job);
  return NULL;
}

static void assert_same_outputs(const model_job *got, const model_job *want) {
  cr_assert_eq(got->outs.n, want->outs.n);
  for (int i = 0; i < want->outs.n; i++) {
    const cb_tensor *a = got->outs.items[i], *b = want->outs.items[i];
    cr_assert(cb_tensor_same_shape(a, b), "output %d: shapes differ", i);
    double d = rel_l2(cb_f32(a), cb_f32(b), (long)cb_tensor_numel(b));
    cr_assert_leq(d, 1e-6, "output %d: relative L2 %g between concurrent and alone runs", i, d);
  }
}

static void two_models_concurrently(bool plan) {
  model_job alone[2], together[2];
  for (int k = 0; k < 2; k++) {
    alone[k] =
        (model_job){.config = configs[k], .seed = 7 + (uint64_t)k, .plan = plan, .repeats = 1};
    together[k] = alone[k];
    together[k].repeats = 3;
    cr_assert_eq(model_job_run(&alone[k]), 0, "%s", alone[k].err.msg);
  }
  pthread_t threads[2];
  for (int k = 0; k < 2; k++)
    cr_assert_eq(pthread_create(&threads[k], NULL, model_thread, &together[k]), 0);
  for (int k = 0; k < 2; k++) {
    pthread_join(threads[k], NULL);
    cr_assert_eq(together[k].rc, 0, "model %d in a thread: %s", k, together[k].err.msg);
    assert_same_outputs(&together[k], &alone[k]);
    cb_tensor_list_clear(&alone[k].outs);
    cb_tensor_list_clear(&together[k].outs);
  }
}

Test(threads, two_models_reference_forward) {
  two_models_concurrently(false);
}

Test(threads, two_models_compiled_plans) {
  two_models_concurrently(true);
}

/* ---- the registry while plugins load ---- */

typedef struct loader_job {
  atomic_int stop;
  int loads, rollbacks, unexpected;
  char first_unexpected[CB_ERROR_MAX];
} loader_job;

/* Loads scale_layer.so (idempotent after the first time) and, over and over,
 * duplicate_scale.so and init_fails.so: each registers entries, fails, and is
 * rolled back (entries removed, dlclose) -- a load and an unload per round. */
static void *loader_thread(void *arg) {
  loader_job *job = arg;
  const char *const failing[2] = {"duplicate_scale.so", "init_fails.so"};
  for (int round = 0; !atomic_load(&job->stop) || round < 20; round++) {
    cb_error err = {0};
    if (cb_plugin_load_file(test_plugin_path("scale_layer.so"), &err) == 0) job->loads++;
    cb_error_clear(&err);
    if (cb_plugin_load_file(test_plugin_path(failing[round % 2]), &err) == 0 && !job->unexpected++)
      snprintf(job->first_unexpected, sizeof job->first_unexpected, "%s loaded",
               failing[round % 2]);
    else
      job->rollbacks++;
    if (round > 100000) break;
  }
  return NULL;
}

static int count_entry(const char *registry, const char *type, const char *provider, void *ud) {
  (void)registry, (void)provider;
  *(int *)ud += type[0] != '\0';
  return 0;
}

Test(threads, registry_reads_while_plugins_load) {
  loader_job loader = {0};
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, loader_thread, &loader), 0);
  json_t *conv = json_pack("{s:s, s:i, s:i, s:i}", "type", "Conv2d", "in_channels", 2,
                           "out_channels", 3, "kernel_size", 3);
  json_t *unknown = json_pack("{s:s}", "type", "OtherScal");
  for (int i = 0; i < 400; i++) {
    cb_error err = {0};
    cb_module *m = cb_build("CONV_LAYERS", conv, NULL, "conv", &err);
    cr_assert_not_null(m, "round %d: %s", i, err.msg);
    cb_module_free(m);
    /* an unknown name lists (and so copies) every entry, including those rolled back now */
    cr_assert_null(cb_build("PLUGIN_LAYERS", unknown, NULL, "plugin", &err));
    cr_assert(strstr(err.msg, "'OtherScal' is not in the PLUGIN_LAYERS registry"), "%s", err.msg);
    int n = 0;
    cb_registry_foreach(NULL, count_entry, &n);
    cr_assert_gt(n, 10);
  }
  atomic_store(&loader.stop, 1);
  pthread_join(thread, NULL);
  json_decref(conv);
  json_decref(unknown);
  cr_assert_eq(loader.unexpected, 0, "%s", loader.first_unexpected);
  cr_assert_geq(loader.rollbacks, 20);
  cr_assert(cb_registry_has("PLUGIN_LAYERS", "Scale"));
  cr_assert(!cb_registry_has("PLUGIN_LAYERS", "OtherScale"), "a rolled-back entry remains");
}

/* One loop of the stress test: which of its tasks ran, and whether any ran after it ended. */
typedef struct pool_loop {
  atomic_int runs[8];
  atomic_bool over;
  atomic_int *late;
} pool_loop;

static void count_task(void *ctx, int task, int thread) {
  (void)thread;
  pool_loop *loop = ctx;
  if (atomic_load(&loop->over)) atomic_fetch_add(loop->late, 1);
  atomic_fetch_add(&loop->runs[task], 1);
}

/* Back-to-back loops of 1 to 3 and of 8 tasks: every task runs exactly once, inside its own
 * loop, also when a worker is descheduled at the end of a short loop while a longer one
 * starts. */
Test(threads, pool_runs_each_task_once_per_loop) {
  cb_set_num_threads(2);
  atomic_int late = 0;
  for (int i = 0; i < 400000; i++) {
    pool_loop loop = {.late = &late};
    int n = i % 2 ? 8 : 1 + i % 3;
    cb_parallel_for(n, count_task, &loop);
    atomic_store(&loop.over, true);
    for (int t = 0; t < 8; t++)
      cr_assert_eq(atomic_load(&loop.runs[t]), t < n, "loop %d (%d tasks): task %d ran %d times", i,
                   n, t, atomic_load(&loop.runs[t]));
  }
  cr_assert_eq(atomic_load(&late), 0, "%d tasks ran after their loop ended", atomic_load(&late));
  cb_set_num_threads(0);
}

typedef struct long_loop_runs {
  atomic_uchar *runs;
  atomic_int wrong_thread;
} long_loop_runs;

static void mark_task(void *ctx, int task, int thread) {
  long_loop_runs *l = ctx;
  if (thread < 0 || thread >= cb_get_num_threads()) atomic_fetch_add(&l->wrong_thread, 1);
  atomic_fetch_add(&l->runs[task], 1);
}

/* A loop of more tasks than a thread's share can count (2^24) runs each of them once. */
Test(threads, pool_runs_loops_longer_than_a_share) {
  cb_set_num_threads(2);
  int n = (1 << 24) + 3;
  long_loop_runs l = {.runs = calloc((size_t)n, sizeof(atomic_uchar))};
  cr_assert_not_null(l.runs);
  cb_parallel_for(n, mark_task, &l);
  int bad = 0;
  for (int t = 0; t < n; t++)
    bad += atomic_load(&l.runs[t]) != 1;
  free((void *)l.runs);
  cr_assert_eq(bad, 0, "%d of %d tasks did not run exactly once", bad, n);
  cr_assert_eq(atomic_load(&l.wrong_thread), 0);
  cb_set_num_threads(0);
}
