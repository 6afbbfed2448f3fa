#include "virtio/vring.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static bool add_overflows(uint64_t a, uint64_t b) { return a + b < a; }

int mem_add_region(struct mem_table *t, uint64_t gpa, uint64_t size, uint64_t uva, uint64_t mmap_offset, int fd,
                   char *err, size_t errlen) {
  if (t->n >= MEM_MAX_REGIONS) {
    snprintf(err, errlen, "more than %d memory regions", MEM_MAX_REGIONS);
    return -ENOSPC;
  }
  if (size == 0 || add_overflows(gpa, size) || add_overflows(uva, size) || add_overflows(mmap_offset, size)) {
    snprintf(err, errlen, "memory region gpa 0x%llx size 0x%llx wraps around", (unsigned long long)gpa,
             (unsigned long long)size);
    return -EINVAL;
  }
  for (int i = 0; i < t->n; i++) {
    const struct mem_region *r = &t->r[i];
    if (gpa < r->gpa + r->size && r->gpa < gpa + size) {
      snprintf(err, errlen, "memory region gpa 0x%llx size 0x%llx overlaps region gpa 0x%llx", (unsigned long long)gpa,
               (unsigned long long)size, (unsigned long long)r->gpa);
      return -EINVAL;
    }
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    snprintf(err, errlen, "memory region fd: %s", strerror(e));
    return -e;
  }
  /* Touching a mapping beyond the end of its file raises SIGBUS: refuse such regions up front. */
  if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < mmap_offset + size) {
    snprintf(err, errlen, "memory region (offset 0x%llx size 0x%llx) extends beyond its fd (size 0x%llx)",
             (unsigned long long)mmap_offset, (unsigned long long)size, (unsigned long long)st.st_size);
    return -EINVAL;
  }
  /* mmap needs a page-aligned offset; map from the page below and step in. */
  long page = sysconf(_SC_PAGESIZE);
  uint64_t aligned = mmap_offset & ~((uint64_t)page - 1);
  size_t map_len = (size_t)(size + (mmap_offset - aligned));
  void *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, (off_t)aligned);
  if (p == MAP_FAILED) {
    int e = errno;
    snprintf(err, errlen, "mmap memory region size 0x%llx: %s", (unsigned long long)size, strerror(e));
    return -e;
  }
  struct mem_region *r = &t->r[t->n++];
  r->gpa = gpa;
  r->size = size;
  r->uva = uva;
  r->mmap_offset = mmap_offset;
  r->map_base = p;
  r->map_len = map_len;
  r->host = (uint8_t *)p + (mmap_offset - aligned);
  r->fd = fd;
  return 0;
}

static void region_release(struct mem_region *r) {
  munmap(r->map_base, r->map_len);
  close(r->fd);
}

int mem_remove_region(struct mem_table *t, uint64_t gpa, uint64_t size) {
  for (int i = 0; i < t->n; i++) {
    if (t->r[i].gpa == gpa && t->r[i].size == size) {
      region_release(&t->r[i]);
      t->r[i] = t->r[--t->n];
      return 0;
    }
  }
  return -ENOENT;
}

void mem_clear(struct mem_table *t) {
  for (int i = 0; i < t->n; i++) region_release(&t->r[i]);
  t->n = 0;
}

static void *gpa_lookup(const struct mem_table *t, uint64_t gpa, uint64_t len) {
  for (int i = 0; i < t->n; i++) {
    const struct mem_region *r = &t->r[i];
    if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa)) return r->host + (gpa - r->gpa);
  }
  return NULL;
}

static void *uva_lookup(const struct mem_table *t, uint64_t uva, uint64_t len) {
  for (int i = 0; i < t->n; i++) {
    const struct mem_region *r = &t->r[i];
    if (uva >= r->uva && uva - r->uva < r->size && len <= r->size - (uva - r->uva)) return r->host + (uva - r->uva);
  }
  return NULL;
}

void *mem_gpa_to_host(const struct mem_table *t, uint64_t gpa, uint64_t len) {
  void *p = gpa_lookup(t, gpa, len);
  if (!p && t->miss && t->miss(t->miss_ctx, gpa, len) == 0) p = gpa_lookup(t, gpa, len);
  return p;
}

void *mem_uva_to_host(const struct mem_table *t, uint64_t uva, uint64_t len) {
  void *p = uva_lookup(t, uva, len);
  if (!p && t->miss && t->miss(t->miss_ctx, uva, len) == 0) p = uva_lookup(t, uva, len);
  return p;
}

int mem_gpa_to_iov(const struct mem_table *t, uint64_t gpa, uint64_t len, struct iovec *iov, int max_iov) {
  int n = 0;
  if (add_overflows(gpa, len)) return -EFAULT;
  bool retried = false;
  while (len > 0) {
    const struct mem_region *hit = NULL;
    for (int i = 0; i < t->n; i++) {
      const struct mem_region *r = &t->r[i];
      if (gpa >= r->gpa && gpa - r->gpa < r->size) {
        hit = r;
        break;
      }
    }
    if (!hit && !retried && t->miss && t->miss(t->miss_ctx, gpa, len) == 0) {
      retried = true; /* once per piece: a miss handler that adds nothing cannot loop us */
      continue;
    }
    if (!hit) return -EFAULT;
    retried = false;
    if (n >= max_iov) return -E2BIG;
    uint64_t off = gpa - hit->gpa;
    uint64_t take = hit->size - off;
    if (take > len) take = len;
    iov[n].iov_base = hit->host + off;
    iov[n].iov_len = (size_t)take;
    n++;
    gpa += take;
    len -= take;
  }
  return n;
}

int vring_translate(const struct mem_table *t, uint16_t num, uint64_t desc_uva, uint64_t avail_uva, uint64_t used_uva,
                    struct vring_desc **desc, struct vring_avail **avail, struct vring_used **used, char *err,
                    size_t errlen) {
  if (num == 0) num = 1; /* size not known yet: at least one entry must fit */
  *desc = mem_uva_to_host(t, desc_uva, 16ull * num);
  *avail = mem_uva_to_host(t, avail_uva, 6 + 2ull * num);
  *used = mem_uva_to_host(t, used_uva, 6 + 8ull * num);
  if (!*desc || !*avail || !*used) {
    snprintf(err, errlen, "ring address outside guest memory (desc 0x%llx%s, avail 0x%llx%s, used 0x%llx%s)",
             (unsigned long long)desc_uva, *desc ? "" : " bad", (unsigned long long)avail_uva, *avail ? "" : " bad",
             (unsigned long long)used_uva, *used ? "" : " bad");
    return -EFAULT;
  }
  return 0;
}

int vring_setup(struct vring *vr, const struct mem_table *t, uint16_t num, uint64_t desc_uva, uint64_t avail_uva,
                uint64_t used_uva, uint16_t base, bool event_idx, char *err, size_t errlen) {
  memset(vr, 0, sizeof *vr);
  if (num == 0 || (num & (num - 1)) || num > 32768) {
    snprintf(err, errlen, "queue size %u is not a power of 2 up to 32768", num);
    return -EINVAL;
  }
  vr->num = num;
  int r = vring_translate(t, num, desc_uva, avail_uva, used_uva, &vr->desc, &vr->avail, &vr->used, err, errlen);
  if (r < 0) return r;
  if (((uintptr_t)vr->desc & 15) || ((uintptr_t)vr->avail & 1) || ((uintptr_t)vr->used & 3)) {
    snprintf(err, errlen, "ring addresses misaligned");
    return -EINVAL;
  }
  vr->last_avail_idx = base;
  vr->used_idx = vr->published_used = vr->exposed_used = __atomic_load_n(&vr->used->idx, __ATOMIC_ACQUIRE);
  vr->event_idx = event_idx;
  vr->signalled_valid = false;
  return 0;
}

/* Appends the buffer of one descriptor to the chain, enforcing readable-before-writable. */
static int chain_add(const struct mem_table *t, struct vring_chain *c, const struct vring_desc *d, struct iovec *iov,
                     int max_iov, char *err, size_t errlen) {
  bool writable = d->flags & VRING_DESC_F_WRITE;
  if (!writable && c->n_in) {
    snprintf(err, errlen, "readable descriptor after a writable one");
    return -EINVAL;
  }
  if (d->len == 0) return 0;
  int used = c->n_out + c->n_in;
  int n = mem_gpa_to_iov(t, d->addr, d->len, iov + used, max_iov - used);
  if (n == -EFAULT) {
    snprintf(err, errlen, "buffer 0x%llx+%u outside guest memory", (unsigned long long)d->addr, d->len);
    return n;
  }
  if (n < 0) {
    snprintf(err, errlen, "chain has more than %d segments", max_iov);
    return n;
  }
  if (writable) {
    c->n_in += n;
    c->in_len += d->len;
  } else {
    c->n_out += n;
    c->out_len += d->len;
  }
  return 0;
}

int vring_pop(struct vring *vr, const struct mem_table *t, struct vring_chain *c, struct iovec *iov, int max_iov,
              char *err, size_t errlen) {
  uint16_t avail_idx = __atomic_load_n(&vr->avail->idx, __ATOMIC_ACQUIRE);
  uint16_t pending = (uint16_t)(avail_idx - vr->last_avail_idx);
  if (pending == 0) return VRING_EMPTY;
  if (pending > vr->num) {
    snprintf(err, errlen, "avail index moved by %u, more than the queue size %u", pending, vr->num);
    return VRING_BROKEN;
  }
  uint16_t head = __atomic_load_n(&vr->avail->ring[vr->last_avail_idx % vr->num], __ATOMIC_RELAXED);
  if (head >= vr->num) {
    snprintf(err, errlen, "avail ring names head %u, queue size is %u", head, vr->num);
    return VRING_BROKEN;
  }
  return vring_pop_head(vr, t, head, c, iov, max_iov, err, errlen);
}

int vring_pop_head(struct vring *vr, const struct mem_table *t, uint16_t head, struct vring_chain *c, struct iovec *iov,
                   int max_iov, char *err, size_t errlen) {
  vr->last_avail_idx++;
  return vring_walk_chain(vr, t, head, c, iov, max_iov, err, errlen);
}

int vring_walk_chain(const struct vring *vr, const struct mem_table *t, uint16_t head, struct vring_chain *c,
                     struct iovec *iov, int max_iov, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->head = head;

  const struct vring_desc *table = vr->desc;
  uint32_t table_len = vr->num;
  uint32_t i = head;
  uint32_t visited = 0; /* bounds the walk: a loop can never exceed the table length */
  bool indirect = false;
  for (;;) {
    struct vring_desc d = table[i]; /* one copy: the driver may change it under us */
    if (++visited > table_len) {
      snprintf(err, errlen, "descriptor chain loops or exceeds %u entries", table_len);
      return VRING_BAD_CHAIN;
    }
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (indirect) {
        snprintf(err, errlen, "nested indirect descriptor table");
        return VRING_BAD_CHAIN;
      }
      if (d.flags & VRING_DESC_F_NEXT) {
        snprintf(err, errlen, "indirect descriptor with NEXT set");
        return VRING_BAD_CHAIN;
      }
      if (d.len == 0 || d.len % 16 || d.len / 16 > 32768) {
        snprintf(err, errlen, "indirect table length %u is invalid", d.len);
        return VRING_BAD_CHAIN;
      }
      const struct vring_desc *it = mem_gpa_to_host(t, d.addr, d.len);
      if (!it || ((uintptr_t)it & 7)) {
        snprintf(err, errlen, "indirect table 0x%llx+%u outside guest memory", (unsigned long long)d.addr, d.len);
        return VRING_BAD_CHAIN;
      }
      if (visited != 1) {
        snprintf(err, errlen, "indirect descriptor is not the only one in its chain");
        return VRING_BAD_CHAIN;
      }
      table = it;
      table_len = d.len / 16;
      i = 0;
      visited = 0;
      indirect = true;
      continue;
    }
    int r = chain_add(t, c, &d, iov, max_iov, err, errlen);
    if (r < 0) return VRING_BAD_CHAIN;
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    if (d.next >= table_len) {
      snprintf(err, errlen, "descriptor next %u is beyond the table (%u)", d.next, table_len);
      return VRING_BAD_CHAIN;
    }
    i = d.next;
  }
  return VRING_POPPED;
}

static inline bool need_event(uint16_t event, uint16_t new_idx, uint16_t old) {
  return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool vring_publish(struct vring *vr) {
  if (vr->used_idx == vr->published_used) return false;
  vring_expose(vr);
  uint16_t old = vr->published_used;
  vr->published_used = vr->used_idx;
  /* The driver's suppression flags must be read after our used->idx store is visible. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (vr->event_idx) {
    uint16_t event = __atomic_load_n(&vr->avail->ring[vr->num], __ATOMIC_RELAXED);
    uint16_t since = vr->signalled_valid ? vr->signalled_used : old;
    bool notify = need_event(event, vr->used_idx, since);
    vr->signalled_used = vr->used_idx;
    vr->signalled_valid = true;
    return notify;
  }
  return !(__atomic_load_n(&vr->avail->flags, __ATOMIC_RELAXED) & VRING_AVAIL_F_NO_INTERRUPT);
}

bool vring_enable_kicks(struct vring *vr) {
  if (vr->event_idx) {
    uint16_t *avail_event = (uint16_t *)&vr->used->ring[vr->num];
    __atomic_store_n(avail_event, vr->last_avail_idx, __ATOMIC_RELAXED);
  } else {
    __atomic_store_n(&vr->used->flags, (uint16_t)(vr->used->flags & ~VRING_USED_F_NO_NOTIFY), __ATOMIC_RELAXED);
  }
  /* Make the request for kicks visible before looking at the avail index once more. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return vring_avail_pending(vr) != 0;
}

void vring_disable_kicks(struct vring *vr) {
  if (!vr->event_idx)
    __atomic_store_n(&vr->used->flags, (uint16_t)(vr->used->flags | VRING_USED_F_NO_NOTIFY), __ATOMIC_RELAXED);
  /* With EVENT_IDX a stale avail_event already suppresses kicks until the index wraps. */
}
