/* Back-pressure for a caller of a backend queue: the requests the backend answered BUSY to, oldest
 * first, submitted again in order before anything newer (bdev.h: a full queue is back-pressure, never an
 * I/O error). One small FIFO of stor_req pointers, shared by the virtio exports' queue servers
 * (virtio/virtq_serve.c) and the ublk export. Everything here runs on the queue's own thread, inline:
 * submit() is on the per-request path. */
#ifndef STOR_DEFERRED_H
#define STOR_DEFERRED_H
#include "bdev/bdev.h"
#include <errno.h>
#include <stdlib.h>

struct stor_deferred {
  struct stor_req **ring; /* cap entries: every request the caller can have at once */
  unsigned cap, head, n;  /* n: how many wait for room */
};

/* Room for cap requests (the caller's queue depth), reallocated only when cap changes; empties it.
 * Returns 0 or -ENOMEM (the queue is then empty, with no room). */
static inline int stor_deferred_reserve(struct stor_deferred *d, unsigned cap) {
  d->head = d->n = 0;
  if (d->cap == cap && d->ring) return 0;
  free(d->ring);
  d->ring = calloc(cap, sizeof *d->ring);
  d->cap = d->ring ? cap : 0;
  return d->ring ? 0 : -ENOMEM;
}

static inline void stor_deferred_free(struct stor_deferred *d) {
  free(d->ring);
  *d = (struct stor_deferred){0};
}

/* Submits r, or queues it behind earlier BUSY requests (never ahead of them: order is kept). */
static inline void stor_deferred_submit(struct stor_deferred *d, const struct stor_backend_ops *ops,
                                        struct stor_bqueue *bq, struct stor_req *r) {
  if (d->n || ops->submit(bq, r) == STOR_SUBMIT_BUSY) d->ring[(d->head + d->n++) % d->cap] = r;
}

/* Submits waiting requests in order until the backend is full again; returns how many went in. */
static inline int stor_deferred_retry(struct stor_deferred *d, const struct stor_backend_ops *ops,
                                      struct stor_bqueue *bq) {
  int done = 0;
  while (d->n) {
    if (ops->submit(bq, d->ring[d->head]) == STOR_SUBMIT_BUSY) break;
    d->head = (d->head + 1) % d->cap;
    d->n--;
    done++;
  }
  return done;
}
#endif
