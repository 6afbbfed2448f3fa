/* The queue loop (see queue_loop.h): notify / poll / adaptive in one place. */
#include "sys/clock.h"
#include "export/queue_loop.h"
#include <sched.h>
#include <string.h>
#include <time.h>

/* Gives the CPU away after every 256 empty looks of one wait: on a shared machine the peer we wait for
 * may need this core. (Counted per wait, not overall: a yield every few requests would cost each of
 * them a trip through the scheduler.) */
static inline void relax(struct stor_qloop *l) {
  if (++l->spins % 256 == 0)
    sched_yield();
  else
    __builtin_ia32_pause();
}

void stor_qloop_init(struct stor_qloop *l, enum stor_completion_mode mode, uint32_t spin_us) {
  memset(l, 0, sizeof *l);
  l->mode = mode;
  l->spin_ns = (uint64_t)spin_us * 1000;
  l->window_ns = l->spin_ns;
  l->sleep_timeout_ms = -1;
}

int stor_completion_mode_parse(const char *s) {
  if (!strcmp(s, "notify") || !strcmp(s, "event")) return STOR_MODE_NOTIFY;
  if (!strcmp(s, "poll")) return STOR_MODE_POLL;
  if (!strcmp(s, "adaptive")) return STOR_MODE_ADAPTIVE;
  return -1;
}

/* adaptive: grow the window when a sleep ended within the budget, shrink it when it was longer */
static void adapt(struct stor_qloop *l, uint64_t blocked_ns) {
  if (blocked_ns <= l->spin_ns) {
    if (!l->window_ns)
      l->window_ns = l->spin_ns < 4000 ? l->spin_ns : 4000;
    else
      l->window_ns = l->window_ns * 2 > l->spin_ns ? l->spin_ns : l->window_ns * 2;
  } else {
    l->window_ns /= 2;
  }
}

static inline int progress(struct stor_qloop *l, const struct stor_qloop_ops *ops, void *ctx, int r) {
  if (r > 0 && l->armed) {
    l->armed = false;
    if (ops->disarm) ops->disarm(ctx);
  }
  return r;
}

int stor_qloop_wait(struct stor_qloop *l, const struct stor_qloop_ops *ops, void *ctx) {
  uint64_t idle_since = 0;
  l->spins = 0;
  bool look = !(l->mode == STOR_MODE_NOTIFY && ops->sleep);
  for (;;) {
    if (look) {
      int r = ops->poll(ctx);
      if (r) return progress(l, ops, ctx, r);
    }
    look = true;
    if (l->mode == STOR_MODE_POLL) {
      relax(l);
      continue;
    }
    if (l->mode == STOR_MODE_ADAPTIVE) {
      uint64_t now = stor_now_ns();
      if (!idle_since) idle_since = now;
      if (now - idle_since < l->window_ns) {
        relax(l);
        continue;
      }
    }
    /* sleep */
    if (ops->sleep) {
      uint64_t t0 = l->mode == STOR_MODE_ADAPTIVE ? stor_now_ns() : 0;
      int r = ops->sleep(ctx);
      l->sleeps++;
      if (l->mode == STOR_MODE_ADAPTIVE) adapt(l, stor_now_ns() - t0);
      if (r) return progress(l, ops, ctx, r);
      idle_since = 0;
      continue;
    }
    struct pollfd pf[4];
    int n = ops->sleep_fds(ctx, pf, 4);
    if (n <= 0) {
      relax(l);
      continue;
    } /* nothing to sleep on: the peer expects polling */
    /* Armed before every sleep, not only the first one after work: the look after a wake-up that found
     * nothing may have turned a notification off again (a backend's reap does: the vhost-user client
     * turns its ring's interrupts off whenever it reaps without waiting). Arming is idempotent. */
    if (ops->arm) {
      l->armed = true;
      int a = ops->arm(ctx);
      if (a) return progress(l, ops, ctx, a); /* arrived while notifications were turned on */
    }
    uint64_t t0 = l->mode == STOR_MODE_ADAPTIVE ? stor_now_ns() : 0;
    int pr = poll(pf, (nfds_t)n, l->sleep_timeout_ms);
    l->sleeps++;
    if (l->mode == STOR_MODE_ADAPTIVE) adapt(l, stor_now_ns() - t0);
    if (pr > 0 && ops->woke) {
      int w = ops->woke(ctx, pf, n);
      if (w < 0) return w;
    }
    idle_since = 0;
  }
}

int stor_qloop_spin(struct stor_qloop *l, const struct stor_qloop_ops *ops, void *ctx) {
  uint64_t until = 0;
  for (;;) {
    int r = ops->poll(ctx);
    if (r) return r;
    uint64_t now = stor_now_ns();
    if (!until) until = now + l->spin_ns;
    if (now >= until) return 0;
    __builtin_ia32_pause();
  }
}
