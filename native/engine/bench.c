/* The benchmark engine: one native thread per queue generates a workload, submits it to any
 * backend (a remote vhost-user-blk device, a file or block device through io_uring, null, mem),
 * reaps completions by notification, by polling, or adaptively (the shared queue loop), and keeps a log-linear latency
 * histogram, per-thread CPU time and IOPS over time. JavaScript only configures and reports. */
#include "sys/clock.h"
#include "bdev/bdev.h"
#include "export/queue_loop.h"
#include "sys/napi_util.h"
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Histogram: values in ns; 64 linear sub-buckets per power of two (< 1.6% error), up to 2^44 ns. */
#define HIST_SUB_BITS 6
#define HIST_SUB      (1 << HIST_SUB_BITS)
#define HIST_MAGS     45
#define HIST_BUCKETS  (HIST_MAGS * HIST_SUB)

static unsigned hist_index(uint64_t v) {
  if (v < HIST_SUB) return (unsigned)v;
  unsigned msb = 63 - (unsigned)__builtin_clzll(v);
  unsigned mag = msb - HIST_SUB_BITS + 1;
  if (mag >= HIST_MAGS) return HIST_BUCKETS - 1;
  return mag * HIST_SUB + (unsigned)((v >> (mag - 1)) & (HIST_SUB - 1));
}
/* The lowest value that lands in bucket i. */
static uint64_t hist_value(unsigned i) {
  unsigned mag = i / HIST_SUB, sub = i % HIST_SUB;
  if (mag == 0) return sub;
  return ((uint64_t)(HIST_SUB + sub)) << (mag - 1);
}

enum rw { RW_READ, RW_WRITE, RW_RANDREAD, RW_RANDWRITE, RW_RANDRW, RW_RW };

struct bench_cfg {
  enum rw rw;
  unsigned rwmixread; /* percent reads for rw/randrw */
  uint32_t bs;
  uint32_t iodepth;
  uint32_t threads;
  uint64_t offset, span; /* the byte range the workload touches */
  uint64_t runtime_ns, ramp_ns;
  enum stor_completion_mode wait;
  uint32_t spin_us;        /* the spin budget of adaptive mode */
  bool refill_after_drain; /* after a wake-up, reap until a look finds nothing before refilling */
  bool verify;
  uint64_t seed;
  uint32_t tick_ms; /* timeline bucket width */
};

#define VERIFY_MAGIC 0x73746f7276657269ull /* "storveri" */

struct bench_io {
  struct stor_req req; /* first member: completion gets the io back */
  struct iovec iov;
  struct bench_thread *t;
  uint64_t t_submit;
  uint64_t block;
  uint32_t gen;
  bool write;
};

struct bench_thread {
  struct bench_cfg *cfg;
  struct stor_backend *be;
  struct stor_bqueue *bq;
  unsigned index;
  pthread_t thread;
  struct bench_io *ios;
  uint8_t *bufs;
  bool bufs_owned;
  uint32_t *free_ios;
  unsigned free_top;
  unsigned inflight;
  uint64_t rng;
  uint64_t seq_next; /* sequential workloads: next block */
  uint64_t nblocks;  /* blocks in this thread's share (block index = k * threads + index) */
  uint32_t *gens;    /* verify: last completed write generation per block of the share */
  uint8_t *busy;     /* verify: a block with an I/O in flight */
  uint64_t t_start, t_measure, t_end;
  bool measuring;
  /* results */
  uint64_t hist[HIST_BUCKETS];
  uint64_t ios_read, ios_write, bytes_read, bytes_write, errors, verify_failures, verified;
  uint64_t lat_min, lat_max, lat_sum;
  uint64_t *timeline;
  unsigned timeline_len;
  double cpu_user, cpu_sys;
  uint64_t ctx_voluntary, ctx_involuntary; /* context switches over the measured window */
  int error;                               /* -errno that stopped the thread early */
  char errmsg[160];
  uint64_t first_bad_offset;
  bool ring_full;                /* the backend said BUSY: submit no more until something completes */
  atomic_uint_fast64_t progress; /* completed I/Os, for live display (published once per pass) */
  uint64_t completed;            /* completed I/Os: the thread's own count behind progress */
  /* One clock read per batch, as blkio-bench does: every I/O of a submission batch is stamped with
   * the time the batch started, every completion of a reap pass with the time the pass saw its
   * first completion. 0: not read yet in this pass. */
  uint64_t batch_now;
  uint64_t reap_now;
  unsigned reap_tick;
  int wait_fd;            /* --refill drain: epoll on the backend's completion fd (-1: not yet; -2: unusable) */
  struct stor_qloop loop; /* how this thread waits for completions */
};

static inline uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* Verify pattern: a header {magic, offset, generation, seed} then a stream derived from it. */
static void fill_pattern(uint8_t *p, uint32_t len, uint64_t offset, uint32_t gen, uint64_t seed) {
  uint64_t h[4] = {VERIFY_MAGIC, offset, gen, seed};
  uint64_t s = offset * 0x9e3779b97f4a7c15ull ^ ((uint64_t)gen << 32) ^ seed ^ 1;
  uint64_t *w = (uint64_t *)p;
  for (uint32_t i = 0; i < len / 8; i++) w[i] = i < 4 ? h[i] : xorshift(&s);
}
static bool check_pattern(const uint8_t *p, uint32_t len, uint64_t offset, uint32_t gen, uint64_t seed) {
  uint64_t s = offset * 0x9e3779b97f4a7c15ull ^ ((uint64_t)gen << 32) ^ seed ^ 1;
  const uint64_t *w = (const uint64_t *)p;
  if (w[0] != VERIFY_MAGIC || w[1] != offset || w[2] != gen || w[3] != seed) return false;
  for (uint32_t i = 4; i < len / 8; i++)
    if (w[i] != xorshift(&s)) return false;
  return true;
}

static void io_complete(struct stor_req *r) {
  struct bench_io *io = (struct bench_io *)r;
  struct bench_thread *t = io->t;
  t->inflight--;
  t->free_ios[t->free_top++] = (uint32_t)(io - t->ios);
  if (t->cfg->verify) t->busy[io->block] = 0;
  t->completed++;
  if (r->result < 0) {
    t->errors++;
    if (!t->error) {
      t->error = r->result;
      snprintf(t->errmsg, sizeof t->errmsg, "%s at offset %llu: %s", io->write ? "write" : "read",
               (unsigned long long)r->offset, strerror(-r->result));
    }
    return;
  }
  if (t->cfg->verify) {
    if (io->write)
      t->gens[io->block] = io->gen;
    else if (t->gens[io->block]) {
      t->verified++;
      if (!check_pattern(io->iov.iov_base, t->cfg->bs, r->offset, t->gens[io->block], t->cfg->seed)) {
        if (!t->verify_failures) t->first_bad_offset = r->offset;
        t->verify_failures++;
      }
    }
  }
  if (!t->measuring || io->t_submit < t->t_measure) return;
  if (!t->reap_now) {
    t->reap_now = stor_now_ns();
    t->reap_tick = (unsigned)((t->reap_now - t->t_measure) / (t->cfg->tick_ms * 1000000ull));
  }
  uint64_t lat = t->reap_now - io->t_submit;
  t->hist[hist_index(lat)]++;
  if (lat < t->lat_min) t->lat_min = lat;
  if (lat > t->lat_max) t->lat_max = lat;
  t->lat_sum += lat;
  if (io->write) {
    t->ios_write++;
    t->bytes_write += t->cfg->bs;
  } else {
    t->ios_read++;
    t->bytes_read += t->cfg->bs;
  }
  if (t->reap_tick < t->timeline_len) t->timeline[t->reap_tick]++;
}

/* Picks the next block of this thread's share; false if every candidate is busy (verify). */
static bool next_block(struct bench_thread *t, uint64_t *block) {
  struct bench_cfg *c = t->cfg;
  bool random = c->rw == RW_RANDREAD || c->rw == RW_RANDWRITE || c->rw == RW_RANDRW;
  for (int tries = 0; tries < 16; tries++) {
    /* multiply-shift instead of a 64-bit division per I/O */
    uint64_t k = random ? (uint64_t)(((unsigned __int128)xorshift(&t->rng) * t->nblocks) >> 64) : t->seq_next;
    if (!random && ++t->seq_next == t->nblocks) t->seq_next = 0;
    if (!c->verify || !t->busy[k]) {
      *block = k;
      return true;
    }
  }
  return false;
}

static bool pick_write(struct bench_thread *t) {
  switch (t->cfg->rw) {
  case RW_READ:
  case RW_RANDREAD: return false;
  case RW_WRITE:
  case RW_RANDWRITE: return true;
  default: return (xorshift(&t->rng) % 100) >= t->cfg->rwmixread;
  }
}

static bool submit_one(struct bench_thread *t, bool write, uint64_t k, uint32_t gen) {
  struct bench_cfg *c = t->cfg;
  uint32_t slot = t->free_ios[--t->free_top];
  struct bench_io *io = &t->ios[slot];
  uint64_t off = c->offset + (k * c->threads + t->index) * (uint64_t)c->bs;
  io->block = k;
  io->write = write;
  io->gen = gen;
  memset(&io->req, 0, sizeof io->req);
  io->req.op = write ? STOR_OP_WRITE : STOR_OP_READ;
  io->req.offset = off;
  io->req.length = c->bs;
  io->iov.iov_base = t->bufs + (size_t)slot * c->bs;
  io->iov.iov_len = c->bs;
  io->req.iov = &io->iov;
  io->req.niov = 1;
  io->req.complete = io_complete;
  if (write && c->verify) fill_pattern(io->iov.iov_base, c->bs, off, gen, c->seed);
  if (c->verify) t->busy[k] = 1;
  t->inflight++;
  if (!t->batch_now) t->batch_now = stor_now_ns();
  io->t_submit = t->batch_now;
  if (t->be->ops->submit(t->bq, &io->req) == STOR_SUBMIT_BUSY) {
    /* back-pressure, not an I/O: give the slot back; the caller reaps before submitting more */
    t->inflight--;
    t->free_ios[t->free_top++] = slot;
    if (c->verify) t->busy[k] = 0;
    t->ring_full = true;
    return false;
  }
  t->reap_now = 0; /* synchronous backends complete inside submit: their next completion reads the clock */
  return true;
}

/* --refill drain sleeps the way an event-loop application does: on the completion fd, every time,
 * even when completions are already waiting (then the fd is already readable and epoll_wait returns
 * at once), exactly as blkio-bench's notify loop does. Backends without a completion fd (in-process
 * ones) and a queue with nothing in flight use the backend's own wait. */
static void wait_on_completion_fd(struct bench_thread *t) {
  const struct stor_backend_ops *ops = t->be->ops;
  int fd = ops->event_fd(t->bq);
  if (fd < 0 || !t->inflight) {
    ops->reap(t->bq, true);
    return;
  }
  if (t->wait_fd < 0) {
    t->wait_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (t->wait_fd < 0 || epoll_ctl(t->wait_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      if (t->wait_fd >= 0) close(t->wait_fd);
      t->wait_fd = -2; /* never again: fall back to the backend's wait */
    }
    if (ops->arm) ops->arm(t->bq); /* first sleep: nothing armed the fd yet */
  }
  if (t->wait_fd == -2) {
    ops->reap(t->bq, true);
    return;
  }
  struct epoll_event ev;
  /* a second without a completion: let the backend's own wait decide (it also notices a dead server) */
  if (epoll_wait(t->wait_fd, &ev, 1, 1000) != 1) {
    ops->reap(t->bq, true);
    return;
  }
  uint64_t v;
  if (read(fd, &v, sizeof v) < 0) { /* another reader got it: harmless */
  }
  ops->reap(t->bq, false);
}

/* --refill drain: what blkio-bench and event-driven libblkio applications do after a wake-up —
 * look again until a look finds nothing, then arm notification and look once more (a completion
 * can land between the last look and arming); only then refill. Each look stamps its own
 * completions, as blkio-bench does. Arms even with nothing in flight: the refill that follows
 * sleeps on the fd. */
static void drain_after_wakeup(struct bench_thread *t) {
  const struct stor_backend_ops *ops = t->be->ops;
  for (;;) {
    t->reap_now = 0; /* a look that finds nothing leaves it 0 for the arm's own look */
    if (t->inflight && ops->reap(t->bq, false) > 0) continue;
    if (!ops->arm || ops->arm(t->bq) == 0) break;
  }
}

/* Sleeps until something completes, the way --refill asks. */
static void sleep_for_completions(struct bench_thread *t) {
  if (t->cfg->refill_after_drain) {
    wait_on_completion_fd(t);
    drain_after_wakeup(t);
  } else
    t->be->ops->reap(t->bq, true);
}

static int bench_poll(void *ctx) {
  struct bench_thread *t = ctx;
  int n = t->be->ops->reap(t->bq, false);
  return n > 0 ? n : !t->inflight;
}
static int bench_sleep(void *ctx) {
  sleep_for_completions(ctx);
  return 1;
}
static const struct stor_qloop_ops bench_loop_ops = {.poll = bench_poll, .sleep = bench_sleep};

/* Waits for at least one completion in the configured way (the shared queue loop). */
static void reap(struct bench_thread *t) {
  t->reap_now = 0;
  stor_qloop_wait(&t->loop, &bench_loop_ops, t);
}

static void drain(struct bench_thread *t) {
  while (t->inflight) {
    t->be->ops->commit(t->bq);
    reap(t);
  }
  atomic_store_explicit(&t->progress, t->completed, memory_order_relaxed);
}

/* Writes this thread's whole share once so that every later read can be verified. */
static void prefill(struct bench_thread *t) {
  for (uint64_t k = 0; k < t->nblocks && !t->error;) {
    t->batch_now = 0;
    for (unsigned n = 0; n < t->cfg->iodepth && t->inflight < t->cfg->iodepth && k < t->nblocks; n++) {
      submit_one(t, true, k++, 1);
      if (t->ring_full) {
        t->ring_full = false;
        k--;
        break;
      }
    }
    t->be->ops->commit(t->bq);
    reap(t);
    atomic_store_explicit(&t->progress, t->completed, memory_order_relaxed);
  }
  drain(t);
}

static void *bench_thread_main(void *arg) {
  struct bench_thread *t = arg;
  struct bench_cfg *c = t->cfg;
  const struct stor_backend_ops *ops = t->be->ops;
  char name[16];
  snprintf(name, sizeof name, "stor-bench%u", t->index);
  pthread_setname_np(pthread_self(), name);
  struct rusage ru0, ru1;
  getrusage(RUSAGE_THREAD, &ru0);
  t->lat_min = UINT64_MAX;
  uint32_t gen = 1;
  if (c->verify && c->rw != RW_WRITE && c->rw != RW_RANDWRITE) {
    prefill(t);
    gen = 2;
  }
  t->t_start = stor_now_ns();
  t->t_measure = t->t_start + c->ramp_ns;
  t->t_end = t->t_measure + c->runtime_ns;
  if (!c->ramp_ns) t->measuring = true;
  uint64_t now = t->t_start;
  while (now < t->t_end && !t->error) {
    t->batch_now = 0;
    /* at most iodepth per pass: synchronous backends complete inside submit */
    for (unsigned n = 0; n < c->iodepth && t->inflight < c->iodepth; n++) {
      uint64_t k;
      if (!next_block(t, &k)) break;
      bool w = pick_write(t);
      submit_one(t, w, k, w ? gen++ : 0);
      if (gen == 0) gen = 1;
      if (t->ring_full) {
        t->ring_full = false;
        if (w) gen--;
        break;
      }
    }
    ops->commit(t->bq);
    reap(t);
    atomic_store_explicit(&t->progress, t->completed, memory_order_relaxed);
    now = t->reap_now ? t->reap_now : stor_now_ns();
    if (!t->measuring && now >= t->t_measure) {
      t->measuring = true;
      getrusage(RUSAGE_THREAD, &ru0); /* CPU is measured over the measured window only */
    }
  }
  drain(t);
  getrusage(RUSAGE_THREAD, &ru1);
  t->cpu_user = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
  t->cpu_sys = (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
  t->ctx_voluntary = (uint64_t)(ru1.ru_nvcsw - ru0.ru_nvcsw);
  t->ctx_involuntary = (uint64_t)(ru1.ru_nivcsw - ru0.ru_nivcsw);
  return NULL;
}

/* ---- N-API: benchRun(backend, cfg, bufferPool?) -> {promise, progress()} ------------------------ */

struct bench_job {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref backend_ref, pool_ref, running;
  struct stor_backend *be;
  struct bench_cfg cfg;
  struct bench_thread *threads;
  uint8_t *pool;
  size_t pool_len;
  double wall_seconds;
  char error[200];
  atomic_bool done;
};

static void job_execute(napi_env env, void *data) {
  struct bench_job *j = data;
  struct bench_cfg *c = &j->cfg;
  uint64_t per_buf = (uint64_t)c->bs * c->iodepth;
  uint64_t blocks = c->span / c->bs;
  unsigned started = 0;
  for (unsigned i = 0; i < c->threads; i++) {
    struct bench_thread *t = &j->threads[i];
    t->cfg = c;
    t->be = j->be;
    t->index = i;
    t->wait_fd = -1;
    stor_qloop_init(&t->loop, c->wait, c->spin_us);
    t->rng = c->seed * 0x9e3779b97f4a7c15ull + i * 0x632be59bd9b4e019ull + 1;
    t->nblocks = blocks / c->threads + (i < blocks % c->threads ? 1 : 0);
    int r = j->be->ops->queue_open(j->be, c->iodepth, &t->bq);
    if (r < 0) {
      snprintf(j->error, sizeof j->error, "queue %u: %s", i,
               r == -EBUSY ? "the target has fewer queues than --queues" : strerror(-r));
      break;
    }
    t->ios = calloc(c->iodepth, sizeof *t->ios);
    t->free_ios = calloc(c->iodepth, sizeof *t->free_ios);
    for (unsigned k = 0; k < c->iodepth; k++) {
      t->free_ios[k] = k;
      t->ios[k].t = t;
    }
    t->free_top = c->iodepth;
    if (j->pool && j->pool_len >= per_buf * c->threads)
      t->bufs = j->pool + per_buf * i;
    else {
      if (posix_memalign((void **)&t->bufs, 4096, per_buf)) t->bufs = NULL;
      t->bufs_owned = true;
      if (t->bufs) memset(t->bufs, 0xa5, per_buf);
    }
    if (c->verify) {
      t->gens = calloc(t->nblocks, sizeof *t->gens);
      t->busy = calloc(t->nblocks, 1);
    }
    t->timeline_len = (unsigned)(c->runtime_ns / (c->tick_ms * 1000000ull)) + 2;
    t->timeline = calloc(t->timeline_len, sizeof *t->timeline);
    if (!t->ios || !t->free_ios || !t->bufs || !t->timeline || (c->verify && (!t->gens || !t->busy))) {
      snprintf(j->error, sizeof j->error, "out of memory for queue %u", i);
      j->be->ops->queue_close(t->bq);
      t->bq = NULL;
      break;
    }
    started++;
  }
  if (started == c->threads) {
    uint64_t t0 = stor_now_ns();
    for (unsigned i = 0; i < c->threads; i++)
      pthread_create(&j->threads[i].thread, NULL, bench_thread_main, &j->threads[i]);
    for (unsigned i = 0; i < c->threads; i++) pthread_join(j->threads[i].thread, NULL);
    j->wall_seconds = (stor_now_ns() - t0) / 1e9;
  }
  for (unsigned i = 0; i < c->threads; i++) {
    if (j->threads[i].wait_fd >= 0) close(j->threads[i].wait_fd);
    if (j->threads[i].bq) j->be->ops->queue_close(j->threads[i].bq);
  }
  atomic_store(&j->done, true);
}

static void job_free(napi_env env, struct bench_job *j) {
  for (unsigned i = 0; i < j->cfg.threads; i++) {
    struct bench_thread *t = &j->threads[i];
    free(t->ios);
    free(t->free_ios);
    free(t->gens);
    free(t->busy);
    free(t->timeline);
    t->ios = NULL;
    t->free_ios = NULL;
    t->gens = NULL;
    t->busy = NULL;
    t->timeline = NULL;
    if (t->bufs_owned) free(t->bufs);
    t->bufs = NULL;
  }
  /* j and j->threads stay until the progress function is collected (job_finalize) */
  stor_backend_put(j->be);
  j->be = NULL;
  napi_delete_reference(env, j->backend_ref);
  if (j->pool_ref) napi_delete_reference(env, j->pool_ref);
  napi_delete_async_work(env, j->work);
  napi_delete_reference(env, j->running); /* the thread is done: progress may now be collected */
}

static void job_finalize(napi_env env, void *data, void *hint) {
  struct bench_job *j = data;
  free(j->threads);
  free(j);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  struct bench_job *j = data;
  if (j->error[0]) {
    napi_value m, e;
    napi_create_string_utf8(env, j->error, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    napi_reject_deferred(env, j->deferred, e);
    job_free(env, j);
    return;
  }
  napi_value res, threads;
  napi_create_object(env, &res);
  napi_create_array_with_length(env, j->cfg.threads, &threads);
  /* merged histogram: [[valueNs, count], ...] over non-empty buckets */
  static uint64_t merged[HIST_BUCKETS];
  memset(merged, 0, sizeof merged);
  for (unsigned i = 0; i < j->cfg.threads; i++) {
    struct bench_thread *t = &j->threads[i];
    for (unsigned b = 0; b < HIST_BUCKETS; b++) merged[b] += t->hist[b];
    napi_value o, tl;
    napi_create_object(env, &o);
#define F(name, v) set_prop(env, o, name, make_f64(env, (double)(v)))
    F("readIos", t->ios_read);
    F("writeIos", t->ios_write);
    F("readBytes", t->bytes_read);
    F("writeBytes", t->bytes_write);
    F("errors", t->errors);
    F("verifyFailures", t->verify_failures);
    F("verified", t->verified);
    F("latMinNs", t->lat_min == UINT64_MAX ? 0 : t->lat_min);
    F("latMaxNs", t->lat_max);
    F("latSumNs", t->lat_sum);
    F("cpuUser", t->cpu_user);
    F("cpuSys", t->cpu_sys);
    F("ctxVoluntary", t->ctx_voluntary);
    F("ctxInvoluntary", t->ctx_involuntary);
    F("firstBadOffset", t->first_bad_offset);
#undef F
    if (t->errmsg[0]) {
      napi_value s;
      napi_create_string_utf8(env, t->errmsg, NAPI_AUTO_LENGTH, &s);
      set_prop(env, o, "error", s);
    }
    napi_create_array_with_length(env, t->timeline_len, &tl);
    for (unsigned k = 0; k < t->timeline_len; k++) napi_set_element(env, tl, k, make_f64(env, (double)t->timeline[k]));
    set_prop(env, o, "timeline", tl);
    napi_set_element(env, threads, i, o);
  }
  napi_value hist;
  napi_create_array(env, &hist);
  uint32_t hn = 0;
  for (unsigned b = 0; b < HIST_BUCKETS; b++) {
    if (!merged[b]) continue;
    napi_value pair;
    napi_create_array_with_length(env, 2, &pair);
    napi_set_element(env, pair, 0, make_f64(env, (double)hist_value(b)));
    napi_set_element(env, pair, 1, make_f64(env, (double)merged[b]));
    napi_set_element(env, hist, hn++, pair);
  }
  set_prop(env, res, "threads", threads);
  set_prop(env, res, "histogram", hist);
  set_prop(env, res, "wallSeconds", make_f64(env, j->wall_seconds));
  set_prop(env, res, "tickMs", make_u32(env, j->cfg.tick_ms));
  napi_resolve_deferred(env, j->deferred, res);
  job_free(env, j);
}

static napi_value js_bench_progress(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  void *data;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, NULL, &self, &data));
  struct bench_job *j = data;
  uint64_t n = 0;
  if (j)
    for (unsigned i = 0; i < j->cfg.threads; i++) n += atomic_load(&j->threads[i].progress);
  return make_f64(env, (double)n);
}

static int parse_rw(const char *s, enum rw *out) {
  static const char *names[] = {"read", "write", "randread", "randwrite", "randrw", "rw"};
  for (int i = 0; i < 6; i++)
    if (!strcmp(s, names[i])) {
      *out = (enum rw)i;
      return 0;
    }
  return -1;
}

/* benchRun(backend, {rw, rwmixread, bs, iodepth, threads, offset, span, runtimeMs, rampMs, wait,
 *          spinUs, verify, seed, tickMs}, bufferPool?) -> {promise, progress()} */
static napi_value js_bench_run(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  struct bench_job *j = calloc(1, sizeof *j);
  struct bench_cfg *c = &j->cfg;
  char rw[16], wait[16], refill[16];
  uint32_t runtime_ms, ramp_ms;
  if (!prop_str(env, argv[1], "rw", rw, sizeof rw, "randread") ||
      !prop_u32(env, argv[1], "rwmixread", &c->rwmixread, 50) || !prop_u32(env, argv[1], "bs", &c->bs, 4096) ||
      !prop_u32(env, argv[1], "iodepth", &c->iodepth, 1) || !prop_u32(env, argv[1], "threads", &c->threads, 1) ||
      !prop_u64(env, argv[1], "offset", &c->offset, 0) ||
      !prop_u64(env, argv[1], "span", &c->span, be->props.capacity) ||
      !prop_u32(env, argv[1], "runtimeMs", &runtime_ms, 5000) || !prop_u32(env, argv[1], "rampMs", &ramp_ms, 0) ||
      !prop_str(env, argv[1], "wait", wait, sizeof wait, "notify") ||
      !prop_u32(env, argv[1], "spinUs", &c->spin_us, STOR_SPIN_US_DEFAULT) ||
      !prop_bool(env, argv[1], "verify", &c->verify, false) || !prop_u64(env, argv[1], "seed", &c->seed, 1) ||
      !prop_str(env, argv[1], "refill", refill, sizeof refill, "eager") ||
      !prop_u32(env, argv[1], "tickMs", &c->tick_ms, 100)) {
    free(j);
    return NULL;
  }
  if (parse_rw(rw, &c->rw)) {
    free(j);
    return throw_msg(env, "rw must be read, write, randread, randwrite, randrw or rw");
  }
  if (strcmp(refill, "eager") && strcmp(refill, "drain")) {
    free(j);
    return throw_msg(env, "refill must be eager or drain");
  }
  c->refill_after_drain = !strcmp(refill, "drain");
  int mode = stor_completion_mode_parse(wait);
  if (mode < 0) {
    free(j);
    return throw_msg(env, "wait must be notify, poll or adaptive");
  }
  c->wait = (enum stor_completion_mode)mode;
  c->runtime_ns = runtime_ms * 1000000ull;
  c->ramp_ns = ramp_ms * 1000000ull;
  if (!c->tick_ms) c->tick_ms = 100;
  if (!c->bs || c->bs % 512 || c->bs > (64u << 20)) {
    free(j);
    return throw_msg(env, "bs must be a multiple of 512 up to 64 MiB");
  }
  if (!c->iodepth || c->iodepth > 4096 || !c->threads || c->threads > 64) {
    free(j);
    return throw_msg(env, "iodepth 1..4096, threads 1..64");
  }
  if (c->offset + c->span > be->props.capacity || c->span / c->bs < c->threads) {
    free(j);
    return throw_msg(env, "the range is outside the target or smaller than one block per thread");
  }
  if (be->props.readonly && c->rw != RW_READ && c->rw != RW_RANDREAD) {
    free(j);
    return throw_msg(env, "the target is read-only");
  }
  j->be = be;
  be->refs++; /* the job's own reference: closing the handle meanwhile leaves the backend to us */
  j->threads = calloc(c->threads, sizeof *j->threads);
  napi_create_reference(env, argv[0], 1, &j->backend_ref);
  if (argc > 2) {
    void *p;
    size_t len;
    if (arg_buffer(env, argv[2], &p, &len)) {
      j->pool = p;
      j->pool_len = len;
      napi_create_reference(env, argv[2], 1, &j->pool_ref);
    }
  }
  return start_job(env, "stor-bench", job_execute, job_complete, j, &j->work, &j->deferred, &j->running,
                   js_bench_progress, job_finalize);
}

void bench_init(napi_env env, napi_value exports) { export_fn(env, exports, "benchRun", js_bench_run); }
