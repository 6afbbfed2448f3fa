/* One virtqueue's thread for the virtio exports (see virtq_thread.h): start, stop, the queue loop's
 * callbacks, the SIGBUS guard and the rate-limited failure log. */
#include "export/virtq_thread.h"
#include "sys/guard.h"
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOG_BURST 20 /* per-request failure logs allowed per second per queue */

enum { LOOP_STOP = -1, LOOP_BROKEN = -2, LOOP_KICK_FAILED = -3 };

static void event(struct virtq_thread *t, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void event(struct virtq_thread *t, const char *kind, const char *fmt, ...) {
  char msg[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  t->ops->event(t->ctx, kind, msg);
}

/* Reports the failures the rate limit kept out of the log. Called when the next second begins (by the
 * next failure, or by the queue loop, which wakes once a second while a count is pending, so a burst
 * that ends is still accounted for) and when the queue stops. */
static void log_flush(struct virtq_thread *t) {
  if (!t->log_suppressed) return;
  event(t, "warn", "queue %d: %u more request failures not logged", t->index, t->log_suppressed);
  t->log_suppressed = 0;
  t->loop.sleep_timeout_ms = -1;
}

void virtq_thread_log(struct virtq_thread *t, const char *fmt, ...) {
  time_t s = time(NULL);
  if (s != t->log_second) {
    log_flush(t);
    t->log_second = s;
    t->log_count = 0;
  }
  if (t->log_count >= LOG_BURST) {
    t->log_suppressed++;
    t->loop.sleep_timeout_ms = 1000; /* the loop wakes to report the count even if nothing follows */
    return;
  }
  t->log_count++;
  char msg[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  t->ops->event(t->ctx, "reqerr", msg);
}

static void handler_log(void *ctx, const char *msg) { virtq_thread_log(ctx, "%s", msg); }

static void drain_fd(int fd) {
  uint64_t v;
  if (fd >= 0 && read(fd, &v, 8) < 0) { /* nothing to read: fine */
  }
}

static void signal_driver(struct virtq_thread *t) {
  if (virtq_serve_publish(&t->vs)) t->ops->notify(t->ctx);
}

/* ---- the queue loop's callbacks ------------------------------------------------------------- */

/* Work: pop and start requests, commit, reap the backend, publish completions. */
static int loop_poll(void *ctx) {
  struct virtq_thread *t = ctx;
  if (atomic_load_explicit(&t->stop, memory_order_relaxed)) return LOOP_STOP;
  if (t->log_suppressed && time(NULL) != t->log_second) log_flush(t);
  int n = virtq_serve_poll(&t->vs);
  if (n < 0) {
    event(t, "broken", "queue %d: %s", t->index, t->vs.why);
    return LOOP_BROKEN;
  }
  signal_driver(t);
  return n;
}

/* What the thread turns on before it sleeps:
 *   1. The backend, while it has requests in flight: some backends signal their completion fd only
 *      when asked to (the vhost-user client, which reaping without waiting turns off again). Sleeping
 *      on that fd unarmed waits for a kick that never comes: the driver is waiting for the completion.
 *   2. The driver's kicks — unless requests wait for room in a full backend: then only the backend's
 *      next completion can give that room, and new requests stay in the ring until it does.
 * Returns > 0 when work arrived or completed while arming (do not sleep), else 0. */
static int loop_arm(void *ctx) {
  struct virtq_thread *t = ctx;
  const struct stor_backend_ops *ops = t->vs.handler.be->ops;
  if (ops->arm && ops->inflight(t->vs.bq) && ops->arm(t->vs.bq) > 0) return 1;
  if (t->vs.deferred.n || t->kick_fd < 0) return 0;
  return vring_enable_kicks(&t->vs.vr);
}

static void loop_disarm(void *ctx) {
  struct virtq_thread *t = ctx;
  vring_disable_kicks(&t->vs.vr);
}

static int loop_sleep_fds(void *ctx, struct pollfd *pf, int max) {
  struct virtq_thread *t = ctx;
  int be_fd = t->vs.handler.be->ops->event_fd(t->vs.bq);
  if (t->kick_fd < 0 && be_fd < 0) return 0; /* nothing to wait on: the driver expects polling */
  pf[0] = (struct pollfd){t->wake_fd, POLLIN, 0};
  /* while requests wait for room, only the backend's completions matter (poll(2) skips fd -1) */
  pf[1] = (struct pollfd){t->vs.deferred.n ? -1 : t->kick_fd, POLLIN, 0};
  pf[2] = (struct pollfd){be_fd, POLLIN, 0};
  return 3;
}

static int loop_woke(void *ctx, struct pollfd *pf, int n) {
  struct virtq_thread *t = ctx;
  t->wakeups++;
  if (pf[1].revents & POLLIN) {
    drain_fd(t->kick_fd);
    t->kicks++;
  }
  if (pf[2].revents & POLLIN) drain_fd(pf[2].fd);
  if (pf[1].revents & (POLLERR | POLLNVAL)) {
    event(t, "broken", "queue %d: kick fd failed", t->index);
    return LOOP_KICK_FAILED;
  }
  return 0;
}

static const struct stor_qloop_ops loop_ops = {
    .poll = loop_poll,
    .arm = loop_arm,
    .disarm = loop_disarm,
    .sleep_fds = loop_sleep_fds,
    .woke = loop_woke,
};

static void *queue_thread(void *arg) {
  struct virtq_thread *t = arg;
  char name[16];
  snprintf(name, sizeof name, "%s%d", t->ops->thread_name, t->index);
  pthread_setname_np(pthread_self(), name);
  pthread_getcpuclockid(pthread_self(), &t->cpu_clock);

  sigjmp_buf fault;
  if (sigsetjmp(fault, 1)) {
    t->vs.faulted = true;
    event(t, "broken", "queue %d: %s", t->index, t->ops->memory_lost);
    if (t->ops->ring_failed) t->ops->ring_failed(t->ctx);
    goto out;
  }
  stor_fault_jmp = &fault;
  /* the driver starts with kicks enabled: notify mode keeps them (the loop starts armed); the
   * spinning modes, and a queue without a kick fd, turn them off */
  stor_qloop_init(&t->loop, t->mode, t->spin_us);
  if (t->mode == STOR_MODE_NOTIFY && t->kick_fd >= 0)
    t->loop.armed = true;
  else
    vring_disable_kicks(&t->vs.vr);
  for (;;) {
    int r = stor_qloop_wait(&t->loop, &loop_ops, t);
    if (r == LOOP_BROKEN && t->ops->ring_failed) t->ops->ring_failed(t->ctx);
    if (r < 0) break;
  }
  /* Stopping: finish what is in flight (and what waits for room) so the used ring is complete when
   * the ring's state is handed over. */
  virtq_serve_drain(&t->vs);
  signal_driver(t);
out:
  stor_fault_jmp = NULL;
  /* after a fault: reap the backend without touching the ring's memory (the completions check faulted) */
  virtq_serve_abandon(&t->vs);
  log_flush(t); /* a stopped queue owes nobody a count */
  return NULL;
}

/* ---- lifecycle (the export's control thread) -------------------------------------------------- */

int virtq_thread_init(struct virtq_thread *t, int index, const struct virtio_blk_handler *handler,
                      const struct mem_table *mem, const struct virtq_thread_ops *ops, void *ctx,
                      enum stor_completion_mode mode, uint32_t spin_us) {
  t->index = index;
  t->ops = ops;
  t->ctx = ctx;
  t->mode = mode;
  /* no backend: a device opened only to be removed (VDUSE) */
  t->spin_us = stor_qloop_spin_budget(mode, spin_us, handler->be && handler->be->props.remote);
  t->kick_fd = -1;
  t->vs.mem = mem;
  t->vs.handler = *handler;
  t->vs.handler.stats = &t->blk;
  t->vs.handler.log = handler_log;
  t->vs.handler.log_ctx = t;
  t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return t->wake_fd < 0 ? -errno : 0;
}

void virtq_thread_free(struct virtq_thread *t) {
  virtq_serve_free(&t->vs);
  if (t->wake_fd >= 0) close(t->wake_fd);
  t->wake_fd = -1;
}

double virtq_thread_cpu_seconds(struct virtq_thread *t) {
  double s = t->cpu_seconds_done;
  struct timespec ts;
  if (t->running && clock_gettime(t->cpu_clock, &ts) == 0) s += ts.tv_sec + ts.tv_nsec / 1e9;
  return s;
}

int virtq_thread_start(struct virtq_thread *t, uint16_t num, uint64_t desc, uint64_t avail, uint64_t used,
                       uint16_t base, bool event_idx, char *err, size_t errlen) {
  struct virtq_serve *vs = &t->vs;
  const struct stor_backend_ops *ops = vs->handler.be->ops;
  if (t->running) return 0;
  int r = virtq_serve_reserve(vs, num, err, errlen);
  if (r < 0) return r;
  /* the ring's memory is the driver's: reading the used ring (and the inflight region) may fault */
  sigjmp_buf fault;
  if (sigsetjmp(fault, 1)) {
    stor_fault_jmp = NULL;
    snprintf(err, errlen, "queue %d: %s", t->index, t->ops->memory_lost);
    return -EFAULT;
  }
  stor_fault_jmp = &fault;
  r = vring_setup(&vs->vr, vs->mem, num, desc, avail, used, base, event_idx, err, errlen);
  if (r == 0 && t->ops->attach) r = t->ops->attach(t->ctx, err, errlen);
  stor_fault_jmp = NULL;
  if (r < 0) return r;
  vs->faulted = false;
  r = ops->queue_open(vs->handler.be, num, &vs->bq);
  if (r < 0) {
    snprintf(err, errlen, "backend queue: %s", strerror(-r));
    return r;
  }
  atomic_store(&t->stop, false);
  r = pthread_create(&t->thread, NULL, queue_thread, t);
  if (r) {
    ops->queue_close(vs->bq);
    vs->bq = NULL;
    snprintf(err, errlen, "pthread_create: %s", strerror(r));
    return -r;
  }
  t->running = true;
  return 0;
}

bool virtq_thread_stop(struct virtq_thread *t) {
  if (!t->running) return false;
  atomic_store(&t->stop, true);
  uint64_t one = 1;
  if (write(t->wake_fd, &one, 8) != 8) { /* the thread also checks the flag while spinning */
  }
  /* the thread's CPU clock is gone once it is joined: read it first (it is idle by then or close) */
  struct timespec ts;
  double cpu = 0;
  if (clock_gettime(t->cpu_clock, &ts) == 0) cpu = ts.tv_sec + ts.tv_nsec / 1e9;
  pthread_join(t->thread, NULL);
  t->cpu_seconds_done += cpu;
  t->running = false;
  t->vs.handler.be->ops->queue_close(t->vs.bq);
  t->vs.bq = NULL;
  drain_fd(t->wake_fd);
  return true;
}
