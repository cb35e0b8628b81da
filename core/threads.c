/* The worker pool: workers spin briefly on a generation counter, then sleep on a condition
 * variable, so back-to-back parallel loops (one per layer) start without a wake-up cost.
 * Every wait yields the processor after a short spin: when other processes share the cores,
 * a waiting thread must not hold the processor that the thread it waits for needs.
 * A loop's tasks are dealt in contiguous shares, the t-th to thread t: the plan's kernels
 * order their tasks by position in the image, so a thread reads mostly what it wrote in the
 * layer before, from its own caches (on two cores that share no cache, taking tasks in
 * arrival order made each layer read half its input from the other core's). A thread whose
 * share is done takes tasks from the end of the others'. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <cblas.h>

#include "cbrick/plan.h"
#include "clock.h"
#include "threads.h"

#define POOL_SPIN 20000  /* wait iterations before a worker sleeps */
#define POOL_PAUSES 2000 /* of them pauses before each iteration yields */

/* Thread t's share of the running loop: tasks [lo, hi) and the loop's generation, in one
 * word that the owner takes from the front of and other threads, once their own share is
 * done, take from the back of. On a line of its own. */
typedef struct share {
  _Alignas(64) _Atomic uint64_t word;
  /* While idle time is counted: when the thread ran out of tasks, and in which loop. */
  _Atomic int64_t idle_from;
  atomic_uint idle_gen;
} share;

typedef struct pool {
  share shares[CB_MAX_THREADS];
  cb_task_fn fn;
  void *ctx;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_t workers[CB_MAX_THREADS];
  int n_workers;          /* started workers (threads - 1) */
  int active;             /* threads used by the next loop */
  atomic_uint generation; /* bumped per loop; workers join the loops they see */
  atomic_uint running;    /* the running loop's generation, as kept in the shares */
  atomic_int pending;
  atomic_bool stop;
  atomic_bool count_idle;
  int64_t idle_ns; /* counted so far; written under loop_lock */
} pool;

static pool the_pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t loop_lock = PTHREAD_MUTEX_INITIALIZER;

/* While this thread runs a task, its thread index (else -1): a parallel_for inside a task
 * runs serially on it. */
static _Thread_local int task_thread = -1;

/* A share's word: generation (16 bits), then hi and lo (24 bits each). */
#define SHARE_BITS 24
#define SHARE_MASK ((1u << SHARE_BITS) - 1)

static uint64_t share_word(uint32_t gen, uint32_t lo, uint32_t hi) {
  return (uint64_t)(gen & 0xFFFF) << 48 | (uint64_t)hi << SHARE_BITS | lo;
}

/* Takes a task of loop gen from share s: its first when own, else its last. */
static bool take(share *s, uint32_t gen, bool own, int *task) {
  uint64_t v = atomic_load_explicit(&s->word, memory_order_acquire);
  for (;;) {
    uint32_t lo = (uint32_t)v & SHARE_MASK, hi = (uint32_t)(v >> SHARE_BITS) & SHARE_MASK;
    if ((uint32_t)(v >> 48) != (gen & 0xFFFF) || lo >= hi) return false;
    uint64_t next = own ? share_word(gen, lo + 1, hi) : share_word(gen, lo, hi - 1);
    if (atomic_compare_exchange_weak(&s->word, &v, next)) {
      *task = (int)(own ? lo : hi - 1);
      return true;
    }
  }
}

/* Thread `thread`'s next task of loop gen: from its own share, else from the back of the
 * others'. */
static bool claim(pool *p, int thread, int threads, uint32_t gen, int *task) {
  if (take(&p->shares[thread], gen, true, task)) return true;
  for (int i = 1; i < threads; i++)
    if (take(&p->shares[(thread + i) % threads], gen, false, task)) return true;
  return false;
}

/* The tasks done are counted off `pending` once, when no task is left to take: one write to
 * the shared counter per thread and loop instead of one per task. */
static void run_tasks(pool *p, int thread, uint32_t gen) {
  task_thread = thread;
  int t, threads = p->active, done = 0;
  for (; claim(p, thread, threads, gen, &t); done++)
    p->fn(p->ctx, t, thread);
  if (atomic_load_explicit(&p->count_idle, memory_order_relaxed)) {
    atomic_store_explicit(&p->shares[thread].idle_from, cb_clock_ns(), memory_order_relaxed);
    atomic_store_explicit(&p->shares[thread].idle_gen, gen, memory_order_release);
  }
  if (done) atomic_fetch_sub(&p->pending, done);
  task_thread = -1;
}

/* When thread t ran out of tasks of loop gen, or -1 where it found none. */
static int64_t ran_out(pool *p, int t, uint32_t gen, int64_t end) {
  uint32_t seen = atomic_load_explicit(&p->shares[t].idle_gen, memory_order_acquire);
  int64_t from = atomic_load_explicit(&p->shares[t].idle_from, memory_order_relaxed);
  return seen == gen && from <= end ? from : -1;
}

/* The idle time of a loop that the caller saw end at `end`: per thread, from running out of
 * tasks to the moment the last one did, or that whole stretch of the loop for a thread that came
 * too late to find any. Counting to the last thread's moment rather than to `end` leaves out
 * the time the caller lost to other processes before it saw the loop end. */
static int64_t loop_idle(pool *p, int threads, uint32_t gen, int64_t start, int64_t end) {
  int64_t from[CB_MAX_THREADS], last = start, idle = 0;
  for (int t = 0; t < threads; t++) {
    from[t] = ran_out(p, t, gen, end);
    last = from[t] > last ? from[t] : last;
  }
  for (int t = 0; t < threads; t++)
    idle += last - (from[t] >= 0 ? from[t] : start);
  return idle;
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
    if (thread < p->active) run_tasks(p, thread, atomic_load(&p->running));
  }
}

static void pool_grow(pool *p, int threads) {
  while (p->n_workers < threads - 1 && p->n_workers < CB_MAX_THREADS) {
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
    if (*env && !*end && v >= 1 && v <= CB_MAX_THREADS) return (int)v;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > CB_MAX_THREADS ? CB_MAX_THREADS : (int)n;
}

CB_API void cb_set_num_threads(int threads) {
  if (threads < 1) threads = cb_threads_default();
  if (threads > CB_MAX_THREADS) threads = CB_MAX_THREADS;
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

void cb_threads_count_idle(bool on) {
  pthread_mutex_lock(&loop_lock);
  atomic_store(&the_pool.count_idle, on);
  pthread_mutex_unlock(&loop_lock);
}

double cb_threads_idle_ms(void) {
  pthread_mutex_lock(&loop_lock);
  double ms = (double)the_pool.idle_ns / 1e6;
  pthread_mutex_unlock(&loop_lock);
  return ms;
}

/* Loops longer than a share can count run as consecutive loops of tasks offset by `first`. */
typedef struct long_loop {
  cb_task_fn fn;
  void *ctx;
  int first;
} long_loop;

static void long_loop_task(void *ctx, int task, int thread) {
  const long_loop *l = ctx;
  l->fn(l->ctx, l->first + task, thread);
}

static void parallel_for_long(int n_tasks, cb_task_fn fn, void *ctx) {
  for (long_loop l = {fn, ctx, 0}; l.first < n_tasks; l.first += (int)SHARE_MASK) {
    int count = n_tasks - l.first < (int)SHARE_MASK ? n_tasks - l.first : (int)SHARE_MASK;
    cb_parallel_for(count, long_loop_task, &l);
  }
}

CB_API void cb_parallel_for(int n_tasks, cb_task_fn fn, void *ctx) {
  pool *p = &the_pool;
  if (n_tasks <= 0) return;
  if (task_thread >= 0) {
    for (int t = 0; t < n_tasks; t++)
      fn(ctx, t, task_thread);
    return;
  }
  if (n_tasks > (int)SHARE_MASK) {
    parallel_for_long(n_tasks, fn, ctx);
    return;
  }
  pthread_mutex_lock(&loop_lock);
  bool count = atomic_load(&p->count_idle);
  if (p->active <= 1 || n_tasks == 1) {
    int others = p->active - 1;
    int64_t start = count && others > 0 ? cb_clock_ns() : 0;
    pthread_mutex_unlock(&loop_lock);
    for (int t = 0; t < n_tasks; t++)
      fn(ctx, t, 0);
    if (start) {
      pthread_mutex_lock(&loop_lock);
      p->idle_ns += others * (cb_clock_ns() - start);
      pthread_mutex_unlock(&loop_lock);
    }
    return;
  }
  int64_t start = count ? cb_clock_ns() : 0;
  uint32_t gen = atomic_load(&p->running) + 1;
  int threads = p->active;
  p->fn = fn;
  p->ctx = ctx;
  atomic_store(&p->pending, n_tasks);
  for (int t = 0; t < threads; t++) {
    uint32_t lo = (uint32_t)cb_share_start(n_tasks, t, threads);
    uint32_t hi = (uint32_t)cb_share_start(n_tasks, t + 1, threads);
    atomic_store(&p->shares[t].word, share_word(gen, lo, hi));
  }
  atomic_store(&p->running, gen);
  pthread_mutex_lock(&p->lock);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  run_tasks(p, 0, gen);
  for (int spins = 0; atomic_load(&p->pending) > 0; spins++)
    pool_wait(spins);
  if (count) p->idle_ns += loop_idle(p, threads, gen, start, cb_clock_ns());
  pthread_mutex_unlock(&loop_lock);
}
