/* Backends: null, mem (memfd), file (io_uring through liburing). Each serves struct stor_req
 * through the same small ops table (req.h). */
#include "backend.h"
#include "napi_util.h"
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len) {
  size_t done = 0;
  for (int i = 0; i < n && done < len; i++) {
    if (skip >= iov[i].iov_len) { skip -= iov[i].iov_len; continue; }
    size_t take = iov[i].iov_len - skip;
    if (take > len - done) take = len - done;
    memcpy((char *)buf + done, (char *)iov[i].iov_base + skip, take);
    done += take; skip = 0;
  }
  return done;
}

size_t buf_to_iov(const struct iovec *iov, int n, size_t skip, const void *buf, size_t len) {
  size_t done = 0;
  for (int i = 0; i < n && done < len; i++) {
    if (skip >= iov[i].iov_len) { skip -= iov[i].iov_len; continue; }
    size_t take = iov[i].iov_len - skip;
    if (take > len - done) take = len - done;
    memcpy((char *)iov[i].iov_base + skip, (const char *)buf + done, take);
    done += take; skip = 0;
  }
  return done;
}

void iov_memset(const struct iovec *iov, int n, int c) {
  for (int i = 0; i < n; i++) memset(iov[i].iov_base, c, iov[i].iov_len);
}

/* ---- null: reads are zero-filled (the same work as qemu's null-co,read-zeroes=on), writes dropped */

struct sync_bqueue { struct stor_backend *be; };

static int sync_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  struct sync_bqueue *q = calloc(1, sizeof *q);
  if (!q) return -ENOMEM;
  q->be = be;
  *out = (struct stor_bqueue *)q;
  return 0;
}
static void sync_queue_close(struct stor_bqueue *q) { free(q); }
static void sync_commit(struct stor_bqueue *q) {}
static int sync_reap(struct stor_bqueue *q, bool wait) { return 0; }
static int sync_event_fd(struct stor_bqueue *q) { return -1; }
static unsigned sync_inflight(struct stor_bqueue *q) { return 0; }

static void null_submit(struct stor_bqueue *bq, struct stor_req *r) {
  if (r->op == STOR_OP_READ) iov_memset(r->iov, r->niov, 0);
  stor_req_done(r, 0);
}
static int null_flush(struct stor_backend *be) { return 0; }
static void plain_destroy(struct stor_backend *be) { free(be); }

static const struct stor_backend_ops null_ops = {
  .name = "null", .queue_open = sync_queue_open, .queue_close = sync_queue_close, .submit = null_submit,
  .commit = sync_commit, .reap = sync_reap, .event_fd = sync_event_fd, .inflight = sync_inflight,
  .flush = null_flush, .destroy = plain_destroy,
};

/* ---- mem: a sparse memfd mapping; discard punches holes, so discarded ranges read as zeros */

struct mem_backend { struct stor_backend base; int fd; uint8_t *mem; };

static void mem_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct mem_backend *m = (struct mem_backend *)((struct sync_bqueue *)bq)->be;
  switch (r->op) {
  case STOR_OP_READ: buf_to_iov(r->iov, r->niov, 0, m->mem + r->offset, r->length); break;
  case STOR_OP_WRITE: iov_to_buf(r->iov, r->niov, 0, m->mem + r->offset, r->length); break;
  case STOR_OP_FLUSH: break;
  case STOR_OP_DISCARD:
  case STOR_OP_WRITE_ZEROES:
    /* shmem zeroes the partial pages at either end of a punched range */
    if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->offset, (off_t)r->length) < 0) {
      if (r->op == STOR_OP_DISCARD) { stor_req_done(r, -errno); return; }
      memset(m->mem + r->offset, 0, r->length);
    }
    break;
  default: stor_req_done(r, -EOPNOTSUPP); return;
  }
  stor_req_done(r, 0);
}
static void mem_destroy(struct stor_backend *be) {
  struct mem_backend *m = (struct mem_backend *)be;
  munmap(m->mem, be->capacity);
  close(m->fd);
  free(m);
}
static const struct stor_backend_ops mem_ops = {
  .name = "mem", .queue_open = sync_queue_open, .queue_close = sync_queue_close, .submit = mem_submit,
  .commit = sync_commit, .reap = sync_reap, .event_fd = sync_event_fd, .inflight = sync_inflight,
  .flush = null_flush, .destroy = mem_destroy,
};

/* ---- file: raw image or block device through io_uring, one ring per queue thread */

struct file_backend { struct stor_backend base; int fd; bool blockdev; };
struct file_bqueue {
  struct file_backend *be;
  struct io_uring ring;
  int evfd;
  unsigned queued;    /* prepared SQEs not yet submitted */
  unsigned inflight;  /* submitted, not yet reaped */
};

static int file_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  struct file_bqueue *q = calloc(1, sizeof *q);
  if (!q) return -ENOMEM;
  q->be = (struct file_backend *)be;
  if (depth < 8) depth = 8;
  int r = io_uring_queue_init(depth, &q->ring, 0);
  if (r < 0) { free(q); return r; }
  q->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->evfd < 0 || io_uring_register_eventfd(&q->ring, q->evfd) < 0) {
    int e = errno ? -errno : -EIO;
    if (q->evfd >= 0) close(q->evfd);
    io_uring_queue_exit(&q->ring);
    free(q);
    return e;
  }
  *out = (struct stor_bqueue *)q;
  return 0;
}

static void file_queue_close(struct stor_bqueue *bq) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  io_uring_queue_exit(&q->ring);
  close(q->evfd);
  free(q);
}

static void file_commit(struct stor_bqueue *bq) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  if (!q->queued) return;
  int r = io_uring_submit(&q->ring);
  if (r > 0) { q->inflight += (unsigned)r; q->queued -= (unsigned)r; }
}

static void file_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
  if (!sqe) { file_commit(bq); sqe = io_uring_get_sqe(&q->ring); }
  if (!sqe) { stor_req_done(r, -EBUSY); return; }
  int fd = q->be->fd;
  switch (r->op) {
  case STOR_OP_READ: io_uring_prep_readv(sqe, fd, r->iov, (unsigned)r->niov, r->offset); break;
  case STOR_OP_WRITE: io_uring_prep_writev(sqe, fd, r->iov, (unsigned)r->niov, r->offset); break;
  case STOR_OP_FLUSH: io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); break;
  case STOR_OP_DISCARD:
    io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, r->offset, r->length);
    break;
  case STOR_OP_WRITE_ZEROES:
    io_uring_prep_fallocate(sqe, fd, (r->flags & STOR_REQ_F_UNMAP) ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                                                  : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                            r->offset, r->length);
    break;
  default:
    io_uring_prep_nop(sqe);
    r->result = -EOPNOTSUPP;
    io_uring_sqe_set_data(sqe, r);
    q->queued++;
    return;
  }
  r->result = 0;
  io_uring_sqe_set_data(sqe, r);
  q->queued++;
}

static int file_reap(struct stor_bqueue *bq, bool wait) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  struct io_uring_cqe *cqe;
  int n = 0;
  if (wait && q->inflight) {
    int r;
    do r = io_uring_wait_cqe(&q->ring, &cqe); while (r == -EINTR);
  }
  while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
    struct stor_req *r = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&q->ring, cqe);
    q->inflight--;
    n++;
    if (r->result == -EOPNOTSUPP) { r->complete(r); continue; }
    if (res < 0) stor_req_done(r, res);
    else if ((r->op == STOR_OP_READ || r->op == STOR_OP_WRITE) && (uint64_t)res != r->length) stor_req_done(r, -EIO);
    else stor_req_done(r, 0);
  }
  return n;
}

static int file_event_fd(struct stor_bqueue *bq) { return ((struct file_bqueue *)bq)->evfd; }
static unsigned file_inflight(struct stor_bqueue *bq) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  return q->inflight + q->queued;
}
static int file_flush(struct stor_backend *be) {
  return fdatasync(((struct file_backend *)be)->fd) < 0 ? -errno : 0;
}
static void file_destroy(struct stor_backend *be) {
  struct file_backend *f = (struct file_backend *)be;
  if (!be->readonly) fdatasync(f->fd);
  close(f->fd);
  free(f);
}
static const struct stor_backend_ops file_ops = {
  .name = "file", .queue_open = file_queue_open, .queue_close = file_queue_close, .submit = file_submit,
  .commit = file_commit, .reap = file_reap, .event_fd = file_event_fd, .inflight = file_inflight,
  .flush = file_flush, .destroy = file_destroy,
};

/* ---- opening ------------------------------------------------------------------------------- */

int stor_backend_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen) {
  struct stor_backend *be = NULL;
  if (!strcmp(cfg->kind, "null")) {
    be = calloc(1, sizeof *be);
    if (!be) return -ENOMEM;
    be->ops = &null_ops;
    be->capacity = cfg->size;
    snprintf(be->desc, sizeof be->desc, "null:%llu", (unsigned long long)cfg->size);
  } else if (!strcmp(cfg->kind, "mem")) {
    struct mem_backend *m = calloc(1, sizeof *m);
    if (!m) return -ENOMEM;
    m->fd = memfd_create("stor-mem", MFD_CLOEXEC);
    if (m->fd < 0 || ftruncate(m->fd, (off_t)cfg->size) < 0) {
      int e = errno; if (m->fd >= 0) close(m->fd); free(m);
      snprintf(err, errlen, "mem backend: %s", strerror(e)); return -e;
    }
    m->mem = mmap(NULL, cfg->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
    if (m->mem == MAP_FAILED) {
      int e = errno; close(m->fd); free(m);
      snprintf(err, errlen, "mem backend: mmap %llu bytes: %s", (unsigned long long)cfg->size, strerror(e)); return -e;
    }
    be = &m->base;
    be->ops = &mem_ops;
    be->capacity = cfg->size;
    snprintf(be->desc, sizeof be->desc, "mem:%llu", (unsigned long long)cfg->size);
  } else if (!strcmp(cfg->kind, "file")) {
    int flags = O_CLOEXEC | (cfg->readonly ? O_RDONLY : O_RDWR) | (cfg->direct ? O_DIRECT : 0);
    if (cfg->create) flags |= O_CREAT;
    int fd = open(cfg->path, flags, 0644);
    if (fd < 0) { int e = errno; snprintf(err, errlen, "%s: %s", cfg->path, strerror(e)); return -e; }
    struct stat st;
    if (fstat(fd, &st) < 0) { int e = errno; close(fd); snprintf(err, errlen, "%s: %s", cfg->path, strerror(e)); return -e; }
    uint64_t size;
    bool blockdev = S_ISBLK(st.st_mode);
    if (blockdev) {
      if (ioctl(fd, BLKGETSIZE64, &size) < 0) { int e = errno; close(fd); snprintf(err, errlen, "%s: BLKGETSIZE64: %s", cfg->path, strerror(e)); return -e; }
    } else if (S_ISREG(st.st_mode)) {
      size = (uint64_t)st.st_size;
      if (cfg->create && size == 0 && cfg->size > 0) {
        if (ftruncate(fd, (off_t)cfg->size) < 0) { int e = errno; close(fd); snprintf(err, errlen, "%s: ftruncate: %s", cfg->path, strerror(e)); return -e; }
        size = cfg->size;
      } else if (cfg->create && cfg->size > 0 && size != cfg->size) {
        close(fd);
        snprintf(err, errlen, "%s exists with size %llu, not %llu: remove it or drop create=", cfg->path,
                 (unsigned long long)size, (unsigned long long)cfg->size);
        return -EEXIST;
      }
    } else {
      close(fd); snprintf(err, errlen, "%s: not a regular file or block device", cfg->path); return -EINVAL;
    }
    if (size < 512) { close(fd); snprintf(err, errlen, "%s: size %llu is smaller than one sector", cfg->path, (unsigned long long)size); return -EINVAL; }
    struct file_backend *f = calloc(1, sizeof *f);
    if (!f) { close(fd); return -ENOMEM; }
    f->fd = fd; f->blockdev = blockdev;
    be = &f->base;
    be->ops = &file_ops;
    be->capacity = size & ~511ull;
    snprintf(be->desc, sizeof be->desc, "file:%.300s", cfg->path);
  } else {
    snprintf(err, errlen, "unknown backend kind '%s'", cfg->kind);
    return -EINVAL;
  }
  be->readonly = cfg->readonly;
  be->can_discard = true;
  be->can_write_zeroes = true;
  be->refs = 1;
  *out = be;
  return 0;
}

void stor_backend_put(struct stor_backend *be) {
  if (be && --be->refs == 0) be->ops->destroy(be);
}

/* ---- N-API ----------------------------------------------------------------------------------- */

struct backend_handle { struct stor_backend *be; };

static void backend_finalize(napi_env env, void *data, void *hint) {
  struct backend_handle *h = data;
  stor_backend_put(h->be);
  free(h);
}

struct stor_backend *backend_from_js(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok) {
    throw_msg(env, "expected a backend handle");
    return NULL;
  }
  struct backend_handle *h = data;
  if (!h->be) { throw_msg(env, "backend is closed"); return NULL; }
  return h->be;
}

/* backendOpen({kind, size, path, create, direct, readonly}) -> handle */
static napi_value js_backend_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend_config cfg;
  memset(&cfg, 0, sizeof cfg);
  if (!prop_str(env, argv[0], "kind", cfg.kind, sizeof cfg.kind, "") || !prop_u64(env, argv[0], "size", &cfg.size, 0) ||
      !prop_str(env, argv[0], "path", cfg.path, sizeof cfg.path, "") || !prop_bool(env, argv[0], "create", &cfg.create, false) ||
      !prop_bool(env, argv[0], "direct", &cfg.direct, false) || !prop_bool(env, argv[0], "readonly", &cfg.readonly, false))
    return NULL;
  char err[512] = "";
  struct stor_backend *be;
  int r = stor_backend_open(&cfg, &be, err, sizeof err);
  if (r < 0) {
    napi_value m, e;
    napi_create_string_utf8(env, err[0] ? err : strerror(-r), NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    set_prop(env, e, "errno", make_i32(env, -r));
    napi_throw(env, e);
    return NULL;
  }
  return backend_wrap(env, be);
}

napi_value backend_wrap(napi_env env, struct stor_backend *be) {
  struct backend_handle *h = calloc(1, sizeof *h);
  if (!h) { stor_backend_put(be); return throw_errno(env, "backend", ENOMEM); }
  h->be = be;
  napi_value ext;
  if (napi_create_external(env, h, backend_finalize, NULL, &ext) != napi_ok) { stor_backend_put(be); free(h); return NULL; }
  return ext;
}

/* backendInfo(handle) -> {kind, capacity, readonly, desc} */
static napi_value js_backend_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  napi_value o, s;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, be->ops->name, NAPI_AUTO_LENGTH, &s); set_prop(env, o, "kind", s);
  napi_create_string_utf8(env, be->desc, NAPI_AUTO_LENGTH, &s); set_prop(env, o, "desc", s);
  set_prop(env, o, "capacity", make_f64(env, (double)be->capacity));
  set_prop(env, o, "readonly", make_bool(env, be->readonly));
  return o;
}

/* backendFlush(handle) -> 0 or throws */
static napi_value js_backend_flush(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  int r = be->ops->flush(be);
  if (r < 0) return throw_errno(env, "flush", -r);
  return make_undefined(env);
}

void backend_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "backendOpen", js_backend_open);
  export_fn(env, exports, "backendInfo", js_backend_info);
  export_fn(env, exports, "backendFlush", js_backend_flush);
}
