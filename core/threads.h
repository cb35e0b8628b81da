#ifndef CBRICK_THREADS_H
#define CBRICK_THREADS_H

/* A pool of persistent worker threads shared by the library's kernels. */

/* cb_parallel_for and cb_task_fn are public (cbrick/plan.h). */
#include "cbrick/plan.h"

/* The most threads the pool runs: the thread index that a task receives is below it. */
#define CB_MAX_THREADS 64

/* Threads a parallel_for uses now (>= 1). */
int cb_threads_active(void);

/* Counting the threads' idle time at the ends of parallel loops (for the plan's profile):
 * per loop, each thread's time from running out of tasks to the loop's end, summed over the
 * threads; a loop of one task leaves the others idle throughout. cb_threads_idle_ms is the
 * total counted since the library was loaded. */
void cb_threads_count_idle(bool on);
double cb_threads_idle_ms(void);

/* CBRICK_NUM_THREADS when set and valid, else the online processors. */
int cb_threads_default(void);

/* The first of n items in share `part` of `parts` contiguous, near-equal shares: how
 * cb_parallel_for deals tasks to threads, and how kernels split rows or pixels into bands
 * that follow it. */
static inline int64_t cb_share_start(int64_t n, int64_t part, int64_t parts) {
  return n * part / parts;
}

#endif
