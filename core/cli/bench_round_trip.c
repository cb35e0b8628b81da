/* cbrick bench --peak on two or more threads: the time a cache line takes from one thread to
 * another and back. Two threads, pinned to the first two processors the process may use, take
 * turns incrementing one counter; a turn is one such trip. On a VM whose vCPUs move between
 * cores that share a cache and cores that do not, this tells the two states apart (about 100 ns
 * against 400 and more on a 2-vCPU AMD EPYC). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "cli.h"

#define TURNS 500   /* per batch */
#define BATCHES 9   /* the median is reported */
#define SPINS 20000 /* before a waiting thread yields (both threads on one vCPU) */

typedef struct rally {
  _Alignas(64) atomic_long ball; /* odd: the partner's turn, even: the caller's */
  long turns;
} rally;

/* Waits until ball is `want`, then hands it on as want + 1. */
static void hit(rally *r, long want) {
  for (int spins = 0; atomic_load_explicit(&r->ball, memory_order_acquire) != want; spins++)
    if (spins >= SPINS) sched_yield();
  atomic_store_explicit(&r->ball, want + 1, memory_order_release);
}

static void *partner(void *arg) {
  rally *r = arg;
  for (long i = 0; i < r->turns; i++)
    hit(r, 2 * i + 1);
  return NULL;
}

/* The first two processors in the process's affinity mask, or false. */
static bool two_processors(cpu_set_t *first, cpu_set_t *second) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed)) return false;
  int found = 0;
  CPU_ZERO(first);
  CPU_ZERO(second);
  for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
    if (CPU_ISSET(c, &allowed)) CPU_SET(c, found++ ? second : first);
  return found == 2;
}

/* The partner thread on `second`, the caller on `first` until `restore` is put back. */
static bool start_partner(rally *r, pthread_t *tid, cpu_set_t *restore) {
  cpu_set_t first, second;
  pthread_attr_t attr;
  if (!two_processors(&first, &second) || pthread_attr_init(&attr)) return false;
  bool ok = !pthread_attr_setaffinity_np(&attr, sizeof second, &second) &&
            !pthread_getaffinity_np(pthread_self(), sizeof *restore, restore) &&
            !pthread_setaffinity_np(pthread_self(), sizeof first, &first);
  if (ok && pthread_create(tid, &attr, partner, r)) {
    pthread_setaffinity_np(pthread_self(), sizeof *restore, restore);
    ok = false;
  }
  pthread_attr_destroy(&attr);
  return ok;
}

double cli_round_trip_ns(void) {
  rally r = {.turns = (long)TURNS * BATCHES};
  pthread_t tid;
  cpu_set_t restore;
  if (!start_partner(&r, &tid, &restore)) return -1;
  double ns[BATCHES];
  for (int b = 0; b < BATCHES; b++) {
    double t0 = cli_now_ms();
    for (long i = (long)b * TURNS; i < (long)(b + 1) * TURNS; i++)
      hit(&r, 2 * i);
    ns[b] = (cli_now_ms() - t0) * 1e6 / TURNS;
  }
  pthread_join(tid, NULL);
  pthread_setaffinity_np(pthread_self(), sizeof restore, &restore);
  return cli_median(ns, BATCHES);
}
