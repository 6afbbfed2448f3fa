/* The copy engine behind `stor copy`: native threads, one per queue pair, each keeping up to
 * iodepth chunks in flight (read from the source, then write — or write-zeroes for an all-zero
 * chunk — to the destination), then an optional verify pass that reads both sides back and
 * compares. Works between any two backends (vhost-user, io_uring file/device, null, mem). */
#include "bdev/bdev.h"
#include "export/queue_loop.h"
#include "sys/napi_util.h"
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum chunk_state { CH_FREE, CH_READ, CH_WRITE, CH_VERIFY };

struct copy_chunk {
  struct stor_req req;  /* first: the completion finds the chunk */
  struct stor_req req2; /* verify: the destination read */
  struct iovec iov, iov2;
  struct copy_thread *t;
  enum chunk_state state;
  uint64_t off, len;
  int pending; /* verify: reads outstanding */
  uint8_t *buf, *buf2;
};

struct copy_cfg {
  uint64_t src_off, dst_off, length, chunk;
  uint32_t queues, iodepth;
  bool verify, zero_detect, flush;
};

/* A request a backend answered BUSY to, waiting for room. */
struct pending_submit {
  struct stor_backend *be;
  struct stor_bqueue *q;
  struct stor_req *r;
};

struct copy_thread {
  struct copy_cfg *cfg;
  /* BUSY requests, oldest first (a ring of 2 * iodepth + 1: each chunk has at most two requests);
   * submitted again, in order, before anything new */
  struct pending_submit *pending;
  unsigned pending_head, pending_n, pending_cap;
  struct stor_backend *src, *dst;
  struct stor_bqueue *sq, *dq;
  unsigned index;
  pthread_t thread;
  struct copy_chunk *chunks;
  uint64_t next; /* next chunk index k (this thread does k = index + n*queues) */
  uint64_t nchunks;
  unsigned busy;
  bool verifying;
  int error;
  char errmsg[200];
  uint64_t mismatches, first_mismatch;
  atomic_uint_fast64_t bytes_copied, bytes_verified, zero_bytes;
  struct stor_qloop loop; /* how this thread waits for completions (notify) */
};

static void chunk_done(struct stor_req *r);
static void chunk_done2(struct stor_req *r);
static void verify_dst_done(struct stor_req *r);

static void fail(struct copy_thread *t, const char *what, uint64_t off, int err) {
  if (t->error) return;
  t->error = err;
  snprintf(t->errmsg, sizeof t->errmsg, "%s at offset %llu: %s", what, (unsigned long long)off, strerror(-err));
}

static bool all_zero(const uint8_t *p, uint64_t n) {
  const uint64_t *w = (const uint64_t *)p;
  for (uint64_t i = 0; i < n / 8; i++)
    if (w[i]) return false;
  for (uint64_t i = n & ~7ull; i < n; i++)
    if (p[i]) return false;
  return true;
}

/* Submits, or queues behind earlier BUSY requests: a full backend queue is back-pressure. */
static void submit_or_defer(struct copy_thread *t, struct stor_backend *be, struct stor_bqueue *q, struct stor_req *r) {
  if (!t->pending_n && be->ops->submit(q, r) == STOR_SUBMIT_QUEUED) return;
  t->pending[(t->pending_head + t->pending_n++) % t->pending_cap] = (struct pending_submit){be, q, r};
}

static void retry_pending(struct copy_thread *t) {
  while (t->pending_n) {
    struct pending_submit *p = &t->pending[t->pending_head];
    if (p->be->ops->submit(p->q, p->r) == STOR_SUBMIT_BUSY) return;
    t->pending_head = (t->pending_head + 1) % t->pending_cap;
    t->pending_n--;
  }
}

static void start_req_flags(struct copy_thread *t, struct stor_backend *be, struct stor_bqueue *q, struct stor_req *r,
                            uint8_t op, uint64_t off, uint64_t len, struct iovec *iov, void (*cb)(struct stor_req *),
                            uint8_t flags) {
  memset(r, 0, sizeof *r);
  r->op = op;
  r->offset = off;
  r->length = len;
  r->complete = cb;
  r->flags = flags;
  if (iov) {
    r->iov = iov;
    r->niov = 1;
  }
  submit_or_defer(t, be, q, r);
}

static void start_req(struct copy_thread *t, struct stor_backend *be, struct stor_bqueue *q, struct stor_req *r,
                      uint8_t op, uint64_t off, uint64_t len, struct iovec *iov, void (*cb)(struct stor_req *)) {
  start_req_flags(t, be, q, r, op, off, len, iov, cb, 0);
}

static void chunk_done(struct stor_req *r) {
  struct copy_chunk *c = (struct copy_chunk *)r;
  struct copy_thread *t = c->t;
  struct copy_cfg *cfg = t->cfg;
  if (r->result < 0) {
    fail(t,
         c->state == CH_READ    ? "read from the source"
         : c->state == CH_WRITE ? "write to the destination"
                                : "verify read of the source",
         c->off, r->result);
    c->state = CH_FREE;
    t->busy--;
    return;
  }
  switch (c->state) {
  case CH_READ:
    c->state = CH_WRITE;
    if (cfg->zero_detect && t->dst->props.can_write_zeroes && all_zero(c->buf, c->len)) {
      atomic_fetch_add(&t->zero_bytes, c->len);
      /* UNMAP allowed: the destination may deallocate, so a sparse source stays sparse */
      start_req_flags(t, t->dst, t->dq, &c->req, STOR_OP_WRITE_ZEROES, cfg->dst_off + c->off, c->len, NULL, chunk_done,
                      STOR_REQ_F_UNMAP);
    } else {
      c->iov = (struct iovec){c->buf, c->len};
      start_req(t, t->dst, t->dq, &c->req, STOR_OP_WRITE, cfg->dst_off + c->off, c->len, &c->iov, chunk_done);
    }
    return;
  case CH_WRITE:
    atomic_fetch_add(&t->bytes_copied, c->len);
    c->state = CH_FREE;
    t->busy--;
    return;
  case CH_VERIFY: chunk_done2(r); return;
  default: return;
  }
}

/* verify: both reads of a chunk complete here; the last one compares */
static void verify_step(struct copy_chunk *c, struct stor_req *r, const char *side) {
  struct copy_thread *t = c->t;
  if (r->result < 0) fail(t, side, c->off, r->result);
  if (--c->pending) return;
  if (!t->error && memcmp(c->buf, c->buf2, c->len)) {
    if (!t->mismatches) {
      uint64_t i = 0;
      while (i < c->len && c->buf[i] == c->buf2[i]) i++;
      t->first_mismatch = c->off + i;
    }
    t->mismatches++;
  }
  atomic_fetch_add(&t->bytes_verified, c->len);
  c->state = CH_FREE;
  t->busy--;
}
static void chunk_done2(struct stor_req *r) { verify_step((struct copy_chunk *)r, r, "verify read of the source"); }
static void verify_dst_done(struct stor_req *r) {
  verify_step((struct copy_chunk *)((char *)r - offsetof(struct copy_chunk, req2)), r,
              "verify read of the destination");
}

/* ---- waiting: the shared queue loop, notify mode, with both queues' completion fds ---------- */

/* Work: resubmit what waited for room, commit both queues, reap both. Progress also when nothing is
 * in flight any more (the caller's loop decides what next). */
static int copy_poll(void *ctx) {
  struct copy_thread *t = ctx;
  retry_pending(t);
  t->src->ops->commit(t->sq);
  t->dst->ops->commit(t->dq);
  int n = 0;
  if (t->src->ops->inflight(t->sq)) n += t->src->ops->reap(t->sq, false);
  if (t->dst->ops->inflight(t->dq)) n += t->dst->ops->reap(t->dq, false);
  return n > 0 ? n : !t->busy;
}

/* Arms both queues' completion fds (a backend may reap while arming: that is progress). */
static int copy_arm(void *ctx) {
  struct copy_thread *t = ctx;
  struct stor_bqueue *qs[2] = {t->sq, t->dq};
  struct stor_backend *bs[2] = {t->src, t->dst};
  int n = 0;
  for (int i = 0; i < 2; i++)
    if (bs[i]->ops->inflight(qs[i]) && bs[i]->ops->arm) n += bs[i]->ops->arm(qs[i]);
  return n;
}

static int copy_sleep_fds(void *ctx, struct pollfd *pf, int max) {
  struct copy_thread *t = ctx;
  struct stor_bqueue *qs[2] = {t->sq, t->dq};
  struct stor_backend *bs[2] = {t->src, t->dst};
  int n = 0;
  for (int i = 0; i < 2; i++) {
    if (!bs[i]->ops->inflight(qs[i])) continue;
    int fd = bs[i]->ops->event_fd(qs[i]);
    if (fd < 0) return 0; /* a synchronous backend: just go around */
    pf[n++] = (struct pollfd){fd, POLLIN, 0};
  }
  return n;
}

static int copy_woke(void *ctx, struct pollfd *pf, int n) {
  for (int i = 0; i < n; i++)
    if (pf[i].revents & POLLIN) {
      uint64_t v;
      if (read(pf[i].fd, &v, 8) < 0) { /* raced */
      }
    }
  return 0;
}

/* The copy thread re-arms before every sleep (the loop's armed state is reset each time), and
 * sleeps at most 100 ms as a safety net. */
static void copy_disarm(void *ctx) {}
static const struct stor_qloop_ops copy_loop_ops = {
    .poll = copy_poll,
    .arm = copy_arm,
    .disarm = copy_disarm,
    .sleep_fds = copy_sleep_fds,
    .woke = copy_woke,
};

static void pump(struct copy_thread *t) {
  t->loop.armed = false;
  stor_qloop_wait(&t->loop, &copy_loop_ops, t);
}

static void *copy_thread_main(void *arg) {
  struct copy_thread *t = arg;
  struct copy_cfg *cfg = t->cfg;
  char name[16];
  snprintf(name, sizeof name, "stor-copy%u", t->index);
  pthread_setname_np(pthread_self(), name);
  t->next = 0;
  while (!t->error && (t->next < t->nchunks || t->busy)) {
    for (unsigned i = 0; i < cfg->iodepth && t->next < t->nchunks && !t->error; i++) {
      struct copy_chunk *c = &t->chunks[i];
      if (c->state != CH_FREE) continue;
      uint64_t k = (uint64_t)t->index + t->next * cfg->queues;
      t->next++;
      c->off = k * cfg->chunk;
      c->len = cfg->length - c->off < cfg->chunk ? cfg->length - c->off : cfg->chunk;
      t->busy++;
      c->iov = (struct iovec){c->buf, c->len};
      if (!t->verifying) {
        c->state = CH_READ;
        start_req(t, t->src, t->sq, &c->req, STOR_OP_READ, cfg->src_off + c->off, c->len, &c->iov, chunk_done);
      } else {
        c->state = CH_VERIFY;
        c->pending = 2;
        c->iov2 = (struct iovec){c->buf2, c->len};
        start_req(t, t->src, t->sq, &c->req, STOR_OP_READ, cfg->src_off + c->off, c->len, &c->iov, chunk_done);
        start_req(t, t->dst, t->dq, &c->req2, STOR_OP_READ, cfg->dst_off + c->off, c->len, &c->iov2, verify_dst_done);
      }
    }
    pump(t);
  }
  while (t->busy) pump(t);
  return NULL;
}

static bool any_error(struct copy_thread *ts, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    if (ts[i].error) return true;
  return false;
}

/* Runs one pass (copy, or verify) on every queue thread and waits for all of them. */
static void run_pass(struct copy_thread *ts, unsigned n, bool verifying) {
  for (unsigned i = 0; i < n; i++) {
    ts[i].verifying = verifying;
    pthread_create(&ts[i].thread, NULL, copy_thread_main, &ts[i]);
  }
  for (unsigned i = 0; i < n; i++) pthread_join(ts[i].thread, NULL);
}

/* FLUSH on the destination once every write has completed: the copy is durable before it is verified. */
static void flush_destination(struct copy_thread *t) {
  struct copy_chunk *c = &t->chunks[0];
  c->state = CH_WRITE;
  c->len = 0;
  t->busy++;
  start_req(t, t->dst, t->dq, &c->req, STOR_OP_FLUSH, 0, 0, NULL, chunk_done);
  while (t->busy) pump(t);
}

struct copy_job {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref src_ref, dst_ref, pool_ref, running;
  struct stor_backend *src, *dst;
  struct copy_cfg cfg;
  struct copy_thread *threads;
  uint8_t *pool;
  size_t pool_len;
  char error[240];
  atomic_bool done;
};

static void copy_execute(napi_env env, void *data) {
  struct copy_job *j = data;
  struct copy_cfg *c = &j->cfg;
  uint64_t total_chunks = (c->length + c->chunk - 1) / c->chunk;
  unsigned ok = 0;
  size_t bufs_per_thread = (size_t)c->iodepth * (c->verify ? 2 : 1);
  for (unsigned i = 0; i < c->queues; i++) {
    struct copy_thread *t = &j->threads[i];
    t->cfg = c;
    t->src = j->src;
    t->dst = j->dst;
    t->index = i;
    stor_qloop_init(&t->loop, STOR_MODE_NOTIFY, 0);
    t->loop.sleep_timeout_ms = 100;
    t->nchunks = total_chunks / c->queues + (i < total_chunks % c->queues ? 1 : 0);
    int r = j->src->ops->queue_open(j->src, c->iodepth, &t->sq);
    if (r < 0) {
      snprintf(j->error, sizeof j->error, "source queue %u: %s", i,
               r == -EBUSY ? "the source has fewer queues than asked" : strerror(-r));
      break;
    }
    r = j->dst->ops->queue_open(j->dst, c->iodepth, &t->dq);
    if (r < 0) {
      snprintf(j->error, sizeof j->error, "destination queue %u: %s", i,
               r == -EBUSY ? "the destination has fewer queues than asked" : strerror(-r));
      j->src->ops->queue_close(t->sq);
      t->sq = NULL;
      break;
    }
    t->chunks = calloc(c->iodepth, sizeof *t->chunks);
    t->pending_cap = 2 * c->iodepth + 1;
    t->pending = calloc(t->pending_cap, sizeof *t->pending);
    if (!t->chunks || !t->pending) {
      snprintf(j->error, sizeof j->error, "out of memory");
      break;
    }
    for (unsigned k = 0; k < c->iodepth; k++) {
      struct copy_chunk *ch = &t->chunks[k];
      ch->t = t;
      size_t idx = (size_t)i * bufs_per_thread + k * (c->verify ? 2 : 1);
      if (j->pool && j->pool_len >= (size_t)c->queues * bufs_per_thread * c->chunk) {
        ch->buf = j->pool + idx * c->chunk;
        if (c->verify) ch->buf2 = ch->buf + c->chunk;
      } else {
        if (posix_memalign((void **)&ch->buf, 4096, c->chunk)) ch->buf = NULL;
        if (c->verify && posix_memalign((void **)&ch->buf2, 4096, c->chunk)) ch->buf2 = NULL;
        if (!ch->buf || (c->verify && !ch->buf2)) {
          snprintf(j->error, sizeof j->error, "out of memory for buffers");
          break;
        }
      }
    }
    if (j->error[0]) break;
    ok++;
  }
  if (ok == c->queues) {
    run_pass(j->threads, c->queues, false);
    if (c->flush && !any_error(j->threads, c->queues)) flush_destination(&j->threads[0]);
    if (c->verify && !any_error(j->threads, c->queues)) run_pass(j->threads, c->queues, true);
  }
  for (unsigned i = 0; i < c->queues; i++) {
    struct copy_thread *t = &j->threads[i];
    if (t->sq) j->src->ops->queue_close(t->sq);
    if (t->dq) j->dst->ops->queue_close(t->dq);
  }
  atomic_store(&j->done, true);
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  struct copy_job *j = data;
  struct copy_cfg *c = &j->cfg;
  uint64_t copied = 0, verified = 0, zeros = 0, mismatches = 0, first_mismatch = UINT64_MAX;
  const char *err = j->error[0] ? j->error : NULL;
  for (unsigned i = 0; i < c->queues; i++) {
    struct copy_thread *t = &j->threads[i];
    copied += t->bytes_copied;
    verified += t->bytes_verified;
    zeros += t->zero_bytes;
    mismatches += t->mismatches;
    if (t->mismatches && t->first_mismatch < first_mismatch) first_mismatch = t->first_mismatch;
    if (!err && t->error) err = t->errmsg;
  }
  if (err) {
    napi_value m, e;
    napi_create_string_utf8(env, err, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    set_prop(env, e, "bytesCopied", make_f64(env, (double)copied));
    napi_reject_deferred(env, j->deferred, e);
  } else {
    napi_value o;
    napi_create_object(env, &o);
    set_prop(env, o, "bytesCopied", make_f64(env, (double)copied));
    set_prop(env, o, "bytesVerified", make_f64(env, (double)verified));
    set_prop(env, o, "zeroBytes", make_f64(env, (double)zeros));
    set_prop(env, o, "mismatchedChunks", make_f64(env, (double)mismatches));
    set_prop(env, o, "firstMismatch",
             first_mismatch == UINT64_MAX ? make_null(env) : make_f64(env, (double)first_mismatch));
    napi_resolve_deferred(env, j->deferred, o);
  }
  for (unsigned i = 0; i < c->queues; i++) {
    struct copy_thread *t = &j->threads[i];
    if (t->chunks && !(j->pool && j->pool_len >= (size_t)c->queues * c->iodepth * (c->verify ? 2 : 1) * c->chunk)) {
      for (unsigned k = 0; k < c->iodepth; k++) {
        free(t->chunks[k].buf);
        free(t->chunks[k].buf2);
      }
    }
    free(t->chunks);
    t->chunks = NULL;
    free(t->pending);
    t->pending = NULL;
  }
  stor_backend_put(j->src);
  stor_backend_put(j->dst);
  j->src = j->dst = NULL;
  napi_delete_reference(env, j->src_ref);
  napi_delete_reference(env, j->dst_ref);
  if (j->pool_ref) napi_delete_reference(env, j->pool_ref);
  napi_delete_async_work(env, j->work);
  napi_delete_reference(env, j->running); /* the thread is done: progress may now be collected */
}

static void copy_finalize(napi_env env, void *data, void *hint) {
  struct copy_job *j = data;
  free(j->threads);
  free(j);
}

static napi_value js_copy_progress(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  void *data;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, NULL, &self, &data));
  struct copy_job *j = data;
  uint64_t copied = 0, verified = 0;
  for (unsigned i = 0; i < j->cfg.queues; i++) {
    copied += j->threads[i].bytes_copied;
    verified += j->threads[i].bytes_verified;
  }
  napi_value o;
  napi_create_object(env, &o);
  set_prop(env, o, "copied", make_f64(env, (double)copied));
  set_prop(env, o, "verified", make_f64(env, (double)verified));
  return o;
}

/* copyRun(src, dst, {srcOffset, dstOffset, length, chunk, queues, iodepth, verify, zeroDetect, flush}, pool?)
 *   -> {promise, progress()} */
static napi_value js_copy_run(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  struct stor_backend *src = backend_from_js(env, argv[0]);
  if (!src) return NULL;
  struct stor_backend *dst = backend_from_js(env, argv[1]);
  if (!dst) return NULL;
  struct copy_job *j = calloc(1, sizeof *j);
  struct copy_cfg *c = &j->cfg;
  if (!prop_u64(env, argv[2], "srcOffset", &c->src_off, 0) || !prop_u64(env, argv[2], "dstOffset", &c->dst_off, 0) ||
      !prop_u64(env, argv[2], "length", &c->length, 0) || !prop_u64(env, argv[2], "chunk", &c->chunk, 1 << 20) ||
      !prop_u32(env, argv[2], "queues", &c->queues, 1) || !prop_u32(env, argv[2], "iodepth", &c->iodepth, 8) ||
      !prop_bool(env, argv[2], "verify", &c->verify, false) ||
      !prop_bool(env, argv[2], "zeroDetect", &c->zero_detect, true) ||
      !prop_bool(env, argv[2], "flush", &c->flush, true)) {
    free(j);
    return NULL;
  }
  if (!c->chunk || c->chunk % 512 || c->chunk > (64u << 20)) {
    free(j);
    return throw_msg(env, "chunk must be a multiple of 512 up to 64 MiB");
  }
  if (!c->queues || c->queues > 64 || !c->iodepth || c->iodepth > 1024) {
    free(j);
    return throw_msg(env, "queues 1..64, iodepth 1..1024");
  }
  if (c->length % 512 || c->src_off + c->length > src->props.capacity || c->dst_off + c->length > dst->props.capacity) {
    free(j);
    return throw_msg(env, "the range does not fit the source and destination");
  }
  if (dst->props.readonly) {
    free(j);
    return throw_msg(env, "the destination is read-only");
  }
  j->src = src;
  j->dst = dst;
  src->refs++;
  dst->refs++; /* the job's own references: closing the handles meanwhile leaves the backends to us */
  j->threads = calloc(c->queues, sizeof *j->threads);
  napi_create_reference(env, argv[0], 1, &j->src_ref);
  napi_create_reference(env, argv[1], 1, &j->dst_ref);
  if (argc > 3) {
    void *p;
    size_t len;
    if (arg_buffer(env, argv[3], &p, &len)) {
      j->pool = p;
      j->pool_len = len;
      napi_create_reference(env, argv[3], 1, &j->pool_ref);
    }
  }
  return start_job(env, "stor-copy", copy_execute, copy_complete, j, &j->work, &j->deferred, &j->running,
                   js_copy_progress, copy_finalize);
}

void copy_init(napi_env env, napi_value exports) { export_fn(env, exports, "copyRun", js_copy_run); }
