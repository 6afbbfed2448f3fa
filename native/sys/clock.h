/* The monotonic clock in nanoseconds, for the data path's timestamps and budgets (vDSO: no syscall). */
#pragma once
#include <stdint.h>
#include <time.h>

static inline uint64_t stor_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
