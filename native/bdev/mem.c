/* The mem backend: a sparse memfd mapping; discard punches holes, so discarded ranges read as zeros.
 * Completes every request inline in submit(). */
#include "bdev/bdev.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct mem_backend {
  struct stor_backend base;
  int fd;
  uint8_t *mem;
};

static enum stor_submit mem_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct mem_backend *m = (struct mem_backend *)((struct stor_sync_bqueue *)bq)->be;
  switch (r->op) {
  case STOR_OP_READ: buf_to_iov(r->iov, r->niov, 0, m->mem + r->offset, r->length); break;
  case STOR_OP_WRITE: iov_to_buf(r->iov, r->niov, 0, m->mem + r->offset, r->length); break;
  case STOR_OP_FLUSH: break;
  case STOR_OP_DISCARD:
  case STOR_OP_WRITE_ZEROES:
    /* shmem zeroes the partial pages at either end of a punched range */
    if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->offset, (off_t)r->length) < 0) {
      if (r->op == STOR_OP_DISCARD) {
        stor_req_done(r, -errno);
        return STOR_SUBMIT_QUEUED;
      }
      memset(m->mem + r->offset, 0, r->length);
    }
    break;
  default: stor_req_done(r, -EOPNOTSUPP); return STOR_SUBMIT_QUEUED;
  }
  stor_req_done(r, 0);
  return STOR_SUBMIT_QUEUED;
}

static void mem_destroy(struct stor_backend *be) {
  struct mem_backend *m = (struct mem_backend *)be;
  munmap(m->mem, be->props.capacity);
  close(m->fd);
  free(m);
}

static const struct stor_backend_ops mem_ops = {
    .version = STOR_BDEV_OPS_V1,
    .name = "mem",
    .queue_open = stor_sync_queue_open,
    .queue_close = stor_sync_queue_close,
    .submit = mem_submit,
    .commit = stor_sync_commit,
    .reap = stor_sync_reap,
    .event_fd = stor_sync_event_fd,
    .inflight = stor_sync_inflight,
    .flush = stor_sync_flush,
    .destroy = mem_destroy,
};

static const struct stor_bdev_prop_help mem_props[] = {
    {"size", "capacity in bytes, a multiple of 512 (k, M, G, T binary suffixes; required)"},
    {"readonly", "on: writes, discards and write-zeroes are refused (default off)"},
    {NULL, NULL},
};

static int mem_open(const struct stor_kv *kv, size_t n, struct stor_backend **out, char *err, size_t errlen) {
  uint64_t size = 0;
  bool readonly = false, have_size = false;
  for (size_t i = 0; i < n; i++) {
    int r = 0;
    if (!strcmp(kv[i].key, "size")) {
      r = stor_kv_size("mem", &kv[i], &size, err, errlen);
      have_size = true;
    } else if (!strcmp(kv[i].key, "readonly") || !strcmp(kv[i].key, "ro"))
      r = stor_kv_bool("mem", &kv[i], &readonly, err, errlen);
    else
      r = stor_kv_unknown(&stor_mem_driver, &kv[i], err, errlen);
    if (r < 0) return r;
  }
  if (!have_size || size == 0) {
    snprintf(err, errlen, "mem: size: a size greater than 0 is required");
    return -EINVAL;
  }
  struct mem_backend *m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  m->fd = memfd_create("stor-mem", MFD_CLOEXEC);
  if (m->fd < 0 || ftruncate(m->fd, (off_t)size) < 0) {
    int e = errno;
    if (m->fd >= 0) close(m->fd);
    free(m);
    snprintf(err, errlen, "mem backend: %s", strerror(e));
    return -e;
  }
  m->mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
  if (m->mem == MAP_FAILED) {
    int e = errno;
    close(m->fd);
    free(m);
    snprintf(err, errlen, "mem backend: mmap %llu bytes: %s", (unsigned long long)size, strerror(e));
    return -e;
  }
  m->base.ops = &mem_ops;
  stor_bdev_props_default(&m->base.props, size, readonly);
  snprintf(m->base.desc, sizeof m->base.desc, "mem:%llu", (unsigned long long)size);
  *out = &m->base;
  return 0;
}

const struct stor_bdev_driver stor_mem_driver = {
    .name = "mem",
    .ops_version = STOR_BDEV_OPS_V1,
    .props = mem_props,
    .open = mem_open,
    .help = "a sparse in-memory disk (memfd); discard punches holes",
};
