/* The file backend: a raw image or block device through io_uring (liburing), one ring per queue
 * thread, with an eventfd registered on the ring as the completion fd. */
#include "bdev/bdev.h"
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_backend { struct stor_backend base; int fd; bool blockdev; };

/* ---- file: raw image or block device through io_uring, one ring per queue thread */


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
const struct stor_backend_ops stor_file_ops = {
  .name = "file", .queue_open = file_queue_open, .queue_close = file_queue_close, .submit = file_submit,
  .commit = file_commit, .reap = file_reap, .event_fd = file_event_fd, .inflight = file_inflight,
  .flush = file_flush, .destroy = file_destroy,
};


int stor_file_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen) {
  struct stor_backend *be = NULL;
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
    be->ops = &stor_file_ops;
    be->capacity = size & ~511ull;
    snprintf(be->desc, sizeof be->desc, "file:%.300s", cfg->path);
    be->readonly = cfg->readonly;
  be->can_discard = true;
  be->can_write_zeroes = true;
  be->refs = 1;
  *out = be;
  return 0;
}
