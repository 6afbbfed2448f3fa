/* One queue loop for every export and engine: how a thread waits for work. The completion policy lives
 * here once and means the same everywhere:
 *   notify    look once, then turn notifications on and sleep until one arrives;
 *   poll      spin (notifications off), never sleep;
 *   adaptive  spin for an adapting window after the last work, then sleep as notify does. The window
 *             starts at the spin budget (spin-us), doubles (up to the budget) when a sleep ended within
 *             the budget — spinning a little longer would have caught the work — and halves when a
 *             sleep was longer, as QEMU's AioContext polling adapts.
 * The caller supplies what work, notifications and sleep mean through callbacks: the vhost-user export's
 * queue threads (work: the avail ring and the backend's completions; sleep: kick fd, completion fd),
 * bench's and copy's threads (work: backend completions), and the client engine's reap (spin, then the
 * Node event loop sleeps on the fd). Nothing here runs per request: the clock is read only while idle. */
#ifndef STOR_QUEUE_LOOP_H
#define STOR_QUEUE_LOOP_H
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

enum stor_completion_mode { STOR_MODE_NOTIFY = 0, STOR_MODE_POLL = 1, STOR_MODE_ADAPTIVE = 2 };

/* The one default spin budget (spin-us) for adaptive mode and for bounded spins. */
#define STOR_SPIN_US_DEFAULT 64

struct stor_qloop_ops {
  /* Looks for work and does it: > 0 progress (returned to the caller), 0 nothing, < 0 stop. */
  int (*poll)(void *ctx);
  /* Optional: turns notifications on before each sleep (every one: a look may have turned them off).
   * > 0: work arrived or was done meanwhile (returned to the caller: do not sleep), 0: safe to sleep,
   * < 0: stop. */
  int (*arm)(void *ctx);
  /* Optional: turns notifications off once work flows again. */
  void (*disarm)(void *ctx);
  /* Sleep on fds: fills up to max pollfds (POLLIN) and returns how many; 0: nothing to sleep on
   * (keep spinning). After poll(2), woke() (optional) drains them; < 0 from it stops the loop. */
  int (*sleep_fds)(void *ctx, struct pollfd *pf, int max);
  int (*woke)(void *ctx, struct pollfd *pf, int n);
  /* Or sleep by callback (instead of sleep_fds), e.g. a backend's own blocking reap; it must look for
   * work before it blocks. Its result is treated as poll()'s. In notify mode it is called at once,
   * without a poll() before it. */
  int (*sleep)(void *ctx);
};

struct stor_qloop {
  enum stor_completion_mode mode;
  uint64_t spin_ns;     /* the budget: adaptive's longest window, a bounded spin's length */
  uint64_t window_ns;   /* adaptive: the current window */
  int sleep_timeout_ms; /* poll(2) timeout of a sleep; -1: none */
  bool armed;
  unsigned spins;
  uint64_t sleeps; /* how often the loop slept */
};

void stor_qloop_init(struct stor_qloop *l, enum stor_completion_mode mode, uint32_t spin_us);

/* The spin budget for a queue over a backend: adaptive waiting does not spin for a remote backend. Its
 * completions take 0.1-10 ms, so a spin of some µs saves nothing that matters, and on a host shared
 * with the client (and with the cluster, in a test) it takes the CPU they need: rbd-vs-qsd measured
 * 16 µs of queue-thread CPU per request sleeping against 32 µs spinning, and fewer IOPS. poll mode
 * still spins: it was asked for. */
static inline uint32_t stor_qloop_spin_budget(enum stor_completion_mode mode, uint32_t spin_us, bool remote_backend) {
  return mode == STOR_MODE_ADAPTIVE && remote_backend ? 0 : spin_us;
}
/* "notify" | "event" (an alias) | "poll" | "adaptive"; -1 for anything else. */
int stor_completion_mode_parse(const char *s);
/* Waits per the mode until poll() (or arm / sleep) reports progress or a stop, and returns that. */
int stor_qloop_wait(struct stor_qloop *l, const struct stor_qloop_ops *ops, void *ctx);
/* Spins on poll() for at most the spin budget (no sleep): > 0 progress, 0 budget spent, < 0 stop. */
int stor_qloop_spin(struct stor_qloop *l, const struct stor_qloop_ops *ops, void *ctx);
#endif
