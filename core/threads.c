/* The worker pool: workers spin briefly on a generation counter, then sleep on a condition
 * variable, so back-to-back parallel loops (one per layer) start without a wake-up cost.
 * Every wait yields the processor after a short spin: when other processes share the cores,
 * a waiting thread must not hold the processor that the thread it waits for needs. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <cblas.h>

#include "cbrick/plan.h"
#include "threads.h"

#define POOL_MAX_THREADS 64
#define POOL_SPIN 20000  /* wait iterations before a worker sleeps */
#define POOL_PAUSES 2000 /* of them pauses before each iteration yields */
#define POOL_CLOSED 0xFFFFFFFFu

typedef struct pool {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_t workers[POOL_MAX_THREADS];
  int n_workers;          /* started workers (threads - 1) */
  int active;             /* threads used by the next loop */
  atomic_uint generation; /* bumped per loop; workers join the loops they see */
  /* The running loop's generation (high half) and next task (low half, POOL_CLOSED once the
   * loop is over): a thread late from an earlier loop cannot claim a task of this one. */
  _Atomic uint64_t next;
  atomic_int pending;
  atomic_int n_tasks; /* read by late threads while the next loop is set up */
  cb_task_fn fn;
  void *ctx;
  atomic_bool stop;
} pool;

static pool the_pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .next = POOL_CLOSED};
static pthread_mutex_t loop_lock = PTHREAD_MUTEX_INITIALIZER;

/* While this thread runs a task, its thread index (else -1): a parallel_for inside a task
 * runs serially on it. */
static _Thread_local int task_thread = -1;

/* Takes the next task of loop gen, if that loop still has one. n_tasks, fn and ctx change
 * only between the closing of one loop and the opening of the next, so a successful claim
 * reads those of its own loop. */
static bool claim(pool *p, uint32_t gen, int *task) {
  uint64_t v = atomic_load(&p->next);
  for (;;) {
    uint32_t t = (uint32_t)v;
    if ((uint32_t)(v >> 32) != gen || t == POOL_CLOSED ||
        t >= (uint32_t)atomic_load_explicit(&p->n_tasks, memory_order_relaxed))
      return false;
    if (atomic_compare_exchange_weak(&p->next, &v, v + 1)) {
      *task = (int)t;
      return true;
    }
  }
}

static void run_tasks(pool *p, int thread, uint32_t gen) {
  task_thread = thread;
  int t;
  while (claim(p, gen, &t)) {
    p->fn(p->ctx, t, thread);
    atomic_fetch_sub(&p->pending, 1);
  }
  task_thread = -1;
}

static void pool_wait(int spins) {
  if (spins < POOL_PAUSES)
    __builtin_ia32_pause();
  else
    sched_yield();
}

static void *worker_main(void *arg) {
  int thread = (int)(intptr_t)arg;
  pool *p = &the_pool;
  unsigned seen = atomic_load(&p->generation);
  for (;;) {
    for (int spins = 0; atomic_load(&p->generation) == seen && spins < POOL_SPIN; spins++)
      pool_wait(spins);
    if (atomic_load(&p->generation) == seen) {
      pthread_mutex_lock(&p->lock);
      while (atomic_load(&p->generation) == seen && !p->stop)
        pthread_cond_wait(&p->wake, &p->lock);
      pthread_mutex_unlock(&p->lock);
    }
    if (p->stop) return NULL;
    seen = atomic_load(&p->generation);
    if (thread < p->active) run_tasks(p, thread, (uint32_t)(atomic_load(&p->next) >> 32));
  }
}

static void pool_grow(pool *p, int threads) {
  while (p->n_workers < threads - 1 && p->n_workers < POOL_MAX_THREADS) {
    int id = p->n_workers + 1;
    /* The worker's index travels in the pointer argument. */
    void *arg = (void *)(intptr_t)id; // NOLINT(performance-no-int-to-ptr)
    if (pthread_create(&p->workers[p->n_workers], NULL, worker_main, arg)) break;
    p->n_workers++;
  }
}

/* At exit (or when the library is unloaded) the workers are stopped and joined, so that no
 * thread outlives the library's code. */
__attribute__((destructor)) static void pool_shutdown(void) {
  pool *p = &the_pool;
  pthread_mutex_lock(&loop_lock);
  pthread_mutex_lock(&p->lock);
  atomic_store(&p->stop, true);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < p->n_workers; i++)
    pthread_join(p->workers[i], NULL);
  p->n_workers = 0;
  pthread_mutex_unlock(&loop_lock);
}

int cb_threads_default(void) {
  const char *env = getenv("CBRICK_NUM_THREADS");
  if (env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*env && !*end && v >= 1 && v <= POOL_MAX_THREADS) return (int)v;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > POOL_MAX_THREADS ? POOL_MAX_THREADS : (int)n;
}

CB_API void cb_set_num_threads(int threads) {
  if (threads < 1) threads = cb_threads_default();
  if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
  pthread_mutex_lock(&loop_lock);
  pool_grow(&the_pool, threads);
  the_pool.active = threads <= the_pool.n_workers + 1 ? threads : the_pool.n_workers + 1;
  pthread_mutex_unlock(&loop_lock);
  openblas_set_num_threads(threads);
}

CB_API int cb_get_num_threads(void) {
  return cb_threads_active();
}

int cb_threads_active(void) {
  return the_pool.active < 1 ? 1 : the_pool.active;
}

CB_API void cb_parallel_for(int n_tasks, cb_task_fn fn, void *ctx) {
  pool *p = &the_pool;
  if (n_tasks <= 0) return;
  if (task_thread >= 0) {
    for (int t = 0; t < n_tasks; t++)
      fn(ctx, t, task_thread);
    return;
  }
  pthread_mutex_lock(&loop_lock);
  if (p->active <= 1 || n_tasks == 1) {
    pthread_mutex_unlock(&loop_lock);
    for (int t = 0; t < n_tasks; t++)
      fn(ctx, t, 0);
    return;
  }
  uint32_t gen = (uint32_t)(atomic_load(&p->next) >> 32) + 1;
  p->fn = fn;
  p->ctx = ctx;
  atomic_store(&p->n_tasks, n_tasks);
  atomic_store(&p->pending, n_tasks);
  atomic_store(&p->next, (uint64_t)gen << 32);
  pthread_mutex_lock(&p->lock);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  run_tasks(p, 0, gen);
  for (int spins = 0; atomic_load(&p->pending) > 0; spins++)
    pool_wait(spins);
  atomic_store(&p->next, (uint64_t)gen << 32 | POOL_CLOSED);
  pthread_mutex_unlock(&loop_lock);
}
