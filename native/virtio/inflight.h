/* Inflight I/O tracking for split virtqueues (vhost-user.rst, "Inflight I/O tracking"): a region of
 * shared memory, kept by the front-end across back-end restarts, that records which chains were
 * popped and not yet returned, in which order they were popped, and the last batch of completions
 * in case the back-end died between publishing the used index and clearing their flags. With it a
 * back-end that completes out of order can be killed at any instruction, and its successor resubmits
 * exactly the requests that were in flight, in the order they were first popped.
 *
 * The layout is the spec's (one region per queue, each 64-byte aligned), so any front-end that keeps
 * the buffer (QEMU) works. The region is written by the queue thread only; a hostile front-end may
 * hand in any contents, so recovery checks every index it reads. */
#ifndef STOR_INFLIGHT_H
#define STOR_INFLIGHT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct inflight_desc {
  uint8_t inflight; /* 1 while the chain with this head is popped and not returned */
  uint8_t padding[5];
  uint16_t next;    /* links the last batch of completions */
  uint64_t counter; /* pop order */
};

struct inflight_region {
  uint64_t features;
  uint16_t version; /* 0: never used (fresh buffer), 1: this layout */
  uint16_t desc_num;
  uint16_t last_batch_head;
  uint16_t used_idx; /* used->idx as of the last completed batch */
  struct inflight_desc desc[];
};

_Static_assert(sizeof(struct inflight_desc) == 16, "DescStateSplit is 16 bytes");
_Static_assert(sizeof(struct inflight_region) == 16, "QueueRegionSplit's header is 16 bytes");

#define INFLIGHT_VERSION 1

/* Bytes of one queue's region for a ring of queue_size entries (64-byte aligned). */
static inline size_t inflight_queue_bytes(uint16_t queue_size) {
  return (sizeof(struct inflight_region) + sizeof(struct inflight_desc) * (size_t)queue_size + 63) & ~(size_t)63;
}

/* One queue's tracking state (the queue thread's). */
struct inflight_queue {
  struct inflight_region *r; /* NULL: not tracked */
  uint16_t num;              /* the ring's size, ours: the region's desc_num is the front-end's to scribble on */
  uint64_t counter;          /* the next pop's counter */
  uint16_t batch_n;          /* completions pushed since the last publish */
};

/* A chain was popped (before anything can complete it). */
static inline void inflight_popped(struct inflight_queue *q, uint16_t head) {
  if (!q->r) return;
  q->r->desc[head].counter = q->counter++;
  __atomic_store_n(&q->r->desc[head].inflight, 1, __ATOMIC_RELEASE);
}

/* A chain's used entry is about to be written (steps 1-3: link it into the batch). */
static inline void inflight_pushed(struct inflight_queue *q, uint16_t head) {
  if (!q->r) return;
  q->r->desc[head].next = q->r->last_batch_head;
  __atomic_store_n(&q->r->last_batch_head, head, __ATOMIC_RELEASE);
  q->batch_n++;
}

/* The used index was published as used_idx: clear the batch's flags, then record the index. */
void inflight_published(struct inflight_queue *q, uint16_t used_idx);

/* At ring start, with the used index as the driver sees it: finishes a batch the previous back-end
 * published but did not clear, then fills heads (room for num) with the chains still in flight, in
 * pop order, and returns how many (or -1 with a reason in err when the region is corrupt). A fresh
 * region (version 0) is initialised and has none. Sets q->counter past every recorded counter. */
int inflight_recover(struct inflight_queue *q, uint16_t num, uint16_t used_idx, uint16_t *heads, char *err,
                     size_t errlen);
#endif
