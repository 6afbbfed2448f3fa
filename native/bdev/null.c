/* The null backend: reads return zeroed buffers (the same work as qemu's null-co,read-zeroes=on),
 * writes are dropped. Completes every request inline in submit(). */
#include "bdev/bdev.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int stor_sync_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  struct stor_sync_bqueue *q = calloc(1, sizeof *q);
  if (!q) return -ENOMEM;
  q->be = be;
  *out = (struct stor_bqueue *)q;
  return 0;
}
void stor_sync_queue_close(struct stor_bqueue *q) { free(q); }
void stor_sync_commit(struct stor_bqueue *q) {}
int stor_sync_reap(struct stor_bqueue *q, bool wait) { return 0; }
int stor_sync_event_fd(struct stor_bqueue *q) { return -1; }
unsigned stor_sync_inflight(struct stor_bqueue *q) { return 0; }

/* ---- null: reads are zero-filled (the same work as qemu's null-co,read-zeroes=on), writes dropped */

static void null_submit(struct stor_bqueue *bq, struct stor_req *r) {
  if (r->op == STOR_OP_READ) iov_memset(r->iov, r->niov, 0);
  stor_req_done(r, 0);
}
int stor_null_flush(struct stor_backend *be) { return 0; }
void stor_plain_destroy(struct stor_backend *be) { free(be); }

const struct stor_backend_ops stor_null_ops = {
  .name = "null", .queue_open = stor_sync_queue_open, .queue_close = stor_sync_queue_close, .submit = null_submit,
  .commit = stor_sync_commit, .reap = stor_sync_reap, .event_fd = stor_sync_event_fd, .inflight = stor_sync_inflight,
  .flush = stor_null_flush, .destroy = stor_plain_destroy,
};


int stor_null_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen) {
  struct stor_backend *be = NULL;
    be = calloc(1, sizeof *be);
    if (!be) return -ENOMEM;
    be->ops = &stor_null_ops;
    be->capacity = cfg->size;
    snprintf(be->desc, sizeof be->desc, "null:%llu", (unsigned long long)cfg->size);
    be->readonly = cfg->readonly;
  be->can_discard = true;
  be->can_write_zeroes = true;
  be->refs = 1;
  *out = be;
  return 0;
}
