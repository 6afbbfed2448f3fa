/* The file backend: a raw image or block device through io_uring (liburing), one ring per queue
 * thread, with an eventfd registered on the ring as the completion fd. With direct=on (O_DIRECT) a
 * request whose iovecs are not all aligned as the kernel wants (address to the memory alignment,
 * length to the offset alignment, both from statx) goes through an aligned bounce buffer, as QEMU's
 * block layer does: virtio constrains only a request's total length, not how a driver splits it.
 * Aligned requests stay zero-copy; the only per-I/O cost is the alignment check. */
#include "bdev/bdev.h"
#include "bdev/image_lock.h"
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_backend {
  struct stor_backend base;
  int fd;
  bool blockdev;
  unsigned ring_size;
  bool direct;
  uint32_t dio_mem_align, dio_len_align; /* O_DIRECT: iovec address and length alignment (powers of 2) */
};

/* Bounce buffers for misaligned O_DIRECT requests, per queue: a few slots whose buffers are allocated
 * on first use and kept while small, and a budget on the bytes bounced at once. Past either limit
 * submit() answers BUSY (back-pressure) until a bounced request completes; a request larger than the
 * whole budget still goes through when it would be the only one bounced, so every request can make
 * progress. Memory per queue: at most BOUNCE_SLOTS x BOUNCE_KEEP_BYTES kept, max(budget, one request)
 * in flight. */
#define BOUNCE_SLOTS        16u
#define BOUNCE_BUDGET_BYTES (8u << 20)
#define BOUNCE_KEEP_BYTES   (256u << 10)

struct file_bounce {
  void *buf;
  size_t cap;
  struct stor_req *req; /* NULL: free */
};

struct file_bqueue {
  struct file_backend *be;
  unsigned depth; /* requests the ring may hold (queued + inflight); more is back-pressure */
  struct io_uring ring;
  int evfd;
  unsigned queued;            /* prepared SQEs not yet submitted */
  unsigned inflight;          /* submitted, not yet reaped */
  struct file_bounce *bounce; /* BOUNCE_SLOTS entries with direct=on, else NULL */
  unsigned bounce_busy;
  size_t bounce_bytes; /* bytes of the bounced requests in flight */
};

/* io_uring user_data: a stor_req, or (low bit set) the bounce slot serving one */
#define UD_BOUNCE 1u

static int file_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  struct file_bqueue *q = calloc(1, sizeof *q);
  if (!q) return -ENOMEM;
  q->be = (struct file_backend *)be;
  if (q->be->ring_size) depth = q->be->ring_size;
  if (depth < 1) depth = 1;
  q->depth = depth;
  if (q->be->direct && !(q->bounce = calloc(BOUNCE_SLOTS, sizeof *q->bounce))) {
    free(q);
    return -ENOMEM;
  }
  int r = io_uring_queue_init(depth, &q->ring, 0);
  if (r < 0) {
    free(q->bounce);
    free(q);
    return r;
  }
  q->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->evfd < 0 || io_uring_register_eventfd(&q->ring, q->evfd) < 0) {
    int e = errno ? -errno : -EIO;
    if (q->evfd >= 0) close(q->evfd);
    io_uring_queue_exit(&q->ring);
    free(q->bounce);
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
  if (q->bounce)
    for (unsigned i = 0; i < BOUNCE_SLOTS; i++) free(q->bounce[i].buf);
  free(q->bounce);
  free(q);
}

static void file_commit(struct stor_bqueue *bq) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  if (!q->queued) return;
  int r = io_uring_submit(&q->ring);
  if (r > 0) {
    q->inflight += (unsigned)r;
    q->queued -= (unsigned)r;
  }
}

/* Whether O_DIRECT would refuse these iovecs: every address aligned to the memory alignment and every
 * length to the offset alignment (the kernel's per-segment rule, iov_iter_is_aligned). */
static bool iov_misaligned(const struct file_backend *f, const struct iovec *iov, int n) {
  uintptr_t mem_mask = f->dio_mem_align - 1, len_mask = f->dio_len_align - 1;
  for (int i = 0; i < n; i++)
    if (((uintptr_t)iov[i].iov_base & mem_mask) | (iov[i].iov_len & len_mask)) return true;
  return false;
}

/* A bounce slot holding an aligned buffer of r->length bytes for r, or NULL when the pool is
 * exhausted (the caller answers BUSY). With nothing else bounced an allocation failure is the
 * request's error (*err), since waiting would not help. */
static struct file_bounce *bounce_get(struct file_bqueue *q, struct stor_req *r, int *err) {
  *err = 0;
  if (q->bounce_busy == BOUNCE_SLOTS) return NULL;
  if (q->bounce_busy && q->bounce_bytes + r->length > BOUNCE_BUDGET_BYTES) return NULL;
  struct file_bounce *b = q->bounce;
  while (b->req) b++;
  if (b->cap < r->length) {
    free(b->buf);
    b->buf = NULL;
    b->cap = 0;
    uint32_t a = q->be->dio_mem_align > q->be->dio_len_align ? q->be->dio_mem_align : q->be->dio_len_align;
    size_t want = (r->length + a - 1) & ~(size_t)(a - 1);
    if (posix_memalign(&b->buf, a < sizeof(void *) ? sizeof(void *) : a, want)) {
      b->buf = NULL;
      if (!q->bounce_busy) *err = -ENOMEM;
      return NULL;
    }
    b->cap = want;
  }
  b->req = r;
  q->bounce_busy++;
  q->bounce_bytes += r->length;
  return b;
}

static void bounce_put(struct file_bqueue *q, struct file_bounce *b) {
  q->bounce_busy--;
  q->bounce_bytes -= b->req->length;
  b->req = NULL;
  if (b->cap > BOUNCE_KEEP_BYTES) {
    free(b->buf);
    b->buf = NULL;
    b->cap = 0;
  }
}

/* At most depth requests in the ring at once: the completion queue can then never overflow, and
 * a caller that asks for more gets BUSY (back-pressure) instead of a failed request. */
static enum stor_submit file_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  if (q->queued + q->inflight >= q->depth) return STOR_SUBMIT_BUSY;
  int fd = q->be->fd;
  struct file_bounce *b = NULL;
  if (q->bounce && (r->op == STOR_OP_READ || r->op == STOR_OP_WRITE) && iov_misaligned(q->be, r->iov, r->niov)) {
    int err;
    /* one read(2)/write(2) moves at most MAX_RW_COUNT (0x7ffff000) bytes: a larger request would be short */
    if (r->length > 0x7ffff000u) {
      stor_req_done(r, -EINVAL);
      return STOR_SUBMIT_QUEUED;
    }
    b = bounce_get(q, r, &err);
    if (!b && err) {
      stor_req_done(r, err);
      return STOR_SUBMIT_QUEUED;
    }
    if (!b) return STOR_SUBMIT_BUSY;
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
  if (!sqe) {
    file_commit(bq);
    sqe = io_uring_get_sqe(&q->ring);
  }
  if (!sqe) {
    if (b) bounce_put(q, b);
    return STOR_SUBMIT_BUSY;
  }
  if (b) {
    /* one aligned buffer instead of the iovecs: writes copy the data in now, reads copy out in reap */
    if (r->op == STOR_OP_WRITE) {
      iov_to_buf(r->iov, r->niov, 0, b->buf, r->length);
      io_uring_prep_write(sqe, fd, b->buf, (unsigned)r->length, r->offset);
    } else {
      io_uring_prep_read(sqe, fd, b->buf, (unsigned)r->length, r->offset);
    }
    r->result = 0;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)b | UD_BOUNCE);
    q->queued++;
    return STOR_SUBMIT_QUEUED;
  }
  switch (r->op) {
  case STOR_OP_READ: io_uring_prep_readv(sqe, fd, r->iov, (unsigned)r->niov, r->offset); break;
  case STOR_OP_WRITE: io_uring_prep_writev(sqe, fd, r->iov, (unsigned)r->niov, r->offset); break;
  case STOR_OP_FLUSH: io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); break;
  case STOR_OP_DISCARD:
    io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, r->offset, r->length);
    break;
  case STOR_OP_WRITE_ZEROES:
    io_uring_prep_fallocate(sqe, fd,
                            (r->flags & STOR_REQ_F_UNMAP) ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                                          : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                            r->offset, r->length);
    break;
  default:
    io_uring_prep_nop(sqe);
    r->result = -EOPNOTSUPP;
    io_uring_sqe_set_data(sqe, r);
    q->queued++;
    return STOR_SUBMIT_QUEUED;
  }
  r->result = 0;
  io_uring_sqe_set_data(sqe, r);
  q->queued++;
  return STOR_SUBMIT_QUEUED;
}

/* FALLOC_FL_ZERO_RANGE is not offered by every filesystem (tmpfs lacks it): zero the range by
 * deallocating it and allocating it again, so it reads back as zeros and stays provisioned, as a
 * write-zeroes without UNMAP asks. Synchronous: it runs only after the filesystem refused ZERO_RANGE. */
static int zero_by_punch_and_allocate(int fd, uint64_t off, uint64_t len) {
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0) return -errno;
  if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0) return -errno;
  return 0;
}

static int file_reap(struct stor_bqueue *bq, bool wait) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  struct io_uring_cqe *cqe;
  int n = 0;
  if (wait && q->inflight) {
    int r;
    do r = io_uring_wait_cqe(&q->ring, &cqe);
    while (r == -EINTR);
  }
  while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&q->ring, cqe);
    q->inflight--;
    n++;
    struct stor_req *r;
    if (ud & UD_BOUNCE) {
      struct file_bounce *b = (struct file_bounce *)(uintptr_t)(ud & ~(uint64_t)UD_BOUNCE);
      r = b->req;
      if (r->op == STOR_OP_READ && res >= 0 && (uint64_t)res == r->length)
        buf_to_iov(r->iov, r->niov, 0, b->buf, r->length);
      bounce_put(q, b);
    } else {
      r = (struct stor_req *)(uintptr_t)ud;
    }
    if (r->result == -EOPNOTSUPP) {
      r->complete(r);
      continue;
    }
    if (res == -EOPNOTSUPP && r->op == STOR_OP_WRITE_ZEROES && !(r->flags & STOR_REQ_F_UNMAP) && !q->be->blockdev)
      stor_req_done(r, zero_by_punch_and_allocate(q->be->fd, r->offset, r->length));
    else if (res < 0)
      stor_req_done(r, res);
    else if ((r->op == STOR_OP_READ || r->op == STOR_OP_WRITE) && (uint64_t)res != r->length)
      stor_req_done(r, -EIO);
    else
      stor_req_done(r, 0);
  }
  return n;
}

static int file_event_fd(struct stor_bqueue *bq) { return ((struct file_bqueue *)bq)->evfd; }
static unsigned file_inflight(struct stor_bqueue *bq) {
  struct file_bqueue *q = (struct file_bqueue *)bq;
  return q->inflight + q->queued;
}
static int file_flush(struct stor_backend *be) { return fdatasync(((struct file_backend *)be)->fd) < 0 ? -errno : 0; }
static void file_destroy(struct stor_backend *be) {
  struct file_backend *f = (struct file_backend *)be;
  if (!be->props.readonly) fdatasync(f->fd);
  close(f->fd);
  free(f);
}
static const struct stor_backend_ops file_ops = {
    .version = STOR_BDEV_OPS_V1,
    .name = "file",
    .queue_open = file_queue_open,
    .queue_close = file_queue_close,
    .submit = file_submit,
    .commit = file_commit,
    .reap = file_reap,
    .event_fd = file_event_fd,
    .inflight = file_inflight,
    .flush = file_flush,
    .destroy = file_destroy,
};

static const struct stor_bdev_prop_help file_props[] = {
    {"path", "the image file or block device (required)"},
    {"create", "SIZE: create the file with this size if it does not exist (or is empty)"},
    {"direct", "on: O_DIRECT (buffers and offsets aligned as buf-alignment and request-alignment say)"},
    {"readonly", "on: open read-only; writes, discards and write-zeroes are refused (default off)"},
    {"ring-size",
     "N: io_uring entries per queue, the most requests one queue has in flight (default: the queue depth)"},
    {"locking", "on|off|auto: QEMU-compatible OFD image locks; a writer refuses other writers (default auto: on where "
                "the file system has OFD locks)"},
    {NULL, NULL},
};

/* The O_DIRECT alignments of an open file: what statx reports (Linux 6.1+), else the logical sector
 * size of a block device, else 512 for offsets and a page for buffers. */
static void direct_alignment(int fd, bool blockdev, uint32_t *offset_align, uint32_t *mem_align) {
  *offset_align = 512;
  *mem_align = 4096;
  int ssz = 0;
  if (blockdev && ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz >= 512) *offset_align = (uint32_t)ssz;
#ifdef STATX_DIOALIGN
  struct statx sx;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
      sx.stx_dio_offset_align) {
    if (sx.stx_dio_offset_align > *offset_align) *offset_align = sx.stx_dio_offset_align;
    if (sx.stx_dio_mem_align) *mem_align = sx.stx_dio_mem_align;
  }
#endif
}

static int file_open(const struct stor_kv *kv, size_t n, struct stor_backend **out, char *err, size_t errlen) {
  const char *path = NULL;
  uint64_t create_size = 0;
  bool create = false, direct = false, readonly = false;
  uint32_t ring_size = 0;
  enum image_locking locking = IMAGE_LOCKING_AUTO;
  for (size_t i = 0; i < n; i++) {
    int r = 0;
    const char *k = kv[i].key;
    if (!strcmp(k, "path"))
      path = kv[i].value;
    else if (!strcmp(k, "create")) {
      r = stor_kv_size("file", &kv[i], &create_size, err, errlen);
      if (!r && (create_size == 0 || create_size % 512)) {
        snprintf(err, errlen, "file: create=%s: a size greater than 0 and a multiple of 512 is needed", kv[i].value);
        r = -EINVAL;
      }
      create = true;
    } else if (!strcmp(k, "direct"))
      r = stor_kv_bool("file", &kv[i], &direct, err, errlen);
    else if (!strcmp(k, "readonly") || !strcmp(k, "ro"))
      r = stor_kv_bool("file", &kv[i], &readonly, err, errlen);
    else if (!strcmp(k, "ring-size")) {
      r = stor_kv_u32("file", &kv[i], &ring_size, err, errlen);
      if (!r && (ring_size < 1 || ring_size > 32768)) {
        snprintf(err, errlen, "file: ring-size=%s: expected 1..32768", kv[i].value);
        r = -EINVAL;
      }
    } else if (!strcmp(k, "locking")) {
      int m = image_locking_parse(kv[i].value);
      if (m < 0) {
        snprintf(err, errlen, "file: locking=%s: expected on, off or auto", kv[i].value);
        r = -EINVAL;
      } else
        locking = (enum image_locking)m;
    } else
      r = stor_kv_unknown(&stor_file_driver, &kv[i], err, errlen);
    if (r < 0) return r;
  }
  if (!path || !path[0]) {
    snprintf(err, errlen, "file: path: a path is required");
    return -EINVAL;
  }
  int flags = O_CLOEXEC | (readonly ? O_RDONLY : O_RDWR) | (direct ? O_DIRECT : 0);
  if (create) flags |= O_CREAT;
  int fd = open(path, flags, 0644);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return -e;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return -e;
  }
  uint64_t size;
  bool blockdev = S_ISBLK(st.st_mode);
  /* lock before anything changes the file (create= sizes it below) */
  if (blockdev || S_ISREG(st.st_mode)) {
    int r = image_lock(fd, path, !readonly, locking, err, errlen);
    if (r < 0) {
      close(fd);
      return r;
    }
  }
  if (blockdev) {
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
      int e = errno;
      close(fd);
      snprintf(err, errlen, "%s: BLKGETSIZE64: %s", path, strerror(e));
      return -e;
    }
  } else if (S_ISREG(st.st_mode)) {
    size = (uint64_t)st.st_size;
    if (create && size == 0) {
      if (ftruncate(fd, (off_t)create_size) < 0) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "%s: ftruncate: %s", path, strerror(e));
        return -e;
      }
      size = create_size;
    } else if (create && size != create_size) {
      close(fd);
      snprintf(err, errlen, "%s exists with size %llu, not %llu: remove it or drop create=", path,
               (unsigned long long)size, (unsigned long long)create_size);
      return -EEXIST;
    }
  } else {
    close(fd);
    snprintf(err, errlen, "%s: not a regular file or block device", path);
    return -EINVAL;
  }
  if (size < 512) {
    close(fd);
    snprintf(err, errlen, "%s: size %llu is smaller than one sector", path, (unsigned long long)size);
    return -EINVAL;
  }
  struct file_backend *f = calloc(1, sizeof *f);
  if (!f) {
    close(fd);
    return -ENOMEM;
  }
  f->fd = fd;
  f->blockdev = blockdev;
  f->ring_size = ring_size;
  f->direct = direct;
  struct stor_bdev_props *p = &f->base.props;
  stor_bdev_props_default(p, size & ~511ull, readonly);
  int ssz = 0;
  if (blockdev && ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz >= 512) p->block_size = (uint32_t)ssz;
  if (direct) {
    uint32_t oa, ma;
    direct_alignment(fd, blockdev, &oa, &ma);
    if (oa > p->block_size) p->block_size = oa;
    p->buf_alignment = ma;
    f->dio_mem_align = ma;
    f->dio_len_align = oa;
  }
  unsigned int opt = 0;
  if (blockdev && ioctl(fd, BLKIOOPT, &opt) == 0 && opt % p->block_size == 0) p->optimal_io_size = opt;
  p->optimal_io_alignment = p->block_size;
  p->discard_alignment = p->block_size;
  f->base.ops = &file_ops;
  snprintf(f->base.desc, sizeof f->base.desc, "file:%.300s", path);
  *out = &f->base;
  return 0;
}

const struct stor_bdev_driver stor_file_driver = {
    .name = "file",
    .ops_version = STOR_BDEV_OPS_V1,
    .props = file_props,
    .open = file_open,
    .help = "a raw image file or block device through io_uring",
};
