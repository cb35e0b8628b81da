#ifndef CBRICK_THREADS_H
#define CBRICK_THREADS_H

/* A pool of persistent worker threads shared by the library's kernels. */

/* cb_parallel_for and cb_task_fn are public (cbrick/plan.h). */
#include "cbrick/plan.h"

/* Threads a parallel_for uses now (>= 1). */
int cb_threads_active(void);

/* CBRICK_NUM_THREADS when set and valid, else the online processors. */
int cb_threads_default(void);

#endif
