/* The ublk export's native side: control commands on /dev/ublk-control and the data plane of one
 * ublk disk (/dev/ublkbN) over any backend.
 *
 * Control: every command is an IORING_OP_URING_CMD on a small SQE128 ring over /dev/ublk-control
 * (the driver refuses 64-byte SQEs there), ioctl-encoded (UBLK_U_CMD_*). The driver runs them in an
 * io-wq worker, and START_DEV, END_USER_RECOVERY and DEL_DEV sleep in the kernel until the queues
 * have fetched (or the disk's last user has gone): every wait here has a deadline, after which the
 * command is cancelled (IORING_OP_ASYNC_CANCEL interrupts the worker) and -ETIMEDOUT returned.
 *
 * Data: one thread per ublk queue, with its own io_uring over /dev/ublkcN (the driver binds a queue
 * to the task that issued its FETCH_REQs, so every command of a queue comes from that thread). Each
 * tag owns a buffer of max_io_buf_bytes; the kernel copies write data into it before the FETCH
 * completes and copies read data out of it when the request is committed. A completed FETCH names a
 * tag; its ublksrv_io_desc (in the read-only mapping of the queue's descriptor array) becomes one
 * stor_req on the backend, and the backend's completion becomes COMMIT_AND_FETCH_REQ with the byte
 * count or a negative errno: no request is ever left uncommitted, since that hangs the disk and
 * deadlocks teardown. A backend that answers BUSY keeps its requests in a FIFO (bdev/deferred.h), retried
 * after reaping.
 * The thread waits through the shared queue loop (notify / poll / adaptive); a sleep is one
 * io_uring_enter on the queue's ring, which also carries a multishot poll on the backend's completion
 * eventfd, and is bounded (1 s) so a stop request is always seen.
 *
 * The queue threads exit when the kernel aborts their commands (STOP_DEV, or the device deleted),
 * or when asked to stop (then the kernel sees the ring close, as after a crash: a device created
 * with UBLK_F_USER_RECOVERY is quiesced and can be recovered by a new server). */
#include "bdev/bdev.h"
#include "bdev/deferred.h"
#include "export/js_events.h"
#include "export/queue_loop.h"
#include "export/ublk_abi.h"
#include "sys/napi_util.h"
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UBLK_CONTROL_PATH "/dev/ublk-control"
#define MAX_QUEUES        64
#define SLEEP_MS          1000 /* longest single sleep of a queue thread */
#define LOG_BURST         20   /* failure logs per second per queue */

/* user_data of the non-tag CQEs on a queue ring (tags are < UBLK_MAX_QUEUE_DEPTH) */
#define UD_BACKEND (1ull << 62)
#define UD_STOP    ((1ull << 62) + 1)

/* ---- control commands --------------------------------------------------------------------- */

static pthread_mutex_t ctrl_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctrl_fd = -1;
static struct io_uring ctrl_ring;
static uint64_t ctrl_seq;

/* Opens /dev/ublk-control and its ring once per process. -errno: ENOENT (no ublk_drv), EACCES... */
static int ctrl_open(void) {
  if (ctrl_fd >= 0) return 0;
  int fd = open(UBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC);
  if (fd < 0) return -errno;
  int r = io_uring_queue_init(8, &ctrl_ring, IORING_SETUP_SQE128);
  if (r < 0) {
    close(fd);
    return r;
  }
  ctrl_fd = fd;
  return 0;
}

struct ctrl_args {
  uint32_t dev_id;
  uint64_t data0;
  void *buf;
  uint32_t len;
};

/* One control command; waits at most timeout_ms for its completion, then cancels it. */
static int ctrl_cmd(uint32_t op, const struct ctrl_args *a, int timeout_ms) {
  pthread_mutex_lock(&ctrl_lock);
  int r = ctrl_open();
  if (r < 0) goto out;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ctrl_ring);
  if (!sqe) {
    r = -EBUSY;
    goto out;
  }
  memset(sqe, 0, 2 * sizeof *sqe); /* SQE128: the command lives in the second half too */
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = ctrl_fd;
  sqe->cmd_op = op;
  uint64_t ud = ++ctrl_seq;
  sqe->user_data = ud;
  struct ublksrv_ctrl_cmd *c = (struct ublksrv_ctrl_cmd *)sqe->cmd;
  c->dev_id = a->dev_id;
  c->queue_id = (uint16_t)-1;
  c->addr = (uint64_t)(uintptr_t)a->buf;
  c->len = (uint16_t)a->len;
  c->data[0] = a->data0;
  r = io_uring_submit(&ctrl_ring);
  if (r < 0) goto out;
  struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
  struct io_uring_cqe *cqe;
  bool timed_out = false;
  for (;;) {
    int w = io_uring_wait_cqe_timeout(&ctrl_ring, &cqe, &ts);
    if (w == -EINTR) continue;
    if (w == -ETIME && !timed_out) {
      /* cancel: interrupts the worker sleeping in the driver; then collect both completions */
      timed_out = true;
      struct io_uring_sqe *cs = io_uring_get_sqe(&ctrl_ring);
      if (cs) {
        io_uring_prep_cancel64(cs, ud, 0);
        cs->user_data = 0;
        io_uring_submit(&ctrl_ring);
      }
      ts.tv_sec = 2;
      ts.tv_nsec = 0;
      continue;
    }
    if (w < 0) {
      r = timed_out ? -ETIMEDOUT : w;
      break;
    }
    uint64_t got = cqe->user_data;
    int res = cqe->res;
    io_uring_cqe_seen(&ctrl_ring, cqe);
    if (got == ud) {
      r = timed_out ? -ETIMEDOUT : res;
      if (!timed_out) break;
      /* drain the cancel's completion if it is there already */
      while (io_uring_peek_cqe(&ctrl_ring, &cqe) == 0) io_uring_cqe_seen(&ctrl_ring, cqe);
      break;
    }
  }
out:
  pthread_mutex_unlock(&ctrl_lock);
  return r;
}

/* ---- the data plane ------------------------------------------------------------------------- */

enum tag_state { TAG_FETCHING, TAG_BACKEND /* or waiting for room in it */, TAG_DEAD };

struct ublk_queue;

struct ublk_tag {
  struct stor_req req; /* first: the completion finds the tag */
  struct ublk_queue *q;
  struct iovec iov;
  uint16_t tag;
  uint8_t state;
  bool zeroes_as_write; /* a WRITE_ZEROES the backend refused, retried as a write of zeroes */
};

struct ublk_qstats {
  uint64_t requests, reads, writes, flushes, discards, write_zeroes, errors, bytes_read, bytes_written;
};

struct ublk_server;

struct ublk_queue {
  struct ublk_server *srv;
  int index;
  struct io_uring ring;
  bool ring_ok;
  const struct ublksrv_io_desc *iods; /* the kernel's descriptor array (read-only mapping) */
  size_t iods_len;
  uint8_t *bufs; /* depth x max_io bytes */
  struct ublk_tag *tags;
  struct stor_deferred deferred; /* requests the backend answered BUSY to */
  struct stor_bqueue *bq;
  int backend_fd; /* the backend's completion eventfd, or -1 */
  int stop_fd;
  unsigned dead;       /* tags whose command the kernel aborted */
  unsigned in_backend; /* tags in the backend or deferred */
  unsigned pending_sqes;
  bool stopping;
  struct stor_qloop loop;
  pthread_t thread;
  bool running;
  atomic_bool exited;
  clockid_t cpu_clock;
  struct ublk_qstats st;
  time_t log_second;
  unsigned log_count, log_suppressed;
};

struct ublk_server {
  struct stor_backend *be;
  uint32_t dev_id;
  int char_fd;
  unsigned nqueues, depth;
  uint32_t max_io;
  bool readonly;
  uint64_t capacity;
  enum stor_completion_mode mode;
  uint32_t spin_us;
  struct ublk_queue q[MAX_QUEUES];
  struct js_events events;
  bool destroyed;
};

/* A failed request: logged, at most LOG_BURST a second per queue (the rest counted). */
static void req_log(struct ublk_queue *q, const char *fmt, ...) {
  time_t now = time(NULL);
  if (now != q->log_second) {
    if (q->log_suppressed)
      js_events_post(&q->srv->events, "warn", q->index, "queue %d: %u more request failures not logged", q->index,
                     q->log_suppressed);
    q->log_second = now;
    q->log_count = q->log_suppressed = 0;
  }
  if (q->log_count++ >= LOG_BURST) {
    q->log_suppressed++;
    return;
  }
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  js_events_post(&q->srv->events, "reqerr", q->index, "queue %d: %s", q->index, msg);
}

static struct io_uring_sqe *queue_sqe(struct ublk_queue *q) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
  if (!sqe) {
    io_uring_submit(&q->ring);
    q->pending_sqes = 0;
    sqe = io_uring_get_sqe(&q->ring);
  }
  if (sqe) q->pending_sqes++;
  return sqe;
}

/* FETCH_REQ (first time) or COMMIT_AND_FETCH_REQ with the result of the tag's request. */
static void queue_io_cmd(struct ublk_queue *q, struct ublk_tag *t, bool commit, int32_t result) {
  struct io_uring_sqe *sqe = queue_sqe(q);
  if (!sqe) { /* cannot happen: the ring has room for every tag */
    js_events_post(&q->srv->events, "error", q->index, "queue %d: no submission slot for tag %u", q->index, t->tag);
    t->state = TAG_DEAD;
    q->dead++;
    return;
  }
  memset(sqe, 0, sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = q->srv->char_fd;
  sqe->cmd_op = commit ? UBLK_U_IO_COMMIT_AND_FETCH_REQ : UBLK_U_IO_FETCH_REQ;
  sqe->user_data = t->tag;
  struct ublksrv_io_cmd *c = (struct ublksrv_io_cmd *)sqe->cmd;
  c->q_id = (uint16_t)q->index;
  c->tag = t->tag;
  c->result = result;
  c->addr = (uint64_t)(uintptr_t)t->iov.iov_base;
  t->state = TAG_FETCHING;
}

static void backend_submit(struct ublk_queue *q, struct ublk_tag *t);

/* The backend finished a request: commit its result (bytes for read/write, 0 otherwise, or -errno). */
static void tag_complete(struct stor_req *r) {
  struct ublk_tag *t = (struct ublk_tag *)r;
  struct ublk_queue *q = t->q;
  q->in_backend--;
  /* A backend that cannot zero a range (a file on tmpfs: no FALLOC_FL_ZERO_RANGE) gets a plain write of
   * zeroes instead: the disk offers write-zeroes, so it must not fail for that reason. */
  if (r->op == STOR_OP_WRITE_ZEROES && r->result == -EOPNOTSUPP && r->length <= q->srv->max_io && !t->zeroes_as_write) {
    t->zeroes_as_write = true;
    memset(t->iov.iov_base, 0, (size_t)r->length);
    t->iov.iov_len = (size_t)r->length;
    r->op = STOR_OP_WRITE;
    r->flags = 0;
    r->iov = &t->iov;
    r->niov = 1;
    r->result = 0;
    q->in_backend++;
    backend_submit(q, t);
    return;
  }
  int32_t res = r->result;
  if (res < 0) {
    q->st.errors++;
    req_log(q, "op %u at %llu, %llu bytes: %s", r->op, (unsigned long long)r->offset, (unsigned long long)r->length,
            strerror(-res));
  } else if (r->op == STOR_OP_READ || r->op == STOR_OP_WRITE) {
    res = (int32_t)r->length; /* the driver ends a read/write by the bytes committed */
  } else {
    res = 0;
  }
  queue_io_cmd(q, t, true, res);
}

static void backend_submit(struct ublk_queue *q, struct ublk_tag *t) {
  t->state = TAG_BACKEND;
  stor_deferred_submit(&q->deferred, q->srv->be->ops, q->bq, &t->req);
}

/* A fetched request: its descriptor to one stor_req, checked against what the disk offers. */
static void tag_fetched(struct ublk_queue *q, struct ublk_tag *t) {
  struct ublk_server *s = q->srv;
  const struct ublksrv_io_desc *iod = &q->iods[t->tag];
  uint32_t op_flags = __atomic_load_n(&iod->op_flags, __ATOMIC_ACQUIRE);
  uint32_t nr = iod->nr_sectors;
  uint64_t start = iod->start_sector;
  struct stor_req *r = &t->req;
  memset(r, 0, sizeof *r);
  t->zeroes_as_write = false;
  r->complete = tag_complete;
  r->offset = start << 9;
  r->length = (uint64_t)nr << 9;
  r->iov = &t->iov;
  r->niov = 1;
  t->iov.iov_len = (size_t)r->length;
  q->st.requests++;
  q->in_backend++;
  int err = 0;
  switch (op_flags & 0xff) {
  case UBLK_IO_OP_READ:
    r->op = STOR_OP_READ;
    q->st.reads++;
    q->st.bytes_read += r->length;
    break;
  case UBLK_IO_OP_WRITE:
    r->op = STOR_OP_WRITE;
    q->st.writes++;
    q->st.bytes_written += r->length;
    break;
  case UBLK_IO_OP_FLUSH:
    r->op = STOR_OP_FLUSH;
    r->offset = r->length = 0;
    q->st.flushes++;
    break;
  case UBLK_IO_OP_DISCARD:
    r->op = STOR_OP_DISCARD;
    q->st.discards++;
    if (!s->be->props.can_discard) err = -EOPNOTSUPP;
    break;
  case UBLK_IO_OP_WRITE_ZEROES:
    r->op = STOR_OP_WRITE_ZEROES;
    q->st.write_zeroes++;
    if (!(op_flags & UBLK_IO_F_NOUNMAP)) r->flags |= STOR_REQ_F_UNMAP;
    if (!s->be->props.can_write_zeroes) err = -EOPNOTSUPP;
    break;
  default: err = -EOPNOTSUPP;
  }
  if (!err && r->op != STOR_OP_FLUSH && (r->offset > s->capacity || r->length > s->capacity - r->offset)) err = -EINVAL;
  if (!err && (r->op == STOR_OP_READ || r->op == STOR_OP_WRITE) && (r->length > s->max_io || !r->length)) err = -EINVAL;
  if (!err && s->readonly && r->op != STOR_OP_READ && r->op != STOR_OP_FLUSH) err = -EROFS;
  if (err) {
    stor_req_done(r, err);
    return;
  }
  if (r->op != STOR_OP_READ && r->op != STOR_OP_WRITE) {
    r->iov = NULL;
    r->niov = 0;
  }
  backend_submit(q, t);
}

/* Handles the queue ring's completions; returns how many. */
static int queue_reap_ring(struct ublk_queue *q) {
  struct io_uring_cqe *cqe;
  int n = 0;
  while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
    uint64_t ud = cqe->user_data;
    int res = cqe->res;
    unsigned flags = cqe->flags;
    io_uring_cqe_seen(&q->ring, cqe);
    n++;
    if (ud == UD_BACKEND) {
      uint64_t v;
      if (read(q->backend_fd, &v, sizeof v) < 0) { /* nothing to drain */
      }
      if (!(flags & IORING_CQE_F_MORE)) { /* the multishot poll ended: arm it again */
        struct io_uring_sqe *sqe = queue_sqe(q);
        if (sqe) {
          io_uring_prep_poll_multishot(sqe, q->backend_fd, POLLIN);
          sqe->user_data = UD_BACKEND;
        }
      }
      continue;
    }
    if (ud == UD_STOP) {
      q->stopping = true;
      continue;
    }
    if (ud >= q->srv->depth) continue;
    struct ublk_tag *t = &q->tags[ud];
    if (res == UBLK_IO_RES_OK) {
      tag_fetched(q, t);
    } else {
      if (res != UBLK_IO_RES_ABORT)
        js_events_post(&q->srv->events, "error", q->index, "queue %d: tag %u: the driver refused the command: %s",
                       q->index, t->tag, strerror(-res));
      t->state = TAG_DEAD;
      q->dead++;
    }
  }
  return n;
}

static int queue_poll(void *ctx) {
  struct ublk_queue *q = ctx;
  const struct stor_backend_ops *ops = q->srv->be->ops;
  int n = queue_reap_ring(q);
  if (q->in_backend) {
    n += ops->reap(q->bq, false);
    n += stor_deferred_retry(&q->deferred, ops, q->bq);
    ops->commit(q->bq);
  }
  if (q->pending_sqes) {
    io_uring_submit(&q->ring);
    q->pending_sqes = 0;
  }
  /* done: every tag aborted by the kernel, or a stop asked with nothing left in the backend */
  if ((q->dead == q->srv->depth || q->stopping) && !q->in_backend) return -1;
  return n;
}

static int queue_sleep(void *ctx) {
  struct ublk_queue *q = ctx;
  const struct stor_backend_ops *ops = q->srv->be->ops;
  if (q->in_backend && ops->arm) {
    int a = ops->arm(q->bq);
    if (a > 0) return queue_poll(q);
  }
  struct io_uring_cqe *cqe;
  struct __kernel_timespec ts = {.tv_sec = SLEEP_MS / 1000, .tv_nsec = (SLEEP_MS % 1000) * 1000000ll};
  io_uring_submit_and_wait_timeout(&q->ring, &cqe, 1, &ts, NULL);
  q->pending_sqes = 0;
  int r = queue_poll(q);
  return r;
}

static const struct stor_qloop_ops queue_loop_ops = {.poll = queue_poll, .sleep = queue_sleep};

static void *queue_thread(void *arg) {
  struct ublk_queue *q = arg;
  struct ublk_server *s = q->srv;
  pthread_getcpuclockid(pthread_self(), &q->cpu_clock);
  for (unsigned i = 0; i < s->depth; i++) queue_io_cmd(q, &q->tags[i], false, 0);
  struct io_uring_sqe *sqe;
  if (q->backend_fd >= 0 && (sqe = queue_sqe(q))) {
    io_uring_prep_poll_multishot(sqe, q->backend_fd, POLLIN);
    sqe->user_data = UD_BACKEND;
  }
  if ((sqe = queue_sqe(q))) {
    io_uring_prep_poll_add(sqe, q->stop_fd, POLLIN);
    sqe->user_data = UD_STOP;
  }
  io_uring_submit(&q->ring);
  q->pending_sqes = 0;
  stor_qloop_init(&q->loop, s->mode, stor_qloop_spin_budget(s->mode, s->spin_us, s->be->props.remote));
  for (;;) {
    int r = stor_qloop_wait(&q->loop, &queue_loop_ops, q);
    if (r < 0) break;
  }
  atomic_store(&q->exited, true);
  return NULL;
}

static void queue_free(struct ublk_queue *q) {
  struct ublk_server *s = q->srv;
  if (q->ring_ok) io_uring_queue_exit(&q->ring);
  q->ring_ok = false;
  if (q->bq) s->be->ops->queue_close(q->bq);
  q->bq = NULL;
  if (q->iods) munmap((void *)q->iods, q->iods_len);
  q->iods = NULL;
  if (q->bufs) munmap(q->bufs, (size_t)s->depth * s->max_io);
  q->bufs = NULL;
  free(q->tags);
  q->tags = NULL;
  stor_deferred_free(&q->deferred);
  if (q->stop_fd >= 0) close(q->stop_fd);
  q->stop_fd = -1;
}

static int queue_setup(struct ublk_queue *q, char *err, size_t errlen) {
  struct ublk_server *s = q->srv;
  long page = sysconf(_SC_PAGESIZE);
  size_t desc_bytes = (size_t)s->depth * sizeof(struct ublksrv_io_desc);
  q->iods_len = (desc_bytes + (size_t)page - 1) & ~((size_t)page - 1);
  size_t max_desc_bytes =
      ((size_t)UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc) + (size_t)page - 1) & ~((size_t)page - 1);
  void *m = mmap(NULL, q->iods_len, PROT_READ, MAP_SHARED | MAP_POPULATE, s->char_fd,
                 (off_t)(UBLKSRV_CMD_BUF_OFFSET + (size_t)q->index * max_desc_bytes));
  if (m == MAP_FAILED) {
    snprintf(err, errlen, "queue %d: mmap of the io descriptors: %s", q->index, strerror(errno));
    return -errno;
  }
  q->iods = m;
  /* tag buffers: reserved, not committed; pages appear as requests use them */
  m = mmap(NULL, (size_t)s->depth * s->max_io, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
           0);
  if (m == MAP_FAILED) {
    snprintf(err, errlen, "queue %d: io buffers: %s", q->index, strerror(errno));
    return -errno;
  }
  q->bufs = m;
  q->tags = calloc(s->depth, sizeof *q->tags);
  if (!q->tags || stor_deferred_reserve(&q->deferred, s->depth) < 0) {
    snprintf(err, errlen, "queue %d: out of memory", q->index);
    return -ENOMEM;
  }
  for (unsigned i = 0; i < s->depth; i++) {
    q->tags[i].q = q;
    q->tags[i].tag = (uint16_t)i;
    q->tags[i].iov.iov_base = q->bufs + (size_t)i * s->max_io;
  }
  int r = io_uring_queue_init(s->depth + 8, &q->ring, 0);
  if (r < 0) {
    snprintf(err, errlen, "queue %d: io_uring: %s", q->index, strerror(-r));
    return r;
  }
  q->ring_ok = true;
  r = s->be->ops->queue_open(s->be, s->depth, &q->bq);
  if (r < 0) {
    q->bq = NULL;
    snprintf(err, errlen, "queue %d: backend queue: %s", q->index, strerror(-r));
    return r;
  }
  q->backend_fd = s->be->ops->event_fd(q->bq);
  q->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->stop_fd < 0) {
    snprintf(err, errlen, "eventfd: %s", strerror(errno));
    return -errno;
  }
  return 0;
}

/* Asks every thread to stop and joins them within timeout_ms; returns how many did not exit. */
static int server_join(struct ublk_server *s, bool ask, int timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
  if (dl.tv_nsec >= 1000000000) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000;
  }
  int left = 0;
  for (unsigned i = 0; i < s->nqueues; i++) {
    struct ublk_queue *q = &s->q[i];
    if (!q->running) continue;
    if (ask) {
      uint64_t one = 1;
      if (write(q->stop_fd, &one, sizeof one) < 0) { /* the poll sees the count either way */
      }
    }
    if (pthread_timedjoin_np(q->thread, NULL, &dl) == 0)
      q->running = false;
    else
      left++;
  }
  return left;
}

static void server_destroy(struct ublk_server *s) {
  if (s->destroyed) return;
  /* threads still running here are stuck in the backend; they own their memory: leave it (a leak,
   * never a use-after-free) */
  if (server_join(s, true, 5000)) {
    s->destroyed = true;
    return;
  }
  s->destroyed = true;
  for (unsigned i = 0; i < s->nqueues; i++) queue_free(&s->q[i]);
  if (s->char_fd >= 0) close(s->char_fd);
  s->char_fd = -1;
  js_events_close(&s->events, NULL);
  if (s->be) stor_backend_put(s->be);
  s->be = NULL;
}

static void server_finalize(napi_env env, void *data, void *hint) {
  struct ublk_server *s = data;
  bool leaked = false;
  for (unsigned i = 0; i < s->nqueues; i++) leaked |= s->q[i].running;
  server_destroy(s);
  if (!leaked) free(s);
}

/* Opens /dev/ublkcN, waiting (bounded) for devtmpfs to create it after ADD_DEV. */
static int open_char_dev(uint32_t id, int timeout_ms) {
  char path[64];
  snprintf(path, sizeof path, "/dev/ublkc%u", id);
  for (int waited = 0;; waited += 10) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0) return fd;
    int e = errno;
    if ((e != ENOENT && e != EBUSY) || waited >= timeout_ms) return -e;
    usleep(10000);
  }
}

/* ---- N-API ---------------------------------------------------------------------------------- */

#define UBLK_HANDLE_TAG "ublk server"

static napi_value dev_info_js(napi_env env, const struct ublksrv_ctrl_dev_info *i) {
  napi_value o;
  napi_create_object(env, &o);
  set_prop(env, o, "id", make_u32(env, i->dev_id));
  set_prop(env, o, "queues", make_u32(env, i->nr_hw_queues));
  set_prop(env, o, "depth", make_u32(env, i->queue_depth));
  set_prop(env, o, "state", make_u32(env, i->state));
  set_prop(env, o, "maxIoBytes", make_u32(env, i->max_io_buf_bytes));
  set_prop(env, o, "pid", make_i32(env, i->ublksrv_pid));
  set_prop(env, o, "flags", make_u64(env, i->flags));
  return o;
}

static napi_value ctrl_error(napi_env env, const char *what, int r) { return throw_errno(env, what, -r); }

/* ublkControlAvailable() -> 0 or -errno of opening /dev/ublk-control */
static napi_value js_control_available(napi_env env, napi_callback_info info) {
  pthread_mutex_lock(&ctrl_lock);
  int r = ctrl_open();
  pthread_mutex_unlock(&ctrl_lock);
  return make_i32(env, r);
}

/* ublkAddDev({id (-1: any), queues, depth, maxIoBytes, recovery}) -> dev info */
static napi_value js_add_dev(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t id;
  uint32_t queues, depth, max_io;
  bool recovery;
  if (!prop_i32(env, argv[0], "id", &id, -1) || !prop_u32(env, argv[0], "queues", &queues, 1) ||
      !prop_u32(env, argv[0], "depth", &depth, 128) || !prop_u32(env, argv[0], "maxIoBytes", &max_io, 512 << 10) ||
      !prop_bool(env, argv[0], "recovery", &recovery, true))
    return NULL;
  struct ublksrv_ctrl_dev_info di = {0};
  di.nr_hw_queues = (uint16_t)queues;
  di.queue_depth = (uint16_t)depth;
  di.max_io_buf_bytes = max_io;
  di.dev_id = id < 0 ? UBLK_DEV_ID_ANY : (uint32_t)id;
  di.ublksrv_pid = getpid();
  di.flags = UBLK_F_CMD_IOCTL_ENCODE;
  if (recovery) di.flags |= UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
  struct ctrl_args a = {.dev_id = di.dev_id, .buf = &di, .len = sizeof di};
  int r = ctrl_cmd(UBLK_U_CMD_ADD_DEV, &a, 10000);
  if (r < 0) return ctrl_error(env, "ADD_DEV", r);
  return dev_info_js(env, &di);
}

/* ublkGetDevInfo(id) -> dev info, or null when there is no such device */
static napi_value js_get_dev_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  uint32_t id;
  if (!arg_u32(env, argv[0], &id)) return throw_msg(env, "id must be a number");
  struct ublksrv_ctrl_dev_info di = {0};
  struct ctrl_args a = {.dev_id = id, .buf = &di, .len = sizeof di};
  int r = ctrl_cmd(UBLK_U_CMD_GET_DEV_INFO, &a, 5000);
  if (r == -ENODEV) return make_null(env);
  if (r < 0) return ctrl_error(env, "GET_DEV_INFO", r);
  return dev_info_js(env, &di);
}

/* ublkSetParams(id, {capacity, logicalBlockSize, physicalBlockSize, ioOpt, ioMin, maxSectors, readonly,
 * volatileCache, discardGranularity, discardAlignment, maxDiscardSectors, maxWriteZeroesSectors}) */
static napi_value js_set_params(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  uint32_t id, lbs, pbs, io_opt, io_min, max_sectors, dgran, dalign, mds, mwzs;
  uint64_t capacity;
  bool ro, vwc;
  if (!arg_u32(env, argv[0], &id)) return throw_msg(env, "id must be a number");
  napi_value o = argv[1];
  if (!prop_u64(env, o, "capacity", &capacity, 0) || !prop_u32(env, o, "logicalBlockSize", &lbs, 512) ||
      !prop_u32(env, o, "physicalBlockSize", &pbs, 512) || !prop_u32(env, o, "ioOpt", &io_opt, 0) ||
      !prop_u32(env, o, "ioMin", &io_min, 0) || !prop_u32(env, o, "maxSectors", &max_sectors, 1024) ||
      !prop_bool(env, o, "readonly", &ro, false) || !prop_bool(env, o, "volatileCache", &vwc, true) ||
      !prop_u32(env, o, "discardGranularity", &dgran, 0) || !prop_u32(env, o, "discardAlignment", &dalign, 0) ||
      !prop_u32(env, o, "maxDiscardSectors", &mds, 0) || !prop_u32(env, o, "maxWriteZeroesSectors", &mwzs, 0))
    return NULL;
  struct ublk_params p;
  memset(&p, 0, sizeof p);
  p.len = sizeof p;
  p.types = UBLK_PARAM_TYPE_BASIC;
  p.basic.attrs = (ro ? UBLK_ATTR_READ_ONLY : 0) | (vwc ? UBLK_ATTR_VOLATILE_CACHE : 0);
  p.basic.logical_bs_shift = (uint8_t)__builtin_ctz(lbs);
  p.basic.physical_bs_shift = (uint8_t)__builtin_ctz(pbs < lbs ? lbs : pbs);
  p.basic.io_opt_shift = (uint8_t)(io_opt ? __builtin_ctz(io_opt) : p.basic.physical_bs_shift);
  p.basic.io_min_shift = (uint8_t)(io_min ? __builtin_ctz(io_min) : p.basic.logical_bs_shift);
  p.basic.max_sectors = max_sectors;
  p.basic.dev_sectors = capacity >> 9;
  if ((mds || mwzs) && dgran) {
    p.types |= UBLK_PARAM_TYPE_DISCARD;
    p.discard.discard_granularity = dgran;
    p.discard.discard_alignment = dalign;
    p.discard.max_discard_sectors = mds;
    p.discard.max_write_zeroes_sectors = mwzs;
    p.discard.max_discard_segments = 1;
  }
  struct ctrl_args a = {.dev_id = id, .buf = &p, .len = sizeof p};
  int r = ctrl_cmd(UBLK_U_CMD_SET_PARAMS, &a, 5000);
  if (r < 0) return ctrl_error(env, "SET_PARAMS", r);
  return make_undefined(env);
}

/* ublkCommand(name, id, timeoutMs) for START_DEV, STOP_DEV, DEL_DEV, START_USER_RECOVERY,
 * END_USER_RECOVERY (the two with a pid pass this process's). */
static napi_value js_command(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  char name[32];
  uint32_t id, timeout_ms;
  if (!arg_str(env, argv[0], name, sizeof name) || !arg_u32(env, argv[1], &id) || !arg_u32(env, argv[2], &timeout_ms))
    return throw_msg(env, "ublkCommand(name, id, timeoutMs)");
  uint32_t op;
  bool pid = false;
  if (!strcmp(name, "START_DEV")) {
    op = UBLK_U_CMD_START_DEV;
    pid = true;
  } else if (!strcmp(name, "STOP_DEV"))
    op = UBLK_U_CMD_STOP_DEV;
  else if (!strcmp(name, "DEL_DEV"))
    op = UBLK_U_CMD_DEL_DEV;
  else if (!strcmp(name, "START_USER_RECOVERY"))
    op = UBLK_U_CMD_START_USER_RECOVERY;
  else if (!strcmp(name, "END_USER_RECOVERY")) {
    op = UBLK_U_CMD_END_USER_RECOVERY;
    pid = true;
  } else
    return throw_msg(env, "unknown ublk command %s", name);
  struct ctrl_args a = {.dev_id = id, .data0 = pid ? (uint64_t)getpid() : 0};
  int r = ctrl_cmd(op, &a, (int)timeout_ms);
  if (r < 0) return ctrl_error(env, name, r);
  return make_undefined(env);
}

/* ublkServerCreate(backend, {id, queues, depth, maxIoBytes, readonly, mode, spinUs}, onEvent) -> handle:
 * opens /dev/ublkcN, maps the descriptors, starts one thread per queue, which issues its FETCH_REQs. */
static napi_value js_server_create(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  uint32_t id, queues, depth, max_io, spin_us;
  bool ro;
  char mode[16];
  if (!prop_u32(env, argv[1], "id", &id, 0) || !prop_u32(env, argv[1], "queues", &queues, 1) ||
      !prop_u32(env, argv[1], "depth", &depth, 128) || !prop_u32(env, argv[1], "maxIoBytes", &max_io, 512 << 10) ||
      !prop_bool(env, argv[1], "readonly", &ro, false) ||
      !prop_str(env, argv[1], "mode", mode, sizeof mode, "adaptive") ||
      !prop_u32(env, argv[1], "spinUs", &spin_us, STOR_SPIN_US_DEFAULT))
    return NULL;
  if (queues < 1 || queues > MAX_QUEUES) return throw_msg(env, "queues must be 1..%d", MAX_QUEUES);
  if (depth < 1 || depth > UBLK_MAX_QUEUE_DEPTH) return throw_msg(env, "depth must be 1..%d", UBLK_MAX_QUEUE_DEPTH);
  if (!max_io || max_io % 4096) return throw_msg(env, "maxIoBytes must be a multiple of 4096");
  struct ublk_server *s = calloc(1, sizeof *s);
  if (!s) return throw_errno(env, "ublkServerCreate", ENOMEM);
  s->be = be;
  be->refs++;
  s->dev_id = id;
  s->nqueues = queues;
  s->depth = depth;
  s->max_io = max_io;
  s->readonly = ro || be->props.readonly;
  s->capacity = be->props.capacity;
  int m = stor_completion_mode_parse(mode);
  s->mode = m < 0 ? STOR_MODE_ADAPTIVE : (enum stor_completion_mode)m;
  s->spin_us = spin_us;
  for (unsigned i = 0; i < queues; i++) {
    s->q[i].srv = s;
    s->q[i].index = (int)i;
    s->q[i].stop_fd = s->q[i].backend_fd = -1;
  }
  char err[256] = "";
  int r = open_char_dev(id, 5000);
  s->char_fd = r >= 0 ? r : -1;
  if (r < 0) snprintf(err, sizeof err, "open /dev/ublkc%u: %s", id, strerror(-r));
  for (unsigned i = 0; r >= 0 && i < queues; i++) r = queue_setup(&s->q[i], err, sizeof err);
  if (r >= 0) {
    if (js_events_open(&s->events, env, argv[2], "stor-ublk-events") < 0) {
      r = -ENOMEM;
      snprintf(err, sizeof err, "cannot create the event channel");
    }
  }
  for (unsigned i = 0; r >= 0 && i < queues; i++) {
    int e = pthread_create(&s->q[i].thread, NULL, queue_thread, &s->q[i]);
    if (e) {
      r = -e;
      snprintf(err, sizeof err, "pthread_create: %s", strerror(e));
    } else {
      s->q[i].running = true;
    }
  }
  if (r < 0) {
    server_destroy(s);
    free(s);
    napi_value m2, e, code;
    napi_create_string_utf8(env, err, NAPI_AUTO_LENGTH, &m2);
    napi_create_error(env, NULL, m2, &e);
    napi_create_int32(env, -r, &code);
    napi_set_named_property(env, e, "errno", code);
    napi_throw(env, e);
    return NULL;
  }
  return make_handle(env, STOR_HANDLE_UBLK_SERVER, s, server_finalize);
}

static struct ublk_server *server_arg(napi_env env, napi_value v) {
  return handle_arg(env, v, STOR_HANDLE_UBLK_SERVER, UBLK_HANDLE_TAG);
}

/* ublkServerWait(h, timeoutMs) -> how many queue threads are still running after waiting for them to
 * exit on their own (the kernel aborted their commands: STOP_DEV). */
static napi_value js_server_wait(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct ublk_server *s = server_arg(env, argv[0]);
  uint32_t timeout_ms;
  if (!s || !arg_u32(env, argv[1], &timeout_ms)) return NULL;
  if (s->destroyed) return make_u32(env, 0);
  return make_u32(env, (uint32_t)server_join(s, false, (int)timeout_ms));
}

/* ublkServerDestroy(h): stops the threads (as a crash would, if the disk is still live), frees all. */
static napi_value js_server_destroy(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct ublk_server *s = server_arg(env, argv[0]);
  if (!s) return NULL;
  server_destroy(s);
  return make_undefined(env);
}

static double queue_cpu_seconds(struct ublk_queue *q) {
  if (!q->running || atomic_load(&q->exited)) return 0;
  struct timespec ts;
  if (clock_gettime(q->cpu_clock, &ts)) return 0;
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static napi_value js_server_stats(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct ublk_server *s = server_arg(env, argv[0]);
  if (!s) return NULL;
  napi_value arr;
  napi_create_array_with_length(env, s->nqueues, &arr);
  for (unsigned i = 0; i < s->nqueues; i++) {
    struct ublk_queue *q = &s->q[i];
    napi_value o;
    napi_create_object(env, &o);
#define S(f) set_prop(env, o, #f, make_f64(env, (double)q->st.f))
    S(requests);
    S(reads);
    S(writes);
    S(flushes);
    S(discards);
    S(write_zeroes);
    S(errors);
    S(bytes_read);
    S(bytes_written);
#undef S
    set_prop(env, o, "running", make_bool(env, q->running && !atomic_load(&q->exited)));
    set_prop(env, o, "sleeps", make_f64(env, (double)q->loop.sleeps));
    set_prop(env, o, "cpuSeconds", make_f64(env, queue_cpu_seconds(q)));
    napi_set_element(env, arr, i, o);
  }
  return arr;
}

void ublk_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "ublkControlAvailable", js_control_available);
  export_fn(env, exports, "ublkAddDev", js_add_dev);
  export_fn(env, exports, "ublkGetDevInfo", js_get_dev_info);
  export_fn(env, exports, "ublkSetParams", js_set_params);
  export_fn(env, exports, "ublkCommand", js_command);
  export_fn(env, exports, "ublkServerCreate", js_server_create);
  export_fn(env, exports, "ublkServerWait", js_server_wait);
  export_fn(env, exports, "ublkServerDestroy", js_server_destroy);
  export_fn(env, exports, "ublkServerStats", js_server_stats);
}
