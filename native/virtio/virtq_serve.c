/* Serving one virtio-blk virtqueue on one backend queue (see virtq_serve.h): pop, handle, submit,
 * complete, publish. Everything per request lives in this file, so the compiler sees the whole path. */
#include "virtio/virtq_serve.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int virtq_serve_reserve(struct virtq_serve *vs, uint16_t num, char *err, size_t errlen) {
  if (vs->slots_num != num) {
    free(vs->slots);
    free(vs->resubmit);
    vs->slots = calloc(num, sizeof *vs->slots);
    vs->resubmit = calloc(num, sizeof *vs->resubmit);
    vs->slots_num = vs->slots && vs->resubmit ? num : 0;
  }
  vs->resubmit_n = vs->resubmit_pos = 0;
  if (!vs->slots_num || stor_deferred_reserve(&vs->deferred, num) < 0) {
    snprintf(err, errlen, "out of memory for %u request slots", num);
    return -ENOMEM;
  }
  for (unsigned i = 0; i < num; i++) vs->slots[i].busy = false;
  return 0;
}

void virtq_serve_free(struct virtq_serve *vs) {
  free(vs->slots);
  free(vs->resubmit);
  vs->slots = NULL;
  vs->resubmit = NULL;
  vs->slots_num = 0;
  stor_deferred_free(&vs->deferred);
  vs->infl.r = NULL;
}

int virtq_serve_recover(struct virtq_serve *vs, struct inflight_region *r, char *err, size_t errlen) {
  vs->infl.r = r;
  vs->infl.batch_n = 0;
  vs->resubmit_n = vs->resubmit_pos = 0;
  if (!r) return 0;
  int n = inflight_recover(&vs->infl, vs->vr.num, vs->vr.used_idx, vs->resubmit, err, errlen);
  if (n < 0) vs->infl.r = NULL;
  return n;
}

void virtq_serve_resume(struct virtq_serve *vs, unsigned n) {
  vs->resubmit_n = n;
  vs->vr.last_avail_idx = (uint16_t)(vs->vr.used_idx + n);
}

/* The handler's completion: write the status, push the used entry and expose it at once, as SPDK's
 * vhost does: a polling driver reaps and refills while the rest of the batch is still being served,
 * instead of waiting for the batch's end (whether to notify is still decided once per batch). */
static void complete_slot(struct virtio_blk_req *vr, uint8_t status, uint32_t used_len) {
  struct virtq_slot *s = (struct virtq_slot *)vr;
  struct virtq_serve *vs = s->vs;
  s->busy = false;
  if (vs->faulted) return;
  virtio_blk_req_status(vr, status);
  inflight_pushed(&vs->infl, vr->head);
  vring_push(&vs->vr, vr->head, used_len);
  vring_expose(&vs->vr);
  /* with inflight tracking the exposed completion leaves the batch at once: recovery counts exposed
   * completions from the batch's head, so the batch must never hold one that is not yet exposed */
  if (vs->infl.batch_n) inflight_published(&vs->infl, vs->vr.used_idx);
}

/* Hands a walked chain to the virtio-blk handler and submits what it produces. */
static void start_slot(struct virtq_serve *vs, struct virtq_slot *s, uint16_t head, const struct vring_chain *c) {
  s->busy = true;
  s->vs = vs;
  s->vr.head = head;
  if (virtio_blk_process(&vs->handler, &s->vr, complete_slot, s->iov, c->n_out, c->n_in, c->out_len, c->in_len) ==
      VIRTIO_BLK_REQ_SUBMIT)
    stor_deferred_submit(&vs->deferred, vs->handler.be->ops, vs->bq, &s->vr.req);
}

static int broken(struct virtq_serve *vs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int broken(struct virtq_serve *vs, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(vs->why, sizeof vs->why, fmt, ap);
  va_end(ap);
  return -1;
}

/* Pops and starts every available request. Returns how many, or -1 if the ring is broken. */
static int process_ring(struct virtq_serve *vs) {
  struct vring *vr = &vs->vr;
  int n = 0;
  char err[200];
  /* the backend is full: leave new requests in the ring until the deferred ones are in (those that
   * went in count as work: they need a commit) */
  if (vs->deferred.n) {
    n = stor_deferred_retry(&vs->deferred, vs->handler.be->ops, vs->bq);
    if (vs->deferred.n) return n;
  }
  /* after a restart: the chains the previous server had in flight, oldest first */
  while (vs->resubmit_pos < vs->resubmit_n) {
    struct vring_chain c;
    uint16_t head = vs->resubmit[vs->resubmit_pos++];
    struct virtq_slot *s = &vs->slots[head];
    if (vring_walk_chain(vr, vs->mem, head, &c, s->iov, VIRTQ_MAX_SEGS, err, sizeof err) == VRING_BAD_CHAIN)
      return broken(vs, "in-flight request at head %u: %s", head, err);
    start_slot(vs, s, head, &c);
    n++;
    if (vs->deferred.n) return n;
  }
  /* The avail index is read once per batch, not once per request: the driver rewrites that cache line
   * with every request it adds, so each extra read can cost a transfer from the driver's core. At most a
   * ring's worth per call, so that the caller still sees a stop request when the driver never stops
   * adding (a hostile one whose used ring overlaps its avail ring adds one with every completion). */
  for (unsigned popped = 0; popped < vr->num;) {
    uint16_t pending = vring_avail_pending(vr);
    if (!pending) break;
    if (pending > vr->num) return broken(vs, "avail index moved by %u, more than the queue size %u", pending, vr->num);
    if (pending > vr->num - popped) pending = (uint16_t)(vr->num - popped);
    for (; pending; pending--, popped++) {
      struct vring_chain c;
      /* the head is read once: the driver may rewrite the avail entry under us */
      uint16_t head = __atomic_load_n(&vr->avail->ring[vr->last_avail_idx % vr->num], __ATOMIC_RELAXED);
      if (head >= vr->num) return broken(vs, "avail ring names head %u, queue size is %u", head, vr->num);
      /* a chain can only be popped into a free slot; slots are indexed by head */
      struct virtq_slot *s = &vs->slots[head];
      if (s->busy) return broken(vs, "head %u made available again while still in flight", head);
      /* a malformed chain means a broken driver: fail the ring, as QEMU marks the device broken */
      if (vring_pop_head(vr, vs->mem, head, &c, s->iov, VIRTQ_MAX_SEGS, err, sizeof err) == VRING_BAD_CHAIN)
        return broken(vs, "request at head %u: %s", head, err);
      inflight_popped(&vs->infl, head);
      start_slot(vs, s, head, &c);
      n++;
    }
  }
  return n;
}

int virtq_serve_poll(struct virtq_serve *vs) {
  const struct stor_backend_ops *ops = vs->handler.be->ops;
  int n = process_ring(vs);
  if (n < 0) return -1;
  if (n > 0) ops->commit(vs->bq);
  int c = ops->inflight(vs->bq) ? ops->reap(vs->bq, false) : 0;
  return n + c;
}

bool virtq_serve_publish(struct virtq_serve *vs) {
  if (vs->faulted) return false;
  bool notify = vring_publish(&vs->vr);
  if (vs->infl.batch_n) inflight_published(&vs->infl, vs->vr.used_idx);
  return notify;
}

void virtq_serve_drain(struct virtq_serve *vs) {
  const struct stor_backend_ops *ops = vs->handler.be->ops;
  while (ops->inflight(vs->bq) || vs->deferred.n) {
    stor_deferred_retry(&vs->deferred, ops, vs->bq);
    ops->commit(vs->bq);
    ops->reap(vs->bq, true);
  }
}

void virtq_serve_abandon(struct virtq_serve *vs) {
  const struct stor_backend_ops *ops = vs->handler.be->ops;
  vs->deferred.n = 0; /* dropped with the ring: their slots are never completed */
  while (ops->inflight(vs->bq)) {
    ops->commit(vs->bq);
    ops->reap(vs->bq, true);
  }
}
