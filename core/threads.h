#ifndef CBRICK_THREADS_H
#define CBRICK_THREADS_H

/* A pool of persistent worker threads shared by the library's kernels. */

/* Runs fn(ctx, task, thread) for task in [0, n_tasks) on the pool's threads (the caller is
 * thread 0) and returns when all are done. Tasks are handed out dynamically. */
typedef void (*cb_task_fn)(void *ctx, int task, int thread);
void cb_parallel_for(int n_tasks, cb_task_fn fn, void *ctx);

/* Threads a parallel_for uses now (>= 1). */
int cb_threads_active(void);

/* CBRICK_NUM_THREADS when set and valid, else the online processors. */
int cb_threads_default(void);

#endif
