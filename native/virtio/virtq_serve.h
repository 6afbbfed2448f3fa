/* Serving one virtio-blk virtqueue on one backend queue: the data path the vhost-user-blk and VDUSE
 * exports share, with no transport, thread or event plumbing in it. It pops chains (the avail index read
 * once per batch: the driver rewrites that cache line with every request it adds), walks them through a
 * memory table (vhost-user's GPA table, or VDUSE's IOTLB filled on demand by the table's miss hook),
 * hands them to the transport-free virtio-blk handler, submits what that produces (a BUSY backend defers
 * it, bdev/deferred.h), and completes each request by writing its status, pushing and at once exposing
 * its used entry, and recording all of it in the inflight region when there is one (virtio/inflight.h),
 * so that a restarted server resubmits exactly what was in flight. Whether to notify is decided once per
 * batch (virtq_serve_publish, EVENT_IDX); how to notify is the caller's.
 *
 * The caller (export/virtq_thread.c) runs it on the queue's thread under the SIGBUS guard; the fuzz
 * target (fuzz/fuzz_virtio_blk.c) drives it on fuzzed guest memory. */
#ifndef STOR_VIRTQ_SERVE_H
#define STOR_VIRTQ_SERVE_H
#include "bdev/bdev.h"
#include "bdev/deferred.h"
#include "virtio/inflight.h"
#include "virtio/virtio_blk.h"
#include "virtio/vring.h"
#include <stdbool.h>
#include <stdint.h>

#define VIRTQ_MAX_SEGS 258 /* seg_max (at most 256) + header + status */

struct virtq_serve;

/* One request slot per descriptor head (a head can be in flight once). */
struct virtq_slot {
  struct virtio_blk_req vr; /* first: the handler's completion finds the slot; vr.head is the chain's head */
  struct virtq_serve *vs;
  bool busy;
  struct iovec iov[VIRTQ_MAX_SEGS];
};

struct virtq_serve {
  struct vring vr;                   /* set up by the caller (vring_setup) */
  const struct mem_table *mem;       /* where descriptors point */
  struct virtio_blk_handler handler; /* the device's settings; its be names the backend */
  struct stor_bqueue *bq;            /* the backend queue, opened by the caller */
  struct virtq_slot *slots;          /* slots_num of them, indexed by head */
  unsigned slots_num;
  struct stor_deferred deferred; /* requests the backend answered BUSY to */
  /* inflight tracking (r NULL: none), and the chains a previous server left in flight, in pop order,
   * resubmitted before any new request is popped */
  struct inflight_queue infl;
  uint16_t *resubmit;
  unsigned resubmit_n, resubmit_pos;
  volatile bool faulted; /* its memory raised SIGBUS: never touch it again */
  char why[256];         /* why the ring is broken, after a call returned -1 */
};

/* Slots, deferred room and the resubmit list for a ring of num entries (reallocated when num changes);
 * nothing busy, deferred or to resubmit. 0, or -ENOMEM with err set. */
int virtq_serve_reserve(struct virtq_serve *vs, uint16_t num, char *err, size_t errlen);
void virtq_serve_free(struct virtq_serve *vs);

/* After vring_setup (with the used index as the driver sees it): attaches the inflight region r (NULL:
 * none) and recovers what a previous server left in flight, into vs->resubmit. Returns how many chains
 * are in flight, or -1 with the reason in err (a corrupt region: r is detached). */
int virtq_serve_recover(struct virtq_serve *vs, struct inflight_region *r, char *err, size_t errlen);
/* Resumes behind n recovered chains: they are resubmitted first, and the next avail index is the used
 * index plus n (every popped chain was either returned or is in flight). */
void virtq_serve_resume(struct virtq_serve *vs, unsigned n);

/* Pops and starts every available request (deferred and resubmitted ones first), commits them, reaps
 * the backend without waiting. Returns the work done, or -1 when the ring is broken (vs->why). */
int virtq_serve_poll(struct virtq_serve *vs);
/* Publishes the used index once for the batch; true when the driver wants a notification. */
bool virtq_serve_publish(struct virtq_serve *vs);
/* Stopping: finishes everything in flight or deferred, so the used ring is complete (then publish). */
void virtq_serve_drain(struct virtq_serve *vs);
/* After a fault: drops the deferred requests and reaps the backend without touching the ring. */
void virtq_serve_abandon(struct virtq_serve *vs);
#endif
