/* Guest memory and the split virtqueue, device side. Every address the driver gives us is
 * translated through the memory table and checked to lie entirely inside a mapped region;
 * chains are bounded by the queue size, indirect tables by their own length, loops detected. */
#ifndef STOR_VRING_H
#define STOR_VRING_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define VRING_DESC_F_NEXT          1
#define VRING_DESC_F_WRITE         2
#define VRING_DESC_F_INDIRECT      4
#define VRING_USED_F_NO_NOTIFY     1
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct vring_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[];
};
struct vring_used_elem {
  uint32_t id;
  uint32_t len;
};
struct vring_used {
  uint16_t flags;
  uint16_t idx;
  struct vring_used_elem ring[];
};

#define MEM_MAX_REGIONS 64

struct mem_region {
  uint64_t gpa; /* guest physical address (what descriptors carry) */
  uint64_t size;
  uint64_t uva; /* the front-end's own virtual address (what ring addresses carry) */
  uint64_t mmap_offset;
  uint8_t *host;  /* our mapping of gpa */
  void *map_base; /* what mmap returned (host - mmap_offset) */
  size_t map_len;
  int fd;
};

struct mem_table {
  struct mem_region r[MEM_MAX_REGIONS];
  int n;
  /* Optional: called when [addr, addr+len) is not (entirely) in the table; it may add the region
   * holding addr (VDUSE maps IOTLB entries on demand) and returns 0 to have the lookup retried once.
   * Addresses are checked the same way either way: a miss that adds nothing is a bad address. */
  int (*miss)(void *ctx, uint64_t addr, uint64_t len);
  void *miss_ctx;
};

/* Maps a region from fd (taking ownership of fd on success). Refuses a region that overlaps an
 * existing one or extends past the end of its file. Returns 0 or -errno with a reason. */
int mem_add_region(struct mem_table *t, uint64_t gpa, uint64_t size, uint64_t uva, uint64_t mmap_offset, int fd,
                   char *err, size_t errlen);
/* Removes the region matching gpa/size (REM_MEM_REG); returns 0 or -ENOENT. */
int mem_remove_region(struct mem_table *t, uint64_t gpa, uint64_t size);
void mem_clear(struct mem_table *t);

/* Host pointer for [gpa, gpa+len) when it lies in one region, else NULL. */
void *mem_gpa_to_host(const struct mem_table *t, uint64_t gpa, uint64_t len);
void *mem_uva_to_host(const struct mem_table *t, uint64_t uva, uint64_t len);
/* Appends iovecs covering [gpa, gpa+len), split where regions are adjacent. Returns the number
 * appended, -EFAULT when some byte is not in guest memory, -E2BIG when max_iov would be exceeded. */
int mem_gpa_to_iov(const struct mem_table *t, uint64_t gpa, uint64_t len, struct iovec *iov, int max_iov);

struct vring {
  uint16_t num;
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  uint16_t last_avail_idx; /* next avail entry to pop */
  uint16_t used_idx;       /* next used entry to fill (published on flush) */
  uint16_t published_used; /* used->idx when a notification was last decided */
  uint16_t exposed_used;   /* used->idx as last written */
  uint16_t signalled_used; /* used idx at the last call */
  bool signalled_valid;
  bool event_idx;
};

/* A popped chain, split by direction: out = device-readable, in = device-writable. */
struct vring_chain {
  uint16_t head;
  int n_out, n_in; /* iov[0..n_out) readable, iov[n_out..n_out+n_in) writable */
  uint64_t out_len, in_len;
};

enum vring_pop_result {
  VRING_EMPTY = 0,
  VRING_POPPED = 1,
  /* The ring itself is broken (bad index, bad head, avail idx jump): the device must stop. */
  VRING_BROKEN = -1,
  /* The chain is malformed (loop, bad address, write-before-read, too long, bad indirect):
   * the driver is broken; the caller drops the front-end (as QEMU marks the device broken). */
  VRING_BAD_CHAIN = -2,
};

/* Translates the three ring addresses (front-end virtual addresses) for a ring of num entries (0: not
 * known yet, checked for one entry); -EFAULT with the bad ones named when any is outside the table. */
int vring_translate(const struct mem_table *t, uint16_t num, uint64_t desc_uva, uint64_t avail_uva, uint64_t used_uva,
                    struct vring_desc **desc, struct vring_avail **avail, struct vring_used **used, char *err,
                    size_t errlen);
int vring_setup(struct vring *vr, const struct mem_table *t, uint16_t num, uint64_t desc_uva, uint64_t avail_uva,
                uint64_t used_uva, uint16_t base, bool event_idx, char *err, size_t errlen);
/* How many entries the driver has made available and we have not popped (0 if none). */
static inline uint16_t vring_avail_pending(const struct vring *vr) {
  return (uint16_t)(__atomic_load_n(&vr->avail->idx, __ATOMIC_ACQUIRE) - vr->last_avail_idx);
}
int vring_pop(struct vring *vr, const struct mem_table *t, struct vring_chain *c, struct iovec *iov, int max_iov,
              char *err, size_t errlen);
/* Consumes the next avail entry, whose head the caller has already read (once) and checked
 * against the queue size, and walks its chain. */
int vring_pop_head(struct vring *vr, const struct mem_table *t, uint16_t head, struct vring_chain *c, struct iovec *iov,
                   int max_iov, char *err, size_t errlen);
/* Walks the chain at head (checked against the queue size by the caller) without consuming an avail
 * entry: for requests resubmitted after a restart (inflight tracking), whose avail entries are gone. */
int vring_walk_chain(const struct vring *vr, const struct mem_table *t, uint16_t head, struct vring_chain *c,
                     struct iovec *iov, int max_iov, char *err, size_t errlen);
/* Records a completion; it becomes visible to the driver at vring_publish(). */
static inline void vring_push(struct vring *vr, uint16_t head, uint32_t len) {
  struct vring_used_elem *e = &vr->used->ring[vr->used_idx % vr->num];
  e->id = head;
  e->len = len;
  vr->used_idx++;
}
/* Makes pushed completions visible to the driver now (a release store of used->idx, no fence and no
 * notification: vring_publish decides that later). */
static inline void vring_expose(struct vring *vr) {
  if (vr->exposed_used == vr->used_idx) return;
  __atomic_store_n(&vr->used->idx, vr->used_idx, __ATOMIC_RELEASE);
  vr->exposed_used = vr->used_idx;
}
/* Publishes pushed completions; returns true if the driver wants a notification. */
bool vring_publish(struct vring *vr);
/* Asks the driver for kicks (before sleeping); returns true if requests arrived meanwhile. */
bool vring_enable_kicks(struct vring *vr);
/* Tells the driver not to kick (while we are busy or polling). */
void vring_disable_kicks(struct vring *vr);
#endif
