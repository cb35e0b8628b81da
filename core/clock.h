#ifndef CBRICK_CLOCK_H
#define CBRICK_CLOCK_H

/* The monotonic clock that the plan's profile and the pool's idle count read. */
#include <stdint.h>
#include <time.h>

static inline int64_t cb_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double cb_clock_ms(void) {
  return (double)cb_clock_ns() / 1e6;
}

#endif
