/* Fault injection in front of any backend: a filter that delays requests (with jitter, so that they
 * complete out of order), fails them with EIO (at a rate, on a byte range, for some operations only),
 * or holds them all while a stall file exists. A test tool for storage developers in the manner of
 * nbdkit's delay and error filters, written for stor's request model.
 *
 * Why generic properties rather than a "fault:" driver wrapping an inner spec: the filter's settings
 * are ordinary key=value properties that every driver accepts (file:/img,delay-us=200,
 * delay-jitter-us=800), so one spec grammar, one parser and one formatter cover them, with no nested
 * spec and no second level of comma escaping. stor_bdev_open() takes the filter's keys out, opens the
 * driver with the rest, and wraps the result here when any filter key was given.
 *
 * Everything runs on the queue's own thread. A delayed request waits in a heap ordered by its due
 * time; a per-queue timerfd fires at the earliest one; the queue's completion fd is an epoll set of
 * that timerfd and the inner backend's completion fd, so a caller sleeping on it (the export's queue
 * loop, bench, copy, the Node event loop) wakes for either. reap() hands due requests to the inner
 * backend (or fails them) and reaps the inner backend; the requests' own complete() is called by the
 * inner backend, unchanged. */
#include "sys/clock.h"
#include "bdev/bdev.h"
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define STALL_RECHECK_NS 10000000ull /* a stall file is looked at every 10 ms while it matters */

enum {
  FAULT_OPS_READ = 1u << STOR_OP_READ,
  FAULT_OPS_WRITE = (1u << STOR_OP_WRITE) | (1u << STOR_OP_WRITE_ZEROES) | (1u << STOR_OP_DISCARD),
  FAULT_OPS_FLUSH = 1u << STOR_OP_FLUSH,
  FAULT_OPS_ALL = FAULT_OPS_READ | FAULT_OPS_WRITE | FAULT_OPS_FLUSH,
};

struct fault_cfg {
  uint64_t delay_ns, jitter_ns;
  bool errors;      /* any error-* property given */
  uint64_t error_p; /* probability as a fraction of 2^32 (2^32: always) */
  unsigned error_ops;
  uint64_t error_offset, error_length; /* length 0: to the end */
  char stall_file[256];
  uint64_t seed;
};

/* One operation's live settings (index: enum stor_op). */
struct fault_op_ctl {
  _Atomic uint64_t avg_ns, p99_ns; /* delay: 1 request in 100 waits p99_ns, the others avg_ns */
  _Atomic uint32_t err_kind;       /* enum stor_fault_error */
  _Atomic uint32_t err_num;        /* requests left to fail or hold */
  _Atomic uint64_t err_qd;         /* only while at least this many are in flight below */
};
#define FAULT_NOPS 5

struct fault_backend {
  struct stor_backend base;
  struct stor_backend *inner;
  struct fault_cfg cfg;
  atomic_uint queues_opened; /* varies each queue's random sequence */
  bool live;                 /* stor_fault_wrap_live: the ctl settings apply, timers always exist */
  struct fault_op_ctl ctl[FAULT_NOPS];
  _Atomic uint32_t resume_gen; /* bumped by stor_fault_resume: held requests of older generations go */
  _Atomic uint32_t held;       /* requests held "pending" now, over all queues */
};

struct held {
  struct stor_req *r;
  uint64_t due;
  uint64_t seq;
  bool fail;
};

struct fault_bqueue {
  struct fault_backend *be;
  struct stor_bqueue *inner;
  const struct stor_backend_ops *iops;
  unsigned depth;
  struct held *heap; /* min-heap on (due, seq): waiting for their time */
  unsigned nheap;
  struct held *ready; /* due, waiting for room in the inner backend (FIFO of depth entries) */
  unsigned ready_head, nready;
  struct held *pend; /* held "pending" until a resume (FIFO of depth entries; .due is the generation) */
  unsigned pend_head, npend;
  uint64_t seq, rng;
  int epfd, tfd, inner_fd; /* epfd/tfd: -1 when neither delay nor stall is configured */
  uint64_t timer_at;       /* what the timerfd is set to (0: disarmed) */
  bool stalled;
  uint64_t stall_checked;
};

/* xorshift64*: cheap, and reproducible with fault-seed= */
static inline uint64_t rnd(struct fault_bqueue *q) {
  q->rng ^= q->rng >> 12;
  q->rng ^= q->rng << 25;
  q->rng ^= q->rng >> 27;
  return q->rng * 0x2545F4914F6CDD1Dull;
}

static bool timed(const struct fault_backend *f) {
  const struct fault_cfg *c = &f->cfg;
  return f->live || c->delay_ns || c->jitter_ns || c->stall_file[0];
}

/* ---- the heap ---- */
static inline bool before(const struct held *a, const struct held *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}
static void heap_push(struct fault_bqueue *q, struct held h) {
  unsigned i = q->nheap++;
  while (i) {
    unsigned p = (i - 1) / 2;
    if (!before(&h, &q->heap[p])) break;
    q->heap[i] = q->heap[p];
    i = p;
  }
  q->heap[i] = h;
}
static struct held heap_pop(struct fault_bqueue *q) {
  struct held top = q->heap[0], last = q->heap[--q->nheap];
  unsigned i = 0, n = q->nheap;
  for (;;) {
    unsigned c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && before(&q->heap[c + 1], &q->heap[c])) c++;
    if (!before(&q->heap[c], &last)) break;
    q->heap[i] = q->heap[c];
    i = c;
  }
  if (n) q->heap[i] = last;
  return top;
}

static void set_timer(struct fault_bqueue *q, uint64_t at) {
  if (q->tfd < 0 || at == q->timer_at) return;
  struct itimerspec its = {0};
  if (at) {
    its.it_value.tv_sec = (time_t)(at / 1000000000ull);
    its.it_value.tv_nsec = (long)(at % 1000000000ull);
  }
  if (timerfd_settime(q->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0) q->timer_at = at;
}

/* Whether the stall file exists, looked at no more often than every STALL_RECHECK_NS. */
static bool stall_active(struct fault_bqueue *q, uint64_t now) {
  const char *f = q->be->cfg.stall_file;
  if (!f[0]) return false;
  if (!q->stall_checked || now - q->stall_checked >= STALL_RECHECK_NS) {
    struct stat st;
    q->stalled = stat(f, &st) == 0;
    q->stall_checked = now;
  }
  return q->stalled;
}

static bool should_fail(struct fault_bqueue *q, const struct stor_req *r) {
  const struct fault_cfg *c = &q->be->cfg;
  if (!c->errors || !(c->error_ops & (1u << r->op))) return false;
  if (c->error_length || c->error_offset) {
    uint64_t end = c->error_length ? c->error_offset + c->error_length : UINT64_MAX;
    uint64_t rend = r->offset + (r->length ? r->length : 1);
    if (r->op == STOR_OP_FLUSH || !(r->offset < end && c->error_offset < rend)) return false;
  }
  return c->error_p >= (1ull << 32) || (rnd(q) >> 32) < c->error_p;
}

/* Moves due requests to the inner backend (or fails them); returns how many moved. */
static int release(struct fault_bqueue *q) {
  if (!q->nheap && !q->nready && !q->npend) return 0;
  uint64_t now = stor_now_ns();
  if (stall_active(q, now)) {
    set_timer(q, now + STALL_RECHECK_NS);
    return 0;
  }
  uint32_t gen = atomic_load_explicit(&q->be->resume_gen, memory_order_acquire);
  while (q->npend && q->pend[q->pend_head].due != gen) {
    q->ready[(q->ready_head + q->nready++) % q->depth] = q->pend[q->pend_head];
    q->pend_head = (q->pend_head + 1) % q->depth;
    q->npend--;
    atomic_fetch_sub_explicit(&q->be->held, 1, memory_order_relaxed);
  }
  while (q->nheap && q->heap[0].due <= now) q->ready[(q->ready_head + q->nready++) % q->depth] = heap_pop(q);
  int moved = 0, submitted = 0;
  while (q->nready) {
    struct held *h = &q->ready[q->ready_head];
    /* a failing request fails where it would have been submitted: errors come out of order too */
    if (!h->fail && q->iops->submit(q->inner, h->r) == STOR_SUBMIT_BUSY) break;
    struct stor_req *failed = h->fail ? h->r : NULL;
    q->ready_head = (q->ready_head + 1) % q->depth;
    q->nready--;
    moved++;
    if (failed)
      stor_req_done(failed, -EIO);
    else
      submitted++;
  }
  if (submitted) q->iops->commit(q->inner);
  /* a BUSY inner backend wakes us through its own completion fd; the heap and held requests through the timer */
  uint64_t next = q->nheap ? q->heap[0].due : 0;
  if (q->npend && (!next || now + STALL_RECHECK_NS < next)) next = now + STALL_RECHECK_NS;
  set_timer(q, next);
  return moved;
}

/* The live error for this request: none, or the kind whose count it took (SPDK's error bdev: a count
 * per operation, used only while at least err_qd requests are in flight below). */
static uint32_t live_error(struct fault_bqueue *q, const struct stor_req *r) {
  if (r->op >= FAULT_NOPS) return STOR_FAULT_NONE;
  struct fault_op_ctl *c = &q->be->ctl[r->op];
  uint32_t kind = atomic_load_explicit(&c->err_kind, memory_order_relaxed);
  if (kind == STOR_FAULT_NONE) return kind;
  uint64_t qd = atomic_load_explicit(&c->err_qd, memory_order_relaxed);
  if (qd && q->iops->inflight(q->inner) < qd) return STOR_FAULT_NONE;
  uint32_t n = atomic_load_explicit(&c->err_num, memory_order_relaxed);
  do {
    if (!n) return STOR_FAULT_NONE;
  } while (!atomic_compare_exchange_weak_explicit(&c->err_num, &n, n - 1, memory_order_relaxed, memory_order_relaxed));
  return kind;
}

static uint64_t live_delay(struct fault_bqueue *q, const struct stor_req *r) {
  if (r->op >= FAULT_NOPS) return 0;
  const struct fault_op_ctl *c = &q->be->ctl[r->op];
  uint64_t avg = atomic_load_explicit(&c->avg_ns, memory_order_relaxed);
  uint64_t p99 = atomic_load_explicit(&c->p99_ns, memory_order_relaxed);
  if (!avg && !p99) return 0;
  return rnd(q) % 100 == 0 ? p99 : avg;
}

static enum stor_submit fault_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  const struct fault_cfg *c = &q->be->cfg;
  bool live = q->be->live;
  /* room first: a request refused BUSY must not have taken an error count */
  if (timed(q->be) && q->nheap + q->nready + q->npend >= q->depth) return STOR_SUBMIT_BUSY;
  uint32_t kind = live ? live_error(q, r) : STOR_FAULT_NONE;
  if (kind == STOR_FAULT_FAIL) {
    stor_req_done(r, -EIO);
    return STOR_SUBMIT_QUEUED;
  }
  uint64_t now = 0;
  if (kind == STOR_FAULT_PENDING) {
    uint32_t gen = atomic_load_explicit(&q->be->resume_gen, memory_order_acquire);
    q->pend[(q->pend_head + q->npend++) % q->depth] = (struct held){.r = r, .due = gen, .seq = q->seq++};
    atomic_fetch_add_explicit(&q->be->held, 1, memory_order_relaxed);
    now = stor_now_ns();
    if (!q->timer_at || now + STALL_RECHECK_NS < q->timer_at) set_timer(q, now + STALL_RECHECK_NS);
    return STOR_SUBMIT_QUEUED;
  }
  bool fail = should_fail(q, r);
  uint64_t delay = c->delay_ns + (c->jitter_ns ? rnd(q) % (c->jitter_ns + 1) : 0) + (live ? live_delay(q, r) : 0);
  if (!delay && !c->stall_file[0]) {
    if (fail) {
      stor_req_done(r, -EIO);
      return STOR_SUBMIT_QUEUED;
    }
    return q->iops->submit(q->inner, r);
  }
  now = stor_now_ns();
  heap_push(q, (struct held){.r = r, .due = now + delay, .seq = q->seq++, .fail = fail});
  if (!stall_active(q, now) && (!q->timer_at || now + delay < q->timer_at)) set_timer(q, now + delay ? now + delay : 1);
  return STOR_SUBMIT_QUEUED;
}

static void fault_commit(struct stor_bqueue *bq) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  release(q);
  q->iops->commit(q->inner);
}

static void drain(int fd) {
  uint64_t v;
  if (fd >= 0 && read(fd, &v, sizeof v) < 0) { /* nothing pending */
  }
}

static unsigned fault_inflight(struct stor_bqueue *bq) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  return q->nheap + q->nready + q->npend + q->iops->inflight(q->inner);
}

static int fault_reap(struct stor_bqueue *bq, bool wait) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  if (q->epfd < 0) return q->iops->reap(q->inner, wait);
  for (;;) {
    /* drain before looking, so a completion that lands after the look still wakes the next sleep */
    drain(q->tfd);
    if (q->timer_at && q->timer_at <= stor_now_ns()) q->timer_at = 0;
    drain(q->inner_fd);
    int n = release(q);
    if (q->iops->inflight(q->inner)) n += q->iops->reap(q->inner, false);
    if (n || !wait || !fault_inflight(bq)) return n;
    struct pollfd pf = {q->epfd, POLLIN, 0};
    if (poll(&pf, 1, -1) < 0 && errno != EINTR) return n;
  }
}

static int fault_event_fd(struct stor_bqueue *bq) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  return q->epfd >= 0 ? q->epfd : q->iops->event_fd(q->inner);
}

static int fault_arm(struct stor_bqueue *bq) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  return q->iops->arm ? q->iops->arm(q->inner) : 0;
}

static void fault_queue_close(struct stor_bqueue *bq) {
  struct fault_bqueue *q = (struct fault_bqueue *)bq;
  if (q->inner) q->iops->queue_close(q->inner);
  if (q->epfd >= 0) close(q->epfd);
  if (q->tfd >= 0) close(q->tfd);
  if (q->npend) atomic_fetch_sub_explicit(&q->be->held, q->npend, memory_order_relaxed);
  free(q->heap);
  free(q->ready);
  free(q->pend);
  free(q);
}

static int fault_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  struct fault_backend *f = (struct fault_backend *)be;
  struct fault_bqueue *q = calloc(1, sizeof *q);
  if (!q) return -ENOMEM;
  q->be = f;
  q->iops = f->inner->ops;
  q->depth = depth ? depth : 1;
  q->epfd = q->tfd = q->inner_fd = -1;
  unsigned k = atomic_fetch_add(&f->queues_opened, 1);
  q->rng = (f->cfg.seed + 0x9E3779B97F4A7C15ull * (k + 1)) | 1;
  int r = q->iops->queue_open(f->inner, depth, &q->inner);
  if (r < 0) {
    free(q);
    return r;
  }
  q->heap = calloc(q->depth, sizeof *q->heap);
  q->ready = calloc(q->depth, sizeof *q->ready);
  q->pend = calloc(q->depth, sizeof *q->pend);
  if (!q->heap || !q->ready || !q->pend) {
    fault_queue_close((struct stor_bqueue *)q);
    return -ENOMEM;
  }
  if (timed(f)) {
    q->inner_fd = q->iops->event_fd(q->inner);
    q->epfd = epoll_create1(EPOLL_CLOEXEC);
    q->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN};
    if (q->epfd < 0 || q->tfd < 0 || epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->tfd, &ev) < 0 ||
        (q->inner_fd >= 0 && epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->inner_fd, &ev) < 0)) {
      int e = -errno;
      fault_queue_close((struct stor_bqueue *)q);
      return e;
    }
  }
  *out = (struct stor_bqueue *)q;
  return 0;
}

static int fault_flush(struct stor_backend *be) {
  struct fault_backend *f = (struct fault_backend *)be;
  return f->inner->ops->flush(f->inner);
}

static void fault_destroy(struct stor_backend *be) {
  struct fault_backend *f = (struct fault_backend *)be;
  stor_backend_put(f->inner);
  free(f);
}

static const struct stor_backend_ops fault_ops = {
    .version = STOR_BDEV_OPS_V1,
    .name = "fault",
    .queue_open = fault_queue_open,
    .queue_close = fault_queue_close,
    .submit = fault_submit,
    .commit = fault_commit,
    .reap = fault_reap,
    .event_fd = fault_event_fd,
    .inflight = fault_inflight,
    .arm = fault_arm,
    .flush = fault_flush,
    .destroy = fault_destroy,
};

const struct stor_bdev_prop_help stor_fault_props[] = {
    {"delay-us", "N: hold every request N microseconds before the backend sees it"},
    {"delay-jitter-us", "N: add a random 0..N microseconds per request, so requests complete out of order"},
    {"error-rate", "P: fail this fraction of the selected requests with EIO (0..1 or N%; default 1 once any error-* "
                   "property is given)"},
    {"error-ops", "read|write|flush|all, or several joined by +: which requests may fail (write includes "
                  "discard and write-zeroes; default all)"},
    {"error-offset", "SIZE: only requests touching bytes from here may fail (default 0)"},
    {"error-length", "SIZE: ... up to this many bytes from error-offset (default: to the end)"},
    {"stall-file", "PATH: while PATH exists, requests are held (not failed); removing it releases them in order"},
    {"fault-seed", "N: seed of the random delays and errors, for a reproducible run (default: from the clock)"},
    {NULL, NULL},
};

bool stor_fault_key(const char *key) {
  for (const struct stor_bdev_prop_help *p = stor_fault_props; p->name; p++)
    if (!strcmp(p->name, key)) return true;
  return false;
}

static int parse_u64(const struct stor_kv *kv, uint64_t *out, char *err, size_t errlen) {
  const char *v = kv->value ? kv->value : "";
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (!*v || *end || errno || *v == '-') {
    snprintf(err, errlen, "fault: %s=%s: expected a whole number", kv->key, v);
    return -EINVAL;
  }
  *out = n;
  return 0;
}

static int parse_rate(const struct stor_kv *kv, uint64_t *out, char *err, size_t errlen) {
  const char *v = kv->value ? kv->value : "";
  char *end;
  errno = 0;
  double p = strtod(v, &end);
  if (end != v && *end == '%' && !end[1]) {
    p /= 100;
    end++;
  }
  if (end == v || *end || errno || !(p >= 0 && p <= 1)) {
    snprintf(err, errlen, "fault: %s=%s: expected a fraction from 0 to 1 or a percentage (0.05, 5%%)", kv->key, v);
    return -EINVAL;
  }
  *out = (uint64_t)(p * 4294967296.0);
  return 0;
}

static int parse_ops(const struct stor_kv *kv, unsigned *out, char *err, size_t errlen) {
  const char *v = kv->value ? kv->value : "";
  unsigned ops = 0;
  char word[16];
  for (const char *s = v;;) {
    size_t n = strcspn(s, "+");
    if (n == 0 || n >= sizeof word) goto bad;
    memcpy(word, s, n);
    word[n] = 0;
    if (!strcmp(word, "read"))
      ops |= FAULT_OPS_READ;
    else if (!strcmp(word, "write"))
      ops |= FAULT_OPS_WRITE;
    else if (!strcmp(word, "flush"))
      ops |= FAULT_OPS_FLUSH;
    else if (!strcmp(word, "all"))
      ops |= FAULT_OPS_ALL;
    else
      goto bad;
    if (!s[n]) break;
    s += n + 1;
  }
  *out = ops;
  return 0;
bad:
  snprintf(err, errlen, "fault: %s=%s: expected read, write, flush or all, several joined by +", kv->key, v);
  return -EINVAL;
}

static int fault_new(struct stor_backend *inner, const struct stor_kv *kv, size_t n, bool live,
                     struct stor_backend **out, char *err, size_t errlen) {
  struct fault_cfg c = {.error_ops = FAULT_OPS_ALL, .error_p = 1ull << 32, .seed = stor_now_ns()};
  for (size_t i = 0; i < n; i++) {
    const char *k = kv[i].key;
    int r = 0;
    uint64_t u;
    if (!strcmp(k, "delay-us") || !strcmp(k, "delay-jitter-us")) {
      r = parse_u64(&kv[i], &u, err, errlen);
      if (!r && u > 60000000ull) {
        snprintf(err, errlen, "fault: %s=%s: at most 60000000 (a minute)", k, kv[i].value);
        r = -EINVAL;
      }
      if (!r && !strcmp(k, "delay-us"))
        c.delay_ns = u * 1000;
      else if (!r)
        c.jitter_ns = u * 1000;
    } else if (!strcmp(k, "error-rate")) {
      r = parse_rate(&kv[i], &c.error_p, err, errlen);
      c.errors = true;
    } else if (!strcmp(k, "error-ops")) {
      r = parse_ops(&kv[i], &c.error_ops, err, errlen);
      c.errors = true;
    } else if (!strcmp(k, "error-offset")) {
      r = stor_kv_size("fault", &kv[i], &c.error_offset, err, errlen);
      c.errors = true;
    } else if (!strcmp(k, "error-length")) {
      r = stor_kv_size("fault", &kv[i], &c.error_length, err, errlen);
      c.errors = true;
    } else if (!strcmp(k, "stall-file")) {
      const char *v = kv[i].value ? kv[i].value : "";
      if (!v[0] || strlen(v) >= sizeof c.stall_file) {
        snprintf(err, errlen, "fault: stall-file=%s: expected a path shorter than %zu bytes", v, sizeof c.stall_file);
        r = -EINVAL;
      } else
        strcpy(c.stall_file, v);
    } else if (!strcmp(k, "fault-seed")) {
      r = parse_u64(&kv[i], &c.seed, err, errlen);
    } else {
      snprintf(err, errlen, "fault: unknown property '%s'", k);
      r = -EINVAL;
    }
    if (r < 0) return r;
  }
  struct fault_backend *f = calloc(1, sizeof *f);
  if (!f) return -ENOMEM;
  f->inner = inner;
  f->cfg = c;
  f->live = live;
  f->base.ops = &fault_ops;
  f->base.props = inner->props;
  char what[160] = "";
  size_t l = 0;
  if (c.delay_ns || c.jitter_ns)
    l += (size_t)snprintf(what + l, sizeof what - l, " delay %lluus+0..%lluus", (unsigned long long)c.delay_ns / 1000,
                          (unsigned long long)c.jitter_ns / 1000);
  if (c.errors && l < sizeof what)
    l += (size_t)snprintf(what + l, sizeof what - l, " errors %.4g", (double)c.error_p / 4294967296.0);
  if (c.stall_file[0] && l < sizeof what) l += (size_t)snprintf(what + l, sizeof what - l, " stall-file");
  if (live && l < sizeof what) snprintf(what + l, sizeof what - l, " live");
  snprintf(f->base.desc, sizeof f->base.desc, "%.150s (fault:%s)", inner->desc, what);
  *out = &f->base;
  return 0;
}

int stor_fault_wrap(struct stor_backend *inner, const struct stor_kv *kv, size_t n, struct stor_backend **out,
                    char *err, size_t errlen) {
  return fault_new(inner, kv, n, false, out, err, errlen);
}

int stor_fault_wrap_live(struct stor_backend *inner, const struct stor_kv *kv, size_t n, struct stor_backend **out,
                         char *err, size_t errlen) {
  inner->refs++; /* the wrapper's own: the inner backend's other users keep theirs */
  int r = fault_new(inner, kv, n, true, out, err, errlen);
  if (r < 0) {
    inner->refs--;
    return r;
  }
  (*out)->refs = 1;
  return 0;
}

static struct fault_backend *live_filter(struct stor_backend *be) {
  if (!be || be->ops != &fault_ops) return NULL;
  struct fault_backend *f = (struct fault_backend *)be;
  return f->live ? f : NULL;
}

bool stor_fault_is_live(struct stor_backend *be) { return live_filter(be) != NULL; }

void stor_fault_set_latency(struct stor_backend *be, enum stor_op op, bool p99, uint64_t ns) {
  struct fault_backend *f = live_filter(be);
  if (!f || (unsigned)op >= FAULT_NOPS) return;
  atomic_store_explicit(p99 ? &f->ctl[op].p99_ns : &f->ctl[op].avg_ns, ns, memory_order_relaxed);
}

void stor_fault_set_error(struct stor_backend *be, enum stor_op op, enum stor_fault_error kind, uint32_t num,
                          uint64_t queue_depth) {
  struct fault_backend *f = live_filter(be);
  if (!f || (unsigned)op >= FAULT_NOPS) return;
  struct fault_op_ctl *c = &f->ctl[op];
  /* the count last: a queue thread that sees it sees the kind and threshold it goes with */
  atomic_store_explicit(&c->err_num, 0, memory_order_relaxed);
  atomic_store_explicit(&c->err_kind, (uint32_t)kind, memory_order_relaxed);
  atomic_store_explicit(&c->err_qd, queue_depth, memory_order_relaxed);
  atomic_store_explicit(&c->err_num, num, memory_order_release);
}

void stor_fault_resume(struct stor_backend *be) {
  struct fault_backend *f = live_filter(be);
  if (!f) return;
  /* as SPDK's bdev_error_resume_pending: nothing more is held, and what is held goes on to the backend */
  for (unsigned i = 0; i < FAULT_NOPS; i++)
    if (atomic_load_explicit(&f->ctl[i].err_kind, memory_order_relaxed) == STOR_FAULT_PENDING)
      atomic_store_explicit(&f->ctl[i].err_num, 0, memory_order_relaxed);
  atomic_fetch_add_explicit(&f->resume_gen, 1, memory_order_release);
}

/* ---- N-API: bdevWrap, faultSetLatency, faultInjectError, faultResume, faultState ---- */
#include "sys/napi_util.h"

static const char *const op_names[FAULT_NOPS] = {"read", "write", "flush", "unmap", "write_zeroes"};

static struct fault_backend *live_arg(napi_env env, napi_value v) {
  struct stor_backend *be = backend_from_js(env, v);
  if (!be) return NULL;
  struct fault_backend *f = live_filter(be);
  if (!f) throw_msg(env, "not a fault-injection wrapper (made by bdevWrap): %s", be->desc);
  return f;
}

/* bdevWrap(base, {fault properties}) -> a new backend handle: the live filter over base, which stays open */
static napi_value js_bdev_wrap(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct stor_backend *inner = backend_from_js(env, argv[0]);
  if (!inner) return NULL;
  struct stor_kv kv[16];
  struct kv_strings strings;
  int n = kv_from_js(env, argv[1], "bdevWrap(base, props)", kv, 16, &strings);
  if (n < 0) return NULL;
  for (int i = 0; i < n; i++)
    if (!stor_fault_key(kv[i].key)) {
      throw_msg(env, "bdevWrap: '%s' is not a fault property", kv[i].key);
      kv_strings_free(&strings);
      return NULL;
    }
  char err[256] = "";
  struct stor_backend *out;
  int r = stor_fault_wrap_live(inner, kv, (size_t)n, &out, err, sizeof err);
  kv_strings_free(&strings);
  if (r < 0) return throw_msg(env, "%s", err[0] ? err : strerror(-r));
  return backend_wrap(env, out);
}

static int op_arg(napi_env env, napi_value v, const char *const *names, unsigned count) {
  char s[32];
  if (!arg_str(env, v, s, sizeof s)) return -1;
  for (unsigned i = 0; i < count; i++)
    if (names[i] && !strcmp(s, names[i])) return (int)i;
  return -1;
}

/* faultSetLatency(h, 'read'|'write'|..., 'avg'|'p99', microseconds) */
static napi_value js_fault_set_latency(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  struct fault_backend *f = live_arg(env, argv[0]);
  if (!f) return NULL;
  static const char *const which[] = {"avg", "p99"};
  int op = op_arg(env, argv[1], op_names, FAULT_NOPS), w = op_arg(env, argv[2], which, 2);
  uint64_t us;
  if (op < 0 || w < 0 || !arg_u64(env, argv[3], &us) || us > 3600000000ull)
    return throw_msg(env, "faultSetLatency(h, op, 'avg'|'p99', us): op read|write|flush|unmap|write_zeroes, us <= 1 h");
  stor_fault_set_latency(&f->base, (enum stor_op)op, w == 1, us * 1000);
  return make_undefined(env);
}

/* faultInjectError(h, op, 'none'|'failure'|'pending', num, queueDepth) */
static napi_value js_fault_inject_error(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  struct fault_backend *f = live_arg(env, argv[0]);
  if (!f) return NULL;
  static const char *const kinds[] = {"none", "failure", "pending"};
  int op = op_arg(env, argv[1], op_names, FAULT_NOPS), k = op_arg(env, argv[2], kinds, 3);
  uint32_t num;
  uint64_t qd;
  if (op < 0 || k < 0 || !arg_u32(env, argv[3], &num) || !arg_u64(env, argv[4], &qd))
    return throw_msg(env, "faultInjectError(h, op, 'none'|'failure'|'pending', num, queueDepth)");
  stor_fault_set_error(&f->base, (enum stor_op)op, (enum stor_fault_error)k, num, qd);
  return make_undefined(env);
}

static napi_value js_fault_resume(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct fault_backend *f = live_arg(env, argv[0]);
  if (!f) return NULL;
  stor_fault_resume(&f->base);
  return make_undefined(env);
}

/* faultState(h) -> {held, ops: {read: {avgUs, p99Us, error, num, queueDepth}, ...}} */
static napi_value js_fault_state(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct fault_backend *f = live_arg(env, argv[0]);
  if (!f) return NULL;
  static const char *const kinds[] = {"none", "failure", "pending"};
  napi_value o, ops;
  napi_create_object(env, &o);
  napi_create_object(env, &ops);
  set_prop(env, o, "held", make_u32(env, atomic_load(&f->held)));
  for (unsigned i = 0; i < FAULT_NOPS; i++) {
    struct fault_op_ctl *c = &f->ctl[i];
    napi_value e, s;
    napi_create_object(env, &e);
    set_prop(env, e, "avgUs", make_f64(env, (double)(atomic_load(&c->avg_ns) / 1000)));
    set_prop(env, e, "p99Us", make_f64(env, (double)(atomic_load(&c->p99_ns) / 1000)));
    uint32_t k = atomic_load(&c->err_kind);
    napi_create_string_utf8(env, kinds[k < 3 ? k : 0], NAPI_AUTO_LENGTH, &s);
    set_prop(env, e, "error", s);
    set_prop(env, e, "num", make_u32(env, atomic_load(&c->err_num)));
    set_prop(env, e, "queueDepth", make_f64(env, (double)atomic_load(&c->err_qd)));
    set_prop(env, ops, op_names[i], e);
  }
  set_prop(env, o, "ops", ops);
  return o;
}

void fault_napi_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "bdevWrap", js_bdev_wrap);
  export_fn(env, exports, "faultSetLatency", js_fault_set_latency);
  export_fn(env, exports, "faultInjectError", js_fault_inject_error);
  export_fn(env, exports, "faultResume", js_fault_resume);
  export_fn(env, exports, "faultState", js_fault_state);
}
