/* The null backend: reads return zeroed buffers (the same work as qemu's null-co,read-zeroes=on),
 * writes are dropped. read-zeroes=off leaves read buffers untouched, as SPDK's null bdev and qemu's
 * null-co,read-zeroes=off do: comparisons with those measure the transport, not a 4 KiB memset.
 * Completes every request inline in submit(). Also home of the helpers every inline-completing
 * backend shares (the stor_sync_* queue ops). */
#include "bdev/bdev.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
int stor_sync_flush(struct stor_backend *be) { return 0; }

struct null_backend {
  struct stor_backend be;
  bool read_zeroes;
};

static enum stor_submit null_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct stor_sync_bqueue *q = (struct stor_sync_bqueue *)bq;
  if (r->op == STOR_OP_READ && ((struct null_backend *)q->be)->read_zeroes) iov_memset(r->iov, r->niov, 0);
  stor_req_done(r, 0);
  return STOR_SUBMIT_QUEUED;
}
static void null_destroy(struct stor_backend *be) { free(be); }

static const struct stor_backend_ops null_ops = {
    .version = STOR_BDEV_OPS_V1,
    .name = "null",
    .queue_open = stor_sync_queue_open,
    .queue_close = stor_sync_queue_close,
    .submit = null_submit,
    .commit = stor_sync_commit,
    .reap = stor_sync_reap,
    .event_fd = stor_sync_event_fd,
    .inflight = stor_sync_inflight,
    .flush = stor_sync_flush,
    .destroy = null_destroy,
};

static const struct stor_bdev_prop_help null_props[] = {
    {"size", "capacity in bytes, a multiple of 512 (k, M, G, T binary suffixes; required)"},
    {"readonly", "on: writes, discards and write-zeroes are refused (default off)"},
    {"read-zeroes", "off: reads leave the buffer as it was, as SPDK's null bdev does (default on)"},
    {NULL, NULL},
};

static int null_open(const struct stor_kv *kv, size_t n, struct stor_backend **out, char *err, size_t errlen) {
  uint64_t size = 0;
  bool readonly = false, have_size = false, read_zeroes = true;
  for (size_t i = 0; i < n; i++) {
    int r = 0;
    if (!strcmp(kv[i].key, "size")) {
      r = stor_kv_size("null", &kv[i], &size, err, errlen);
      have_size = true;
    } else if (!strcmp(kv[i].key, "readonly") || !strcmp(kv[i].key, "ro"))
      r = stor_kv_bool("null", &kv[i], &readonly, err, errlen);
    else if (!strcmp(kv[i].key, "read-zeroes"))
      r = stor_kv_bool("null", &kv[i], &read_zeroes, err, errlen);
    else
      r = stor_kv_unknown(&stor_null_driver, &kv[i], err, errlen);
    if (r < 0) return r;
  }
  if (!have_size || size == 0) {
    snprintf(err, errlen, "null: size: a size greater than 0 is required");
    return -EINVAL;
  }
  struct null_backend *nb = calloc(1, sizeof *nb);
  if (!nb) return -ENOMEM;
  struct stor_backend *be = &nb->be;
  nb->read_zeroes = read_zeroes;
  be->ops = &null_ops;
  stor_bdev_props_default(&be->props, size, readonly);
  snprintf(be->desc, sizeof be->desc, "null:%llu%s", (unsigned long long)size, read_zeroes ? "" : ",read-zeroes=off");
  *out = be;
  return 0;
}

const struct stor_bdev_driver stor_null_driver = {
    .name = "null",
    .ops_version = STOR_BDEV_OPS_V1,
    .props = null_props,
    .open = null_open,
    .help = "reads return zeros, writes are dropped (the work of qemu's null-co,read-zeroes=on)",
};
