/* Inflight I/O tracking (see inflight.h): clearing a published batch, and recovery at ring start. */
#include "virtio/inflight.h"
#include <stdio.h>
#include <stdlib.h>

void inflight_published(struct inflight_queue *q, uint16_t used_idx) {
  struct inflight_region *r = q->r;
  if (!r) return;
  uint16_t h = r->last_batch_head;
  for (uint16_t i = 0; i < q->batch_n && h < q->num; i++) {
    __atomic_store_n(&r->desc[h].inflight, 0, __ATOMIC_RELEASE);
    h = r->desc[h].next;
  }
  q->batch_n = 0;
  __atomic_store_n(&r->used_idx, used_idx, __ATOMIC_RELEASE);
}

struct by_counter {
  uint64_t counter;
  uint16_t head;
};

static int cmp_counter(const void *a, const void *b) {
  uint64_t x = ((const struct by_counter *)a)->counter, y = ((const struct by_counter *)b)->counter;
  return x < y ? -1 : x > y;
}

int inflight_recover(struct inflight_queue *q, uint16_t num, uint16_t used_idx, uint16_t *heads, char *err,
                     size_t errlen) {
  struct inflight_region *r = q->r;
  q->batch_n = 0;
  q->counter = 0;
  q->num = num;
  if (!r) return 0;
  if (r->desc_num != num) {
    snprintf(err, errlen, "inflight region is for a ring of %u entries, the ring has %u", r->desc_num, num);
    return -1;
  }
  if (r->version == 0) {
    /* fresh: nothing was ever in flight */
    r->used_idx = used_idx;
    r->version = INFLIGHT_VERSION;
    return 0;
  }
  if (r->version != INFLIGHT_VERSION) {
    snprintf(err, errlen, "inflight region has version %u, expected %u", r->version, INFLIGHT_VERSION);
    return -1;
  }
  /* The previous back-end published a batch and died before clearing its flags: clear them now. */
  uint16_t batch = (uint16_t)(used_idx - r->used_idx);
  if (batch) {
    if (batch > num) {
      snprintf(err, errlen, "inflight region's used index %u is %u behind the ring's %u", r->used_idx, batch, used_idx);
      return -1;
    }
    uint16_t h = r->last_batch_head;
    for (uint16_t i = 0; i < batch; i++) {
      if (h >= num) {
        snprintf(err, errlen, "inflight region's last batch names head %u, the ring has %u", h, num);
        return -1;
      }
      r->desc[h].inflight = 0;
      h = r->desc[h].next;
    }
    r->used_idx = used_idx;
  }
  struct by_counter *list = malloc(sizeof *list * num);
  if (!list) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int n = 0;
  uint64_t next = 0;
  for (uint16_t i = 0; i < num; i++) {
    if (r->desc[i].inflight != 1) {
      r->desc[i].inflight = 0; /* anything else is not a flag we wrote */
      continue;
    }
    list[n].counter = r->desc[i].counter;
    list[n].head = i;
    if (list[n].counter >= next) next = list[n].counter + 1;
    n++;
  }
  qsort(list, (size_t)n, sizeof *list, cmp_counter);
  for (int i = 0; i < n; i++) heads[i] = list[i].head;
  free(list);
  q->counter = next;
  return n;
}
