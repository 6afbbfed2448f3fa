/* The rbd backend: a Ceph RBD image through librbd's C API, loaded with dlopen on first use (see
 * rbd_api.h for why). rbd:POOL/IMAGE (or POOL/NAMESPACE/IMAGE) with conf=, id=, keyring=, create=,
 * snapshot= (read-only), readonly= and connect-timeout=.
 *
 * Data path: every request is one rbd_aio_* call (readv/writev straight from the request's iovecs,
 * flush, discard, write-zeroes) with a librbd completion. librbd calls the completion's callback on
 * its own threads; the callback pushes the request's slot onto the queue's lock-free completed list
 * and, when that list was empty, signals the queue's eventfd. The queue thread (the shared queue loop
 * of every export and engine) sleeps on that eventfd and reap() hands the completions over, in the
 * order they finished. No JavaScript and no lock on the I/O path; a queue has as many requests in
 * flight as its depth (BUSY beyond: back-pressure).
 *
 * Control path: one cluster connection (rados_t) per process for each (conf, id, keyring), shared by
 * every image and queue and reference-counted; the connect, pool, image and lock steps run on a
 * helper thread that the opener waits for with a deadline, so an unreachable cluster, or one whose
 * monitors answer but whose OSDs do not, is a bounded error, never a hang. A writable open takes
 * librbd's exclusive lock (when the image has the feature) and refuses an image another client holds.
 * rados_osd_op_timeout stays 0 on purpose: it would bound every OSD operation, the data path's too,
 * and turn an OSD that pauses (restart, recovery, SIGSTOP) into failed guest I/O; requests wait for the
 * cluster instead, as the kernel's rbd and QEMU's driver do. */
#include "bdev/bdev.h"
#include "bdev/rbd_api.h"
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define RBD_CONNECT_TIMEOUT_DEFAULT 10u /* seconds */

/* ---- the library (loaded once, never unloaded: librados keeps threads) ------------------------- */

static pthread_mutex_t rbd_mutex = PTHREAD_MUTEX_INITIALIZER; /* the library, the cluster list */
static struct stor_rbd_api api;
static bool api_loaded;

static int rbd_api_load(char *err, size_t errlen) {
  pthread_mutex_lock(&rbd_mutex);
  if (api_loaded) {
    pthread_mutex_unlock(&rbd_mutex);
    return 0;
  }
  int r = 0;
  void *rados = dlopen("librados.so.2", RTLD_NOW | RTLD_LOCAL);
  void *rbd = rados ? dlopen("librbd.so.1", RTLD_NOW | RTLD_LOCAL) : NULL;
  if (!rados || !rbd) {
    snprintf(err, errlen, "rbd: %s not found: apt-get install librbd1", rados ? "librbd.so.1" : "librados.so.2");
    r = -ENOENT;
    goto out;
  }
  struct stor_rbd_api a;
  memset(&a, 0, sizeof a);
  const char *missing = NULL;
#define LOAD(lib, fn)                                                                                                  \
  do {                                                                                                                 \
    *(void **)&a.fn = dlsym(lib, #fn);                                                                                 \
    if (!a.fn && !missing) missing = #fn;                                                                              \
  } while (0)
  LOAD(rados, rados_create);
  LOAD(rados, rados_conf_read_file);
  LOAD(rados, rados_conf_parse_env);
  LOAD(rados, rados_conf_set);
  LOAD(rados, rados_conf_get);
  LOAD(rados, rados_connect);
  LOAD(rados, rados_shutdown);
  LOAD(rados, rados_ioctx_create);
  LOAD(rados, rados_ioctx_destroy);
  LOAD(rados, rados_ioctx_set_namespace);
  LOAD(rbd, rbd_create);
  LOAD(rbd, rbd_open);
  LOAD(rbd, rbd_open_read_only);
  LOAD(rbd, rbd_close);
  LOAD(rbd, rbd_stat);
  LOAD(rbd, rbd_get_features);
  LOAD(rbd, rbd_snap_set);
  LOAD(rbd, rbd_flush);
  LOAD(rbd, rbd_lock_acquire);
  LOAD(rbd, rbd_lock_release);
  LOAD(rbd, rbd_lock_get_owners);
  LOAD(rbd, rbd_lock_get_owners_cleanup);
  LOAD(rbd, rbd_aio_create_completion);
  LOAD(rbd, rbd_aio_get_return_value);
  LOAD(rbd, rbd_aio_release);
  LOAD(rbd, rbd_aio_readv);
  LOAD(rbd, rbd_aio_writev);
  LOAD(rbd, rbd_aio_flush);
  LOAD(rbd, rbd_aio_discard);
#undef LOAD
  *(void **)&a.rbd_aio_write_zeroes = dlsym(rbd, "rbd_aio_write_zeroes"); /* optional */
  *(void **)&a.rbd_watchers_list = dlsym(rbd, "rbd_watchers_list");
  *(void **)&a.rbd_watchers_list_cleanup = dlsym(rbd, "rbd_watchers_list_cleanup");
  if (!a.rbd_watchers_list_cleanup) a.rbd_watchers_list = NULL;
  if (missing) {
    snprintf(err, errlen, "rbd: librbd.so.1 has no %s: Ceph 12 (Luminous) or newer is needed", missing);
    r = -ENOSYS;
    goto out;
  }
  api = a;
  api_loaded = true;
out:
  if (r < 0) {
    if (rbd) dlclose(rbd);
    if (rados) dlclose(rados);
  }
  pthread_mutex_unlock(&rbd_mutex);
  return r;
}

/* ---- one cluster connection per (conf, id, keyring), shared and counted ------------------------ */

struct rbd_cluster {
  struct rbd_cluster *next;
  char conf[256], id[64], keyring[256];
  rados_t rados;
  int refs; /* under rbd_mutex */
};
static struct rbd_cluster *clusters;

static void cluster_put(struct rbd_cluster *c) {
  pthread_mutex_lock(&rbd_mutex);
  bool last = --c->refs == 0;
  if (last)
    for (struct rbd_cluster **p = &clusters; *p; p = &(*p)->next)
      if (*p == c) {
        *p = c->next;
        break;
      }
  pthread_mutex_unlock(&rbd_mutex);
  if (last) {
    api.rados_shutdown(c->rados);
    free(c);
  }
}

/* Connects (or shares the connection already made with the same conf, id and keyring). Connecting is
 * bounded by client_mount_timeout; later monitor commands (pool lookup) by rados_mon_op_timeout. */
static int cluster_get(const char *conf, const char *id, const char *keyring, unsigned timeout_s,
                       struct rbd_cluster **out, char *err, size_t errlen) {
  pthread_mutex_lock(&rbd_mutex);
  for (struct rbd_cluster *c = clusters; c; c = c->next)
    if (!strcmp(c->conf, conf) && !strcmp(c->id, id) && !strcmp(c->keyring, keyring)) {
      c->refs++;
      pthread_mutex_unlock(&rbd_mutex);
      *out = c;
      return 0;
    }
  struct rbd_cluster *c = calloc(1, sizeof *c);
  int r = -ENOMEM;
  if (!c) goto fail;
  snprintf(c->conf, sizeof c->conf, "%s", conf);
  snprintf(c->id, sizeof c->id, "%s", id);
  snprintf(c->keyring, sizeof c->keyring, "%s", keyring);
  r = api.rados_create(&c->rados, id[0] ? id : NULL);
  if (r < 0) {
    snprintf(err, errlen, "rbd: cannot create a cluster handle for client.%s: %s", id[0] ? id : "admin", strerror(-r));
    goto fail_free;
  }
  /* librados' own search without conf= ($CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf) */
  int conf_r = api.rados_conf_read_file(c->rados, conf[0] ? conf : NULL);
  if (conf_r < 0 && conf[0]) {
    r = conf_r;
    snprintf(err, errlen, "rbd: conf=%s: %s", conf, strerror(-r));
    goto fail_shutdown;
  }
  char seconds[16];
  snprintf(seconds, sizeof seconds, "%u", timeout_s);
  api.rados_conf_set(c->rados, "client_mount_timeout", seconds);
  api.rados_conf_set(c->rados, "rados_mon_op_timeout", seconds);
  /* librados' log lines would interleave with stor's one-line errors; the log file still gets them */
  api.rados_conf_set(c->rados, "log_to_stderr", "false");
  api.rados_conf_set(c->rados, "err_to_stderr", "false");
  if (keyring[0]) {
    if (access(keyring, R_OK) < 0) {
      r = -errno;
      snprintf(err, errlen, "rbd: keyring=%s: %s", keyring, strerror(errno));
      goto fail_shutdown;
    }
    api.rados_conf_set(c->rados, "keyring", keyring);
  }
  /* No librbd cache, whatever ceph.conf says (QEMU's cache=none does the same): after a client's first
   * flush, librbd's default policy (writearound) acknowledges a write before the OSDs have it, and a
   * crash of stor would then lose acknowledged writes. CEPH_ARGS below can still turn it on. */
  api.rados_conf_set(c->rados, "rbd_cache", "false");
  /* Each queue has a thread of its own that only submits and reaps, so it can afford librbd's
   * dispatch inline: with the default (true), every rbd_aio_* call is handed to librbd's work queue
   * thread first, one more thread hop and wake-up per request on a host the OSDs share. Measured at
   * QD16 against the one-OSD test cluster: 4-10 % more IOPS in each of four alternating pairs. */
  api.rados_conf_set(c->rados, "rbd_non_blocking_aio", "false");
  api.rados_conf_parse_env(c->rados, NULL); /* CEPH_ARGS, as every Ceph client honours it */
  char mon_host[256] = "";
  api.rados_conf_get(c->rados, "mon_host", mon_host, sizeof mon_host);
  if (!mon_host[0] && conf_r < 0) {
    snprintf(err, errlen, "rbd: no ceph.conf found ($CEPH_CONF, /etc/ceph/ceph.conf): add ,conf=PATH");
    r = -ENOENT;
    goto fail_shutdown;
  }
  r = api.rados_connect(c->rados);
  if (r < 0) {
    const char *who = id[0] ? id : "admin";
    if (r == -ETIMEDOUT || r == -EINTR)
      snprintf(err, errlen, "rbd: cannot reach the cluster: no monitor (%s) answered within %u s",
               mon_host[0] ? mon_host : "mon_host unset", timeout_s);
    else if (r == -EACCES || r == -EPERM || r == -EKEYREJECTED)
      snprintf(err, errlen, "rbd: authentication as client.%s failed (%s): check id= and keyring=", who, strerror(-r));
    else if (r == -EIO && keyring[0])
      snprintf(err, errlen, "rbd: keyring=%s: no valid key for client.%s in it (%s)", keyring, who, strerror(-r));
    else if (r == -ENOENT)
      snprintf(err, errlen, "rbd: no key for client.%s (no keyring found%s%s): add ,keyring=PATH", who,
               keyring[0] ? " at " : "", keyring);
    else
      snprintf(err, errlen, "rbd: cannot connect to the cluster (%s) as client.%s: %s",
               mon_host[0] ? mon_host : "mon_host unset", who, strerror(-r));
    goto fail_shutdown;
  }
  c->refs = 1;
  c->next = clusters;
  clusters = c;
  pthread_mutex_unlock(&rbd_mutex);
  *out = c;
  return 0;
fail_shutdown:
  api.rados_shutdown(c->rados);
fail_free:
  free(c);
fail:
  pthread_mutex_unlock(&rbd_mutex);
  if (r == -ENOMEM && !err[0]) snprintf(err, errlen, "rbd: out of memory");
  return r;
}

/* ---- backend and queues ------------------------------------------------------------------------ */

struct rbd_backend {
  struct stor_backend base;
  struct rbd_cluster *cluster;
  rados_ioctx_t io;
  rbd_image_t image;
  bool locked; /* we hold the exclusive lock (released at close) */
};

/* One request in flight. The slot, not the request, is what librbd's callback sees. */
struct rbd_slot {
  struct rbd_slot *next; /* the free list (queue thread) or the completed list (callbacks push) */
  struct rbd_bqueue *q;
  struct stor_req *req;
  ssize_t ret; /* librbd's return value: bytes read, 0, or -errno */
};

struct rbd_bqueue {
  struct rbd_backend *be;
  int evfd;
  unsigned depth, inflight; /* inflight: queue thread only */
  struct rbd_slot *free;    /* queue thread only */
  _Atomic(struct rbd_slot *) done;
  atomic_int callbacks; /* callbacks between their first and last touch of the queue */
  struct rbd_slot slots[];
};

/* librbd's completion callback, on one of librbd's threads: publish the slot, wake the queue when the
 * completed list goes from empty to non-empty (the queue thread takes the whole list each time, so a
 * push onto a non-empty list has a wake-up pending already). */
static void rbd_completion_cb(rbd_completion_t c, void *arg) {
  struct rbd_slot *s = arg;
  struct rbd_bqueue *q = s->q;
  atomic_fetch_add(&q->callbacks, 1);
  s->ret = api.rbd_aio_get_return_value(c);
  api.rbd_aio_release(c);
  struct rbd_slot *head = atomic_load_explicit(&q->done, memory_order_relaxed);
  do s->next = head;
  while (!atomic_compare_exchange_weak_explicit(&q->done, &head, s, memory_order_release, memory_order_relaxed));
  if (!head) {
    uint64_t one = 1;
    if (write(q->evfd, &one, sizeof one) < 0) { /* the counter is non-zero already: the wake-up stands */
    }
  }
  atomic_fetch_sub(&q->callbacks, 1);
}

static int rbd_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  if (depth < 1) depth = 1;
  if (depth > 4096) depth = 4096;
  struct rbd_bqueue *q = calloc(1, sizeof *q + depth * sizeof(struct rbd_slot));
  if (!q) return -ENOMEM;
  q->be = (struct rbd_backend *)be;
  q->depth = depth;
  q->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->evfd < 0) {
    int e = -errno;
    free(q);
    return e;
  }
  atomic_init(&q->done, NULL);
  atomic_init(&q->callbacks, 0);
  for (unsigned i = 0; i < depth; i++) {
    q->slots[i].q = q;
    q->slots[i].next = q->free;
    q->free = &q->slots[i];
  }
  *out = (struct stor_bqueue *)q;
  return 0;
}

static int rbd_reap(struct stor_bqueue *bq, bool wait);

static void rbd_queue_close(struct stor_bqueue *bq) {
  struct rbd_bqueue *q = (struct rbd_bqueue *)bq;
  while (q->inflight) rbd_reap(bq, true);           /* callers drain first; this is the safety net */
  while (atomic_load(&q->callbacks)) sched_yield(); /* a callback may still be past its push */
  close(q->evfd);
  free(q);
}

static void rbd_commit(struct stor_bqueue *bq) {} /* each rbd_aio_* call starts its request */

static enum stor_submit rbd_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct rbd_bqueue *q = (struct rbd_bqueue *)bq;
  struct rbd_backend *b = q->be;
  struct rbd_slot *s = q->free;
  if (!s) return STOR_SUBMIT_BUSY;
  if (r->op != STOR_OP_READ && r->op != STOR_OP_FLUSH && b->base.props.readonly) {
    stor_req_done(r, -EROFS);
    return STOR_SUBMIT_QUEUED;
  }
  if (r->op == STOR_OP_WRITE_ZEROES && !api.rbd_aio_write_zeroes) {
    stor_req_done(r, -EOPNOTSUPP);
    return STOR_SUBMIT_QUEUED;
  }
  rbd_completion_t c;
  int e = api.rbd_aio_create_completion(s, rbd_completion_cb, &c);
  if (e < 0) {
    stor_req_done(r, e);
    return STOR_SUBMIT_QUEUED;
  }
  q->free = s->next;
  s->req = r;
  q->inflight++;
  switch (r->op) {
  case STOR_OP_READ: e = api.rbd_aio_readv(b->image, r->iov, r->niov, r->offset, c); break;
  case STOR_OP_WRITE: e = api.rbd_aio_writev(b->image, r->iov, r->niov, r->offset, c); break;
  case STOR_OP_FLUSH: e = api.rbd_aio_flush(b->image, c); break;
  case STOR_OP_DISCARD: e = api.rbd_aio_discard(b->image, r->offset, r->length, c); break;
  case STOR_OP_WRITE_ZEROES: e = api.rbd_aio_write_zeroes(b->image, r->offset, r->length, c, 0, 0); break;
  default: e = -EOPNOTSUPP;
  }
  if (e < 0) { /* refused before librbd took the completion: its callback will not run */
    api.rbd_aio_release(c);
    q->inflight--;
    s->next = q->free;
    q->free = s;
    stor_req_done(r, e);
  }
  return STOR_SUBMIT_QUEUED;
}

static int rbd_reap(struct stor_bqueue *bq, bool wait) {
  struct rbd_bqueue *q = (struct rbd_bqueue *)bq;
  int n = 0;
  for (;;) {
    struct rbd_slot *list = atomic_exchange_explicit(&q->done, NULL, memory_order_acquire);
    struct rbd_slot *fifo = NULL; /* the list is newest first: reverse it to complete in finishing order */
    while (list) {
      struct rbd_slot *next = list->next;
      list->next = fifo;
      fifo = list;
      list = next;
    }
    while (fifo) {
      struct rbd_slot *s = fifo;
      fifo = s->next;
      struct stor_req *r = s->req;
      ssize_t ret = s->ret;
      s->next = q->free; /* free before complete(): the completion may submit the next request */
      q->free = s;
      q->inflight--;
      n++;
      int32_t res;
      if (ret < 0)
        res = ret < -4095 ? -EIO : (int32_t)ret;
      else if (r->op == STOR_OP_READ && (uint64_t)ret != r->length)
        res = -EIO; /* a short read: the frontend checked the range, so the image shrank */
      else
        res = 0;
      stor_req_done(r, res);
    }
    if (n || !wait || !q->inflight) return n;
    struct pollfd pf = {q->evfd, POLLIN, 0};
    poll(&pf, 1, 1000);
    uint64_t v;
    if (read(q->evfd, &v, sizeof v) < 0) { /* nothing pending (EAGAIN): look again */
    }
  }
}

static int rbd_event_fd(struct stor_bqueue *bq) { return ((struct rbd_bqueue *)bq)->evfd; }
static unsigned rbd_inflight(struct stor_bqueue *bq) { return ((struct rbd_bqueue *)bq)->inflight; }
static int rbd_flush_all(struct stor_backend *be) {
  struct rbd_backend *b = (struct rbd_backend *)be;
  return b->base.props.readonly ? 0 : api.rbd_flush(b->image);
}

static void rbd_release(struct rbd_backend *b) {
  if (b->image) {
    /* only an opened backend can have written: a flush on a failed open would need the exclusive lock,
     * and librbd would go and ask its holder (one that died keeps it until its watch expires) */
    if (b->base.ops && !b->base.props.readonly) api.rbd_flush(b->image);
    if (b->locked) api.rbd_lock_release(b->image);
    api.rbd_close(b->image);
  }
  if (b->io) api.rados_ioctx_destroy(b->io);
  if (b->cluster) cluster_put(b->cluster);
  free(b);
}
static void rbd_destroy(struct stor_backend *be) { rbd_release((struct rbd_backend *)be); }

static const struct stor_backend_ops rbd_ops = {
    .version = STOR_BDEV_OPS_V1,
    .name = "rbd",
    .queue_open = rbd_queue_open,
    .queue_close = rbd_queue_close,
    .submit = rbd_submit,
    .commit = rbd_commit,
    .reap = rbd_reap,
    .event_fd = rbd_event_fd,
    .inflight = rbd_inflight,
    .arm = NULL, /* the eventfd is always armed */
    .flush = rbd_flush_all,
    .destroy = rbd_destroy,
};

/* ---- opening: parsed on the caller's thread, done on a helper thread with a deadline ------------ */

struct rbd_open_args {
  char pool[96], ns[96], image[96], snapshot[96];
  char conf[256], id[64], keyring[256];
  uint64_t create_size; /* 0: no create= */
  bool readonly;
  unsigned timeout_s;
};

struct rbd_open_job {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done, abandoned;
  const char *stage; /* what the helper is waiting for, for the timeout message */
  struct rbd_open_args a;
  struct rbd_backend *be;
  int r;
  char err[1024];
};

static void job_stage(struct rbd_open_job *j, const char *stage) {
  pthread_mutex_lock(&j->mu);
  j->stage = stage;
  pthread_mutex_unlock(&j->mu);
}

/* Whether the client holding an image's lock still watches the image header. A client that died
 * keeps its lock but loses its watch once the OSD's watch timeout (osd_client_watch_timeout, 30 s)
 * passes; librbd breaks such a lock when it acquires. Both are listed by address. */
static bool lock_owner_alive(rbd_image_t image, const char *owner) {
  if (!api.rbd_watchers_list) return true;
  stor_rbd_image_watcher w[16];
  size_t n = 16;
  if (api.rbd_watchers_list(image, w, &n) < 0) return true;
  bool alive = false;
  for (size_t i = 0; i < n; i++)
    if (w[i].addr && !strcmp(w[i].addr, owner)) alive = true;
  api.rbd_watchers_list_cleanup(w, n);
  return alive;
}

/* The blocking part of opening: connect, pool, image (created if asked), snapshot, lock, properties. */
static int rbd_do_open(struct rbd_open_job *j, struct rbd_backend **out, char *err, size_t errlen) {
  const struct rbd_open_args *a = &j->a;
  char name[400];
  if (a->ns[0])
    snprintf(name, sizeof name, "%s/%s/%s", a->pool, a->ns, a->image);
  else
    snprintf(name, sizeof name, "%s/%s", a->pool, a->image);
  struct rbd_backend *b = calloc(1, sizeof *b);
  if (!b) return -ENOMEM;
  job_stage(j, "connecting to the cluster's monitors");
  int r = cluster_get(a->conf, a->id, a->keyring, a->timeout_s, &b->cluster, err, errlen);
  if (r < 0) goto fail;
  job_stage(j, "looking up the pool");
  r = api.rados_ioctx_create(b->cluster->rados, a->pool, &b->io);
  if (r < 0) {
    b->io = NULL;
    if (r == -ENOENT)
      snprintf(err, errlen, "rbd: pool '%s' does not exist", a->pool);
    else
      snprintf(err, errlen, "rbd: pool '%s': %s", a->pool, strerror(-r));
    goto fail;
  }
  if (a->ns[0]) api.rados_ioctx_set_namespace(b->io, a->ns);
  bool readonly = a->readonly || a->snapshot[0];
  job_stage(j, "opening the image (no OSD answered)");
  r = readonly ? api.rbd_open_read_only(b->io, a->image, &b->image, NULL)
               : api.rbd_open(b->io, a->image, &b->image, NULL);
  if (r == -ENOENT && a->create_size) {
    int order = 0;
    job_stage(j, "creating the image (no OSD answered)");
    r = api.rbd_create(b->io, a->image, a->create_size, &order);
    if (r < 0 && r != -EEXIST) {
      snprintf(err, errlen, "rbd: cannot create image %s: %s", name, strerror(-r));
      b->image = NULL;
      goto fail;
    }
    job_stage(j, "opening the image (no OSD answered)");
    r = readonly ? api.rbd_open_read_only(b->io, a->image, &b->image, NULL)
                 : api.rbd_open(b->io, a->image, &b->image, NULL);
  }
  if (r < 0) {
    b->image = NULL;
    if (r == -ENOENT)
      snprintf(err, errlen, "rbd: image %s does not exist%s", name, readonly ? "" : " (add ,create=SIZE to create it)");
    else if (r == -EACCES || r == -EPERM)
      snprintf(err, errlen, "rbd: image %s: permission denied for client.%s", name, a->id[0] ? a->id : "admin");
    else
      snprintf(err, errlen, "rbd: cannot open image %s: %s", name, strerror(-r));
    goto fail;
  }
  if (a->snapshot[0]) {
    r = api.rbd_snap_set(b->image, a->snapshot);
    if (r < 0) {
      if (r == -ENOENT)
        snprintf(err, errlen, "rbd: image %s has no snapshot '%s'", name, a->snapshot);
      else
        snprintf(err, errlen, "rbd: image %s: snapshot '%s': %s", name, a->snapshot, strerror(-r));
      goto fail;
    }
  }
  stor_rbd_image_info info;
  job_stage(j, "reading the image header");
  r = api.rbd_stat(b->image, &info, sizeof info);
  if (r < 0) {
    snprintf(err, errlen, "rbd: cannot stat image %s: %s", name, strerror(-r));
    goto fail;
  }
  if (a->create_size && info.size != a->create_size) {
    snprintf(err, errlen, "rbd: image %s exists with size %llu, not %llu: remove it or drop create=", name,
             (unsigned long long)info.size, (unsigned long long)a->create_size);
    r = -EEXIST;
    goto fail;
  }
  if (info.size < 512) {
    snprintf(err, errlen, "rbd: image %s: size %llu is smaller than one sector", name, (unsigned long long)info.size);
    r = -EINVAL;
    goto fail;
  }
  uint64_t features = 0;
  api.rbd_get_features(b->image, &features);
  if (!readonly && (features & STOR_RBD_FEATURE_EXCLUSIVE_LOCK)) {
    /* Refuse an image another client holds rather than take it over: librbd's default is to hand the
     * lock to whoever asks, which would fail the holder's writes once we keep it. */
    job_stage(j, "taking the image's exclusive lock");
    char *owners[8];
    size_t nowners = 8;
    int mode;
    if (api.rbd_lock_get_owners(b->image, &mode, owners, &nowners) == 0 && nowners > 0) {
      bool alive = lock_owner_alive(b->image, owners[0]);
      if (alive)
        snprintf(err, errlen, "rbd: image %s is locked by another client (its exclusive lock is held by %s)", name,
                 owners[0]);
      api.rbd_lock_get_owners_cleanup(owners, nowners);
      if (alive) {
        r = -EBUSY;
        goto fail;
      }
      /* a dead owner (crashed, its watch expired): rbd_lock_acquire breaks its lock, blocklisting it */
    }
    r = api.rbd_lock_acquire(b->image, STOR_RBD_LOCK_MODE_EXCLUSIVE);
    if (r < 0) {
      if (r == -EROFS || r == -EBUSY || r == -EAGAIN) {
        snprintf(err, errlen, "rbd: image %s is locked by another client (exclusive lock)", name);
        r = -EBUSY;
      } else
        snprintf(err, errlen, "rbd: image %s: cannot take the exclusive lock: %s", name, strerror(-r));
      goto fail;
    }
    b->locked = true;
  }
  struct stor_bdev_props *p = &b->base.props;
  stor_bdev_props_default(p, info.size & ~511ull, readonly);
  p->remote = true;
  if (info.obj_size && info.obj_size <= UINT32_MAX && info.obj_size % 512 == 0)
    p->optimal_io_size = (uint32_t)info.obj_size;
  p->can_write_zeroes = !readonly && api.rbd_aio_write_zeroes != NULL;
  b->base.ops = &rbd_ops;
  snprintf(b->base.desc, sizeof b->base.desc, "rbd:%.200s%s%.96s", name, a->snapshot[0] ? "@" : "", a->snapshot);
  *out = b;
  return 0;
fail:
  rbd_release(b);
  return r;
}

static void *rbd_open_thread(void *arg) {
  struct rbd_open_job *j = arg;
  struct rbd_backend *be = NULL;
  char err[sizeof j->err] = "";
  int r = rbd_do_open(j, &be, err, sizeof err);
  pthread_mutex_lock(&j->mu);
  bool abandoned = j->abandoned;
  if (!abandoned) {
    j->r = r;
    j->be = be;
    memcpy(j->err, err, sizeof err);
    j->done = true;
    pthread_cond_signal(&j->cv);
  }
  pthread_mutex_unlock(&j->mu);
  if (abandoned) { /* the opener gave up: undo what we made, then free the job it left us */
    if (be) rbd_release(be);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
  }
  return NULL;
}

static const struct stor_bdev_prop_help rbd_props[] = {
    {"image", "POOL/IMAGE or POOL/NAMESPACE/IMAGE (required)"},
    {"conf", "PATH: the ceph.conf to read (default: librados' search, $CEPH_CONF then /etc/ceph/ceph.conf)"},
    {"id", "USER: the client name without 'client.' (default admin)"},
    {"keyring", "PATH: the keyring holding the client's key (default: what ceph.conf names)"},
    {"create", "SIZE: create the image with this size if it does not exist"},
    {"snapshot", "NAME: open this snapshot of the image (read-only)"},
    {"readonly", "on: open read-only, without the exclusive lock (default off)"},
    {"connect-timeout", "SECONDS: how long connecting and each monitor command may take (default 10)"},
    {NULL, NULL},
};

static int copy_value(const struct stor_kv *kv, char *dst, size_t cap, char *err, size_t errlen) {
  const char *v = kv->value ? kv->value : "";
  if (strlen(v) >= cap) {
    snprintf(err, errlen, "rbd: %s=%.40s...: longer than %zu characters", kv->key, v, cap - 1);
    return -EINVAL;
  }
  memcpy(dst, v, strlen(v) + 1);
  return 0;
}

/* "pool/image" or "pool/namespace/image" into the args; -EINVAL naming the property otherwise. */
static int parse_image(const char *v, struct rbd_open_args *a, char *err, size_t errlen) {
  const char *s1 = strchr(v, '/');
  const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
  const char *img = s2 ? s2 + 1 : s1 ? s1 + 1 : NULL;
  size_t pl = s1 ? (size_t)(s1 - v) : 0, nl = s2 ? (size_t)(s2 - s1 - 1) : 0;
  if (!s1 || !pl || !*img || strchr(img, '/') || (s2 && !nl) || pl >= sizeof a->pool || nl >= sizeof a->ns ||
      strlen(img) >= sizeof a->image || strchr(img, '@')) {
    snprintf(err, errlen, "rbd: image=%s: expected POOL/IMAGE or POOL/NAMESPACE/IMAGE (a snapshot is snapshot=NAME)",
             v);
    return -EINVAL;
  }
  memcpy(a->pool, v, pl);
  a->pool[pl] = 0;
  if (s2) {
    memcpy(a->ns, s1 + 1, nl);
    a->ns[nl] = 0;
  }
  snprintf(a->image, sizeof a->image, "%s", img);
  return 0;
}

static int rbd_open(const struct stor_kv *kv, size_t n, struct stor_backend **out, char *err, size_t errlen) {
  struct rbd_open_job *j = calloc(1, sizeof *j);
  if (!j) return -ENOMEM;
  struct rbd_open_args *a = &j->a;
  a->timeout_s = RBD_CONNECT_TIMEOUT_DEFAULT;
  bool have_image = false;
  int r = 0;
  for (size_t i = 0; i < n && r == 0; i++) {
    const char *k = kv[i].key;
    if (!strcmp(k, "image")) {
      r = parse_image(kv[i].value ? kv[i].value : "", a, err, errlen);
      have_image = true;
    } else if (!strcmp(k, "conf"))
      r = copy_value(&kv[i], a->conf, sizeof a->conf, err, errlen);
    else if (!strcmp(k, "id")) {
      const char *v = kv[i].value ? kv[i].value : "";
      r = copy_value(&kv[i], a->id, sizeof a->id, err, errlen);
      if (!r && (!v[0] || !strncmp(v, "client.", 7))) {
        snprintf(err, errlen, "rbd: id=%s: the user name without 'client.' (e.g. id=admin)", v);
        r = -EINVAL;
      }
    } else if (!strcmp(k, "keyring"))
      r = copy_value(&kv[i], a->keyring, sizeof a->keyring, err, errlen);
    else if (!strcmp(k, "snapshot")) {
      r = copy_value(&kv[i], a->snapshot, sizeof a->snapshot, err, errlen);
      if (!r && !a->snapshot[0]) {
        snprintf(err, errlen, "rbd: snapshot: a snapshot name is needed (snapshot=NAME)");
        r = -EINVAL;
      }
    } else if (!strcmp(k, "create")) {
      r = stor_kv_size("rbd", &kv[i], &a->create_size, err, errlen);
      if (!r && (a->create_size == 0 || a->create_size % 512)) {
        snprintf(err, errlen, "rbd: create=%s: a size greater than 0 and a multiple of 512 is needed", kv[i].value);
        r = -EINVAL;
      }
    } else if (!strcmp(k, "readonly") || !strcmp(k, "ro"))
      r = stor_kv_bool("rbd", &kv[i], &a->readonly, err, errlen);
    else if (!strcmp(k, "connect-timeout")) {
      uint32_t t;
      r = stor_kv_u32("rbd", &kv[i], &t, err, errlen);
      if (!r && (t < 1 || t > 3600)) {
        snprintf(err, errlen, "rbd: connect-timeout=%s: expected 1..3600 seconds", kv[i].value);
        r = -EINVAL;
      }
      a->timeout_s = t;
    } else
      r = stor_kv_unknown(&stor_rbd_driver, &kv[i], err, errlen);
  }
  if (!r && !have_image) {
    snprintf(err, errlen, "rbd: image: POOL/IMAGE is required");
    r = -EINVAL;
  }
  if (!r && a->create_size && (a->readonly || a->snapshot[0])) {
    snprintf(err, errlen, "rbd: create: cannot create an image opened read-only");
    r = -EINVAL;
  }
  if (!r) r = rbd_api_load(err, errlen);
  if (r < 0) {
    free(j);
    return r;
  }
  pthread_mutex_init(&j->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  j->stage = "starting";
  pthread_t th;
  r = pthread_create(&th, NULL, rbd_open_thread, j);
  if (r) {
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
    snprintf(err, errlen, "rbd: cannot start the open thread: %s", strerror(r));
    return -r;
  }
  pthread_detach(th);
  /* connect (client_mount_timeout) and a monitor command or two (rados_mon_op_timeout) fit twice the
   * timeout; the image steps need an OSD and have no librados bound of their own */
  unsigned deadline_s = 2 * a->timeout_s + 5;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += deadline_s;
  pthread_mutex_lock(&j->mu);
  while (!j->done)
    if (pthread_cond_timedwait(&j->cv, &j->mu, &until) == ETIMEDOUT) break;
  if (!j->done) { /* leave the job to the helper thread, which frees it when librados returns */
    j->abandoned = true;
    snprintf(err, errlen, "rbd: %s/%s: the cluster did not answer within %u s while %s", a->pool, a->image, deadline_s,
             j->stage);
    pthread_mutex_unlock(&j->mu);
    return -ETIMEDOUT;
  }
  pthread_mutex_unlock(&j->mu);
  r = j->r;
  if (r < 0)
    snprintf(err, errlen, "%s", j->err[0] ? j->err : strerror(-r));
  else
    *out = &j->be->base;
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
  return r;
}

const struct stor_bdev_driver stor_rbd_driver = {
    .name = "rbd",
    .ops_version = STOR_BDEV_OPS_V1,
    .props = rbd_props,
    .open = rbd_open,
    .help = "a Ceph RBD image through librbd (loaded at open: librbd1)",
};
