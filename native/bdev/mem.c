/* The mem backend: a sparse memfd mapping; discard punches holes, so discarded ranges read as zeros.
 * Completes every request inline in submit(). */
#include "bdev/bdev.h"
#include <stdio.h>
#include <errno.h>
#include <linux/falloc.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct mem_backend { struct stor_backend base; int fd; uint8_t *mem; };

/* ---- mem: a sparse memfd mapping; discard punches holes, so discarded ranges read as zeros */



static void mem_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct mem_backend *m = (struct mem_backend *)((struct stor_sync_bqueue *)bq)->be;
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
const struct stor_backend_ops stor_mem_ops = {
  .name = "mem", .queue_open = stor_sync_queue_open, .queue_close = stor_sync_queue_close, .submit = mem_submit,
  .commit = stor_sync_commit, .reap = stor_sync_reap, .event_fd = stor_sync_event_fd, .inflight = stor_sync_inflight,
  .flush = stor_null_flush, .destroy = mem_destroy,
};


int stor_mem_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen) {
  struct stor_backend *be = NULL;
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
    be->ops = &stor_mem_ops;
    be->capacity = cfg->size;
    snprintf(be->desc, sizeof be->desc, "mem:%llu", (unsigned long long)cfg->size);
    be->readonly = cfg->readonly;
  be->can_discard = true;
  be->can_write_zeroes = true;
  be->refs = 1;
  *out = be;
  return 0;
}
