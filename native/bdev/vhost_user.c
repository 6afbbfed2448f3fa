/* A remote vhost-user-blk device as a stor backend: the driver side of split virtqueues in shared
 * memory. The TypeScript front-end (src/lib/vhost-user/frontend.ts) negotiates with the server and
 * hands it the memory and eventfds this file creates; from then on requests flow here without
 * JavaScript. Because it is a backend, every frontend and engine (client library, copy, bench,
 * even `stor serve` as a proxy) can use it.
 *
 * Layout of the shared memory (one memfd, registered with the server, guest address = our own
 * virtual address): per queue, the rings, then one slot per ring entry (request header, status
 * byte, discard segment, an indirect descriptor table), then one bounce buffer per slot for data
 * that does not live in registered memory. A request is a direct descriptor chain while the ring
 * has free descriptors for it, else one indirect descriptor (its slot's table), so a ring of N
 * entries always carries N requests in flight. */
#include "sys/clock.h"
#include "bdev/bdev.h"
#include "sys/napi_util.h"
#include "virtio/virtio_blk.h"
#include "virtio/vring.h"
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define VU_MAX_QUEUES  64
#define VU_MAX_REGIONS 32
#define VU_MAX_CHAIN   (1024 + 3) /* seg_max is capped at 1024 */
#define ALIGN_UP(x, a) (((x) + (a)-1) & ~((uint64_t)(a)-1))

struct vu_slot {
  struct virtio_blk_outhdr hdr;
  struct virtio_blk_discard_write_zeroes seg;
  uint8_t status;
};

struct vu_region {
  uint8_t *addr;
  uint64_t size;
  int fd;
  bool owned;
};

struct vu_queue {
  struct vu_backend *be;
  unsigned index;
  uint16_t num;
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  struct vu_slot *slots;      /* num */
  struct vring_desc *itables; /* num * itable_len */
  uint8_t *bounce;            /* num * bounce_size */
  struct stor_req **reqs;     /* num: the request in each slot (private: not in shared memory) */
  bool *bounced;              /* num: the slot's data went through its bounce buffer */
  uint16_t *free_stack;       /* free descriptor ids */
  unsigned free_top;
  uint16_t *chain_next; /* num: our private copy of each chain's links */
  uint16_t *chain_len;  /* num, by head: descriptors the chain holds (0: free) */
  unsigned inflight;
  uint16_t avail_shadow, avail_published, last_used;
  int kick_fd, call_fd;
  int wait_fd;         /* epoll: call_fd and the control socket, registered once (-1: not yet) */
  atomic_bool claimed; /* one backend queue (thread) per virtqueue */
  bool interrupts_on;
  uint16_t coalesce; /* completions a sleep may wait for beyond the next one (vq_coalesce_target) */
  uint64_t kicks, waits;
  unsigned idle_polls; /* empty non-blocking reaps since the last liveness check */
};

struct vu_backend {
  struct stor_backend base;
  unsigned nqueues;
  uint32_t seg_max;
  uint32_t itable_len; /* seg_max + 2 */
  uint64_t bounce_size;
  bool event_idx;
  bool indirect; /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
  uint8_t *mem;  /* the ring/slot/bounce memfd mapping */
  uint64_t mem_size;
  int mem_fd;
  struct vu_queue q[VU_MAX_QUEUES];
  struct vu_region regions[VU_MAX_REGIONS]; /* [0] is mem; the rest are zero-copy buffer regions */
  unsigned nregions;
  pthread_mutex_t lock; /* claims and region changes */
  atomic_bool dead;     /* the server went away: fail everything quickly */
  int ctl_fd;           /* a dup of the control socket: its EOF means the server is gone */
};

/* The server closed the control socket (it died or dropped us): nothing will complete. */
static bool vu_server_gone(struct vu_backend *b) {
  if (atomic_load_explicit(&b->dead, memory_order_relaxed)) return true;
  if (b->ctl_fd < 0) return false;
  struct pollfd p = {b->ctl_fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  char c;
  if ((p.revents & (POLLHUP | POLLRDHUP | POLLERR)) || recv(b->ctl_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
    atomic_store(&b->dead, true);
    return true;
  }
  return false;
}

static bool in_regions(struct vu_backend *b, const void *p, size_t len) {
  const uint8_t *a = p;
  for (unsigned i = 0; i < b->nregions; i++) {
    const struct vu_region *r = &b->regions[i];
    if (a >= r->addr && (uint64_t)(a - r->addr) < r->size && len <= r->size - (uint64_t)(a - r->addr)) return true;
  }
  return false;
}

/* ---- notification helpers (driver side) ------------------------------------------------------- */

static inline bool need_event(uint16_t event, uint16_t new_idx, uint16_t old) {
  return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

static void vq_kick_if_needed(struct vu_queue *q) {
  if (q->avail_shadow == q->avail_published) return;
  uint16_t old = q->avail_published;
  __atomic_store_n(&q->avail->idx, q->avail_shadow, __ATOMIC_RELEASE);
  q->avail_published = q->avail_shadow;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  bool kick;
  if (q->be->event_idx) {
    uint16_t ev = __atomic_load_n((uint16_t *)&q->used->ring[q->num], __ATOMIC_RELAXED);
    kick = need_event(ev, q->avail_shadow, old);
  } else {
    kick = !(__atomic_load_n(&q->used->flags, __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY);
  }
  if (kick) {
    uint64_t one = 1;
    if (write(q->kick_fd, &one, 8) == 8) q->kicks++;
  }
}

/* Completion coalescing, for a waiting reap (EVENT_IDX only). A fast consumer that asks for a call at
 * every next completion makes a busy server pay a write syscall per handful of requests, and itself a
 * wake-up for each: against qemu-storage-daemon at QD32, unpinned, 0.18-0.35 calls per request, the
 * server's CPU per request up 30 %, and stor bench at 0.75 of blkio-bench. So while completions come
 * densely, a sleep asks for the call after `coalesce`+1 completions: at most a quarter of what is in
 * flight, so three quarters of the queue stay busy at the server and the call is certain to come.
 * Sparse completions (a slow or remote backend, a server gone quiet) shrink it (vq_coalesce_learn).
 * The sleep is not bounded by a timer: on this VM a sleep with a short timeout woke 5x slower than
 * one without, which cost more than coalescing saved. */
#define VU_DENSE_GAP_NS 5000

static uint16_t vq_coalesce_target(const struct vu_queue *q) {
  unsigned quarter = q->inflight ? (q->inflight - 1) / 4 : 0;
  return (uint16_t)(q->coalesce < quarter ? q->coalesce : quarter);
}

/* Learns from each sleep: a wake-up that finds everything completed means the server ran out of work
 * while we slept (it then waits for our kick, and both pay a wake-up per batch: at QD16 this cost 20 %),
 * so coalescing stops; otherwise completions at most VU_DENSE_GAP_NS apart (the sleep divided by what
 * it asked for) raise the target, sparser ones halve it. */
static void vq_coalesce_learn(struct vu_queue *q, uint64_t slept_ns, uint16_t extra, bool drained) {
  if (drained)
    q->coalesce = 0;
  else if (slept_ns / (extra + 1u) < VU_DENSE_GAP_NS)
    q->coalesce = q->coalesce >= 32 ? 64 : (uint16_t)(q->coalesce * 2 + 1);
  else
    q->coalesce /= 2;
}

/* Turns completion calls on, asking for one after `extra`+1 completions, or off. */
static void vq_interrupts_after(struct vu_queue *q, bool on, uint16_t extra) {
  if (q->be->event_idx) {
    /* used_event: ask for a call when that completion lands — rewritten on every arm, since last_used
     * moves on — or leave it stale (off) */
    q->interrupts_on = on;
    if (!on) return;
    __atomic_store_n(&q->avail->ring[q->num], (uint16_t)(q->last_used + extra), __ATOMIC_RELAXED);
  } else {
    if (q->interrupts_on == on) return;
    q->interrupts_on = on;
    uint16_t f = q->avail->flags;
    __atomic_store_n(&q->avail->flags,
                     (uint16_t)(on ? f & ~VRING_AVAIL_F_NO_INTERRUPT : f | VRING_AVAIL_F_NO_INTERRUPT),
                     __ATOMIC_RELAXED);
  }
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static void vq_interrupts(struct vu_queue *q, bool on) { vq_interrupts_after(q, on, 0); }

/* ---- backend ops ------------------------------------------------------------------------------ */

static int vu_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out) {
  struct vu_backend *b = (struct vu_backend *)be;
  if (atomic_load(&b->dead)) return -ENOTCONN;
  for (unsigned i = 0; i < b->nqueues; i++) {
    bool expected = false;
    if (atomic_compare_exchange_strong(&b->q[i].claimed, &expected, true)) {
      *out = (struct stor_bqueue *)&b->q[i];
      return 0;
    }
  }
  return -EBUSY; /* more threads than virtqueues */
}

static void vu_queue_close(struct stor_bqueue *bq) {
  struct vu_queue *q = (struct vu_queue *)bq;
  atomic_store(&q->claimed, false);
}

/* Returns descriptor ids of a finished chain to the free list (walking our private copy of the
 * chain: the shared table may have been scribbled on by the device). */
static void free_chain(struct vu_queue *q, uint16_t head) {
  uint16_t id = head;
  for (unsigned i = 0; i < q->chain_len[head]; i++) {
    q->free_stack[q->free_top++] = id;
    id = q->chain_next[id];
  }
  q->chain_len[head] = 0;
}

/* Each request is a chain [header][data...][status] (discard/write-zeroes: [header][segment][status]).
 * Direct descriptors while the ring has enough free ones — what most drivers and libblkio do, and
 * the cheapest for the device; one indirect descriptor otherwise (when negotiated). */
static enum stor_submit vu_submit(struct stor_bqueue *bq, struct stor_req *r) {
  struct vu_queue *q = (struct vu_queue *)bq;
  struct vu_backend *b = q->be;
  if (atomic_load_explicit(&b->dead, memory_order_relaxed)) {
    stor_req_done(r, -ENOTCONN);
    return STOR_SUBMIT_QUEUED;
  }
  bool data = r->op == STOR_OP_READ || r->op == STOR_OP_WRITE;
  if (!data && r->op != STOR_OP_FLUSH && r->op != STOR_OP_DISCARD && r->op != STOR_OP_WRITE_ZEROES) {
    stor_req_done(r, -EOPNOTSUPP);
    return STOR_SUBMIT_QUEUED;
  }
  bool zero_copy = false;
  unsigned ndata = 0;
  if (data) {
    zero_copy = (unsigned)r->niov <= b->seg_max;
    for (int i = 0; zero_copy && i < r->niov; i++) zero_copy = in_regions(b, r->iov[i].iov_base, r->iov[i].iov_len);
    if (zero_copy) {
      for (int i = 0; i < r->niov; i++)
        if (r->iov[i].iov_len) ndata++;
    } else {
      if (r->length > b->bounce_size) {
        stor_req_done(r, -E2BIG);
        return STOR_SUBMIT_QUEUED;
      }
      ndata = 1;
    }
  } else if (r->op != STOR_OP_FLUSH) {
    ndata = 1; /* the discard / write-zeroes segment */
  }
  unsigned n = ndata + 2;
  bool direct = q->free_top >= n;
  /* no descriptors left: back-pressure, the caller resubmits after a completion */
  if (!direct && !(b->indirect && q->free_top >= 1)) return STOR_SUBMIT_BUSY;
  uint16_t head = q->free_stack[q->free_top - 1];
  struct vu_slot *s = &q->slots[head];
  struct vring_desc chain[VU_MAX_CHAIN];
  struct vring_desc *t = direct ? chain : &q->itables[(size_t)head * b->itable_len];
  unsigned k = 0;
  s->status = 0xff;
  s->hdr.ioprio = 0;
  s->hdr.sector = r->offset / 512;
  t[k++] = (struct vring_desc){(uint64_t)(uintptr_t)&s->hdr, sizeof s->hdr, VRING_DESC_F_NEXT, 0};
  q->bounced[head] = false;
  if (data) {
    bool read = r->op == STOR_OP_READ;
    uint16_t dflags = (uint16_t)(VRING_DESC_F_NEXT | (read ? VRING_DESC_F_WRITE : 0));
    s->hdr.type = read ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    if (zero_copy) {
      for (int i = 0; i < r->niov; i++)
        if (r->iov[i].iov_len)
          t[k++] = (struct vring_desc){(uint64_t)(uintptr_t)r->iov[i].iov_base, (uint32_t)r->iov[i].iov_len, dflags, 0};
    } else {
      uint8_t *bb = q->bounce + (size_t)head * b->bounce_size;
      if (!read) iov_to_buf(r->iov, r->niov, 0, bb, r->length);
      q->bounced[head] = true;
      t[k++] = (struct vring_desc){(uint64_t)(uintptr_t)bb, (uint32_t)r->length, dflags, 0};
    }
  } else if (r->op == STOR_OP_FLUSH) {
    s->hdr.type = VIRTIO_BLK_T_FLUSH;
    s->hdr.sector = 0;
  } else {
    s->hdr.type = r->op == STOR_OP_DISCARD ? VIRTIO_BLK_T_DISCARD : VIRTIO_BLK_T_WRITE_ZEROES;
    s->hdr.sector = 0;
    s->seg.sector = r->offset / 512;
    s->seg.num_sectors = (uint32_t)(r->length / 512);
    s->seg.flags = (r->flags & STOR_REQ_F_UNMAP) ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
    t[k++] = (struct vring_desc){(uint64_t)(uintptr_t)&s->seg, sizeof s->seg, VRING_DESC_F_NEXT, 0};
  }
  t[k++] = (struct vring_desc){(uint64_t)(uintptr_t)&s->status, 1, VRING_DESC_F_WRITE, 0};
  if (direct) {
    /* pop k descriptor ids (the first is head) and link them in the shared table */
    uint16_t prev = 0;
    for (unsigned i = 0; i < k; i++) {
      uint16_t id = q->free_stack[--q->free_top];
      if (i) {
        q->desc[prev].next = id;
        q->chain_next[prev] = id;
      }
      q->desc[id] = t[i];
      prev = id;
    }
    q->chain_len[head] = (uint16_t)k;
  } else {
    for (unsigned i = 0; i + 1 < k; i++) t[i].next = (uint16_t)(i + 1);
    q->free_top--;
    q->desc[head] = (struct vring_desc){(uint64_t)(uintptr_t)t, k * 16, VRING_DESC_F_INDIRECT, 0};
    q->chain_len[head] = 1;
  }
  q->reqs[head] = r;
  q->inflight++;
  q->avail->ring[q->avail_shadow % q->num] = head;
  q->avail_shadow++;
  return STOR_SUBMIT_QUEUED;
}

static void vu_commit(struct stor_bqueue *bq) { vq_kick_if_needed((struct vu_queue *)bq); }

static int vu_reap_ready(struct vu_queue *q) {
  struct vu_backend *b = q->be;
  int n = 0;
  uint16_t used_idx = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
  while (q->last_used != used_idx) {
    struct vring_used_elem e = q->used->ring[q->last_used % q->num];
    q->last_used++;
    if (e.id >= q->num || !q->reqs[e.id]) {
      atomic_store(&b->dead, true);
      continue;
    } /* a server bug */
    struct stor_req *r = q->reqs[e.id];
    q->reqs[e.id] = NULL;
    uint8_t st = q->slots[e.id].status;
    if (st == VIRTIO_BLK_S_OK && r->op == STOR_OP_READ && q->bounced[e.id])
      buf_to_iov(r->iov, r->niov, 0, q->bounce + (size_t)e.id * b->bounce_size, r->length);
    free_chain(q, (uint16_t)e.id);
    q->inflight--;
    n++;
    stor_req_done(r, st == VIRTIO_BLK_S_OK ? 0 : st == VIRTIO_BLK_S_UNSUPP ? -EOPNOTSUPP : -EIO);
  }
  return n;
}

/* The sleep of a waiting reap: one epoll set per queue, so a wake-up costs epoll_wait and the read
 * of the call eventfd, nothing more (poll(2) would register both fds on every sleep). */
static int vu_wait_fd_open(struct vu_queue *q) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return -errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = q->call_fd};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, q->call_fd, &ev) < 0) {
    int e = errno;
    close(ep);
    return -e;
  }
  if (q->be->ctl_fd >= 0) {
    struct epoll_event hup = {.events = EPOLLRDHUP, .data.fd = q->be->ctl_fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, q->be->ctl_fd, &hup) < 0) {
      int e = errno;
      close(ep);
      return -e;
    }
  }
  q->wait_fd = ep;
  return 0;
}

static unsigned vu_inflight(struct stor_bqueue *bq) { return ((struct vu_queue *)bq)->inflight; }

static int vu_reap(struct stor_bqueue *bq, bool wait) {
  struct vu_queue *q = (struct vu_queue *)bq;
  struct vu_backend *b = q->be;
  vq_kick_if_needed(q);
  int n = vu_reap_ready(q);
  /* No liveness syscall before sleeping: the sleep itself watches the control socket, so a server
   * that goes away wakes us (a check per wait cost more than the wait at high rates). */
  while (n == 0 && wait && vu_inflight(bq) && !atomic_load_explicit(&b->dead, memory_order_relaxed)) {
    uint16_t extra = b->event_idx ? vq_coalesce_target(q) : 0;
    vq_interrupts_after(q, true, extra);
    n = vu_reap_ready(q); /* completions that raced with turning interrupts on */
    if (n) break;
    if (q->wait_fd < 0 && vu_wait_fd_open(q) < 0) {
      atomic_store(&b->dead, true);
      break;
    }
    struct epoll_event ev[2];
    uint64_t t0 = b->event_idx ? stor_now_ns() : 0; /* only coalescing needs the time */
    unsigned before = q->inflight;
    int r = epoll_wait(q->wait_fd, ev, 2, 1000);
    uint64_t slept = b->event_idx ? stor_now_ns() - t0 : 0;
    q->waits++;
    for (int i = 0; i < r; i++) {
      if (ev[i].data.fd == q->call_fd) {
        uint64_t v;
        if (read(q->call_fd, &v, 8) < 0) { /* spurious */
        }
      } else
        atomic_store(&b->dead, true); /* the control socket hung up */
    }
    if (r == 0) vu_server_gone(b); /* a second without a call: look closer */
    n = vu_reap_ready(q);
    if (b->event_idx) vq_coalesce_learn(q, slept, extra, n > 0 && (unsigned)n == before);
  }
  if (q->interrupts_on && !wait) vq_interrupts(q, false);
  /* polling callers: look at the control socket now and then */
  if (n == 0 && !wait && vu_inflight(bq) && ++q->idle_polls >= 65536) {
    q->idle_polls = 0;
    vu_server_gone(b);
  }
  if (n) q->idle_polls = 0;
  /* a dead server: complete what is left so callers never hang */
  if (atomic_load_explicit(&b->dead, memory_order_relaxed)) {
    for (unsigned id = 0; id < q->num; id++) {
      struct stor_req *r = q->reqs[id];
      if (!r) continue;
      q->reqs[id] = NULL;
      free_chain(q, (uint16_t)id);
      q->inflight--;
      n++;
      stor_req_done(r, -ENOTCONN);
    }
  }
  return n;
}

static int vu_arm(struct stor_bqueue *bq) {
  struct vu_queue *q = (struct vu_queue *)bq;
  /* A server that went away is noticed by whoever sleeps on event_fd (the client watches the
   * control socket; vu_reap's sleep polls it): no syscall here, arming is on the hot path. */
  if (atomic_load_explicit(&q->be->dead, memory_order_relaxed)) return vu_reap(bq, false);
  /* used_event must name the next completion we have NOT seen: completions reaped after writing it
   * would leave it behind, and the device (rightly) would never signal again. Re-arm until a pass
   * after arming finds nothing. */
  int total = 0;
  for (;;) {
    vq_interrupts(q, true);
    int n = vu_reap_ready(q);
    total += n;
    if (!n || !vu_inflight(bq)) break;
  }
  return total;
}

static int vu_event_fd(struct stor_bqueue *bq) { return ((struct vu_queue *)bq)->call_fd; }
static int vu_flush(struct stor_backend *be) { return 0; } /* FLUSH requests go through the queues */

static void vu_destroy(struct stor_backend *be) {
  struct vu_backend *b = (struct vu_backend *)be;
  for (unsigned i = 0; i < b->nqueues; i++) {
    struct vu_queue *q = &b->q[i];
    if (q->kick_fd >= 0) close(q->kick_fd);
    if (q->call_fd >= 0) close(q->call_fd);
    if (q->wait_fd >= 0) close(q->wait_fd);
    free(q->reqs);
    free(q->free_stack);
    free(q->bounced);
    free(q->chain_next);
    free(q->chain_len);
  }
  for (unsigned i = 0; i < b->nregions; i++) {
    if (b->regions[i].owned) {
      munmap(b->regions[i].addr, b->regions[i].size);
      close(b->regions[i].fd);
    }
  }
  if (b->ctl_fd >= 0) close(b->ctl_fd);
  pthread_mutex_destroy(&b->lock);
  free(b);
}

static const struct stor_backend_ops vu_ops = {
    .version = STOR_BDEV_OPS_V1,
    .name = "vhost-user",
    .queue_open = vu_queue_open,
    .queue_close = vu_queue_close,
    .submit = vu_submit,
    .commit = vu_commit,
    .reap = vu_reap,
    .event_fd = vu_event_fd,
    .inflight = vu_inflight,
    .arm = vu_arm,
    .flush = vu_flush,
    .destroy = vu_destroy,
};

static const struct stor_bdev_prop_help vu_props[] = {
    {"path", "the vhost-user-blk server's Unix socket"},
    {NULL, NULL},
};

/* Listed so that every backend is in one table; opened by the client library, which performs the
 * vhost-user handshake in TypeScript and then calls vuClientCreate. */
const struct stor_bdev_driver stor_vhost_user_driver = {
    .name = "vhost-user",
    .ops_version = STOR_BDEV_OPS_V1,
    .props = vu_props,
    .open = NULL,
    .help = "a remote vhost-user-blk device (stor as the front-end): split virtqueues in shared memory",
};

/* ---- N-API ----------------------------------------------------------------------------------- */

static void no_free(napi_env env, void *data, void *hint) {}

static struct vu_backend *vu_from_js(napi_env env, napi_value v) {
  struct stor_backend *be = backend_from_js(env, v);
  if (!be) return NULL;
  if (be->ops != &vu_ops) {
    throw_msg(env, "not a vhost-user client backend");
    return NULL;
  }
  return (struct vu_backend *)be;
}

/* Every property of the remote device, from what the handshake negotiated: the virtio features and
 * the config space (each field only with its feature, as a driver must read it), the user's
 * read-only wish, and the memory slots the server offers (0: no CONFIGURE_MEM_SLOTS, then
 * SET_MEM_TABLE's 8). */
static void vu_device_props(struct stor_bdev_props *p, uint64_t f, const struct virtio_blk_config *c, bool ro_wanted,
                            uint32_t mem_slots) {
#define HAS(bit) ((f >> (bit)) & 1)
  bool ro = HAS(VIRTIO_BLK_F_RO) || ro_wanted;
  uint64_t sectors = c->capacity > UINT64_MAX / 512 ? UINT64_MAX / 512 : c->capacity;
  stor_bdev_props_default(p, sectors * 512, ro);
  uint32_t bs = HAS(VIRTIO_BLK_F_BLK_SIZE) && c->blk_size >= 512 ? c->blk_size : 512;
  p->block_size = bs;
  p->optimal_io_alignment = bs;
  uint64_t opt = HAS(VIRTIO_BLK_F_TOPOLOGY) ? (uint64_t)c->topology.opt_io_size * bs : 0;
  p->optimal_io_size = opt > UINT32_MAX ? 0 : (uint32_t)opt;
  p->max_queues = HAS(VIRTIO_BLK_F_MQ) && c->num_queues > 1 ? c->num_queues : 1;
  uint32_t seg_max = HAS(VIRTIO_BLK_F_SEG_MAX) && c->seg_max > 0 ? c->seg_max : 1;
  p->max_segments = seg_max > 1024 ? 1024 : seg_max;
  p->can_discard = HAS(VIRTIO_BLK_F_DISCARD) && !ro;
  p->can_write_zeroes = HAS(VIRTIO_BLK_F_WRITE_ZEROES) && !ro;
  uint64_t dalign = (uint64_t)(c->discard_sector_alignment ? c->discard_sector_alignment : 1) * 512;
  p->discard_alignment = dalign > UINT32_MAX ? 512 : (uint32_t)dalign;
  p->max_discard_len = (uint64_t)c->max_discard_sectors * 512;
  p->max_write_zeroes_len = (uint64_t)c->max_write_zeroes_sectors * 512;
  p->max_mem_regions = mem_slots ? mem_slots : 8; /* the server's count, as libblkio reports it */
  p->needs_mem_regions = true;
  p->virtio_features = f;
#undef HAS
}

/* vuClientCreate({features (BigInt), config (Buffer: the config space), readonly, queues, queueSize,
 *                 maxMemSlots, bounceSize, desc, controlFd})
 *   -> {backend, memFd, memAddr (BigInt), memSize, queues: [{desc, avail, used (BigInt addrs), kickFd, callFd}]}
 * The backend owns every property of the device (bdevProperties), derived here from the negotiated
 * features and the config space. The fds returned stay owned by the backend: the front-end sends
 * copies to the server. */
static napi_value js_vu_create(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  uint64_t features, bounce;
  uint32_t nq, qs, mem_slots;
  bool ro;
  char desc[256];
  if (!prop_u64(env, argv[0], "features", &features, 0) || !prop_bool(env, argv[0], "readonly", &ro, false) ||
      !prop_u32(env, argv[0], "queues", &nq, 1) || !prop_u32(env, argv[0], "queueSize", &qs, 256) ||
      !prop_u32(env, argv[0], "maxMemSlots", &mem_slots, 0) ||
      !prop_u64(env, argv[0], "bounceSize", &bounce, 1 << 20) ||
      !prop_str(env, argv[0], "desc", desc, sizeof desc, "vhost-user"))
    return NULL;
  int32_t ctl_fd;
  if (!prop_i32(env, argv[0], "controlFd", &ctl_fd, -1)) return NULL;
  struct virtio_blk_config cfg;
  memset(&cfg, 0, sizeof cfg);
  napi_value cfg_v;
  bool has_cfg;
  void *cfg_data;
  size_t cfg_len;
  if (!get_prop(env, argv[0], "config", &cfg_v, &has_cfg)) return NULL;
  if (!has_cfg || !arg_buffer(env, cfg_v, &cfg_data, &cfg_len))
    return throw_msg(env, "vuClientCreate: config must be the device's config space (a Buffer)");
  memcpy(&cfg, cfg_data, cfg_len < sizeof cfg ? cfg_len : sizeof cfg); /* a shorter space reads as zeros */
  struct stor_bdev_props props;
  vu_device_props(&props, features, &cfg, ro, mem_slots);
  if (nq < 1 || nq > VU_MAX_QUEUES) return throw_msg(env, "queues must be 1..%d", VU_MAX_QUEUES);
  if (nq > props.max_queues)
    return throw_msg(env, "numQueues: %u queues asked, the device has %u", nq, props.max_queues);
  if (qs < 2 || qs > 32768 || (qs & (qs - 1))) return throw_msg(env, "queue size %u is not a power of 2", qs);
  uint32_t seg_max = props.max_segments;
  bool event_idx = (features >> VIRTIO_RING_F_EVENT_IDX) & 1, indirect = (features >> VIRTIO_RING_F_INDIRECT_DESC) & 1;
  bounce = ALIGN_UP(bounce, 4096);
  struct vu_backend *b = calloc(1, sizeof *b);
  if (!b) return throw_errno(env, "vuClientCreate", ENOMEM);
  pthread_mutex_init(&b->lock, NULL);
  b->ctl_fd = -1;
  b->nqueues = nq;
  b->seg_max = seg_max;
  b->itable_len = seg_max + 2;
  b->bounce_size = bounce;
  b->event_idx = event_idx;
  b->indirect = indirect;
  /* per-queue sizes */
  uint64_t ring_sz = ALIGN_UP(16ull * qs, 4096) + ALIGN_UP(6 + 2ull * qs, 4096) + ALIGN_UP(6 + 8ull * qs, 4096);
  uint64_t slots_sz = ALIGN_UP(sizeof(struct vu_slot) * qs, 4096);
  uint64_t itab_sz = ALIGN_UP(16ull * b->itable_len * qs, 4096);
  uint64_t per_q = ring_sz + slots_sz + itab_sz + bounce * qs;
  b->mem_size = per_q * nq;
  b->mem_fd = memfd_create("stor-vu-client", MFD_CLOEXEC);
  if (b->mem_fd < 0 || ftruncate(b->mem_fd, (off_t)b->mem_size) < 0) {
    int e = errno;
    if (b->mem_fd >= 0) close(b->mem_fd);
    free(b);
    return throw_errno(env, "memfd", e);
  }
  b->mem = mmap(NULL, b->mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, b->mem_fd, 0);
  if (b->mem == MAP_FAILED) {
    int e = errno;
    close(b->mem_fd);
    free(b);
    return throw_errno(env, "mmap", e);
  }
  b->regions[0] = (struct vu_region){b->mem, b->mem_size, b->mem_fd, true};
  b->nregions = 1;
  b->base.ops = &vu_ops;
  b->base.props = props;
  b->base.refs = 1;
  snprintf(b->base.desc, sizeof b->base.desc, "%s", desc);

  b->ctl_fd = ctl_fd >= 0 ? fcntl(ctl_fd, F_DUPFD_CLOEXEC, 0) : -1;
  napi_value result, qarr;
  napi_create_object(env, &result);
  napi_create_array_with_length(env, nq, &qarr);
  for (unsigned i = 0; i < nq; i++) {
    struct vu_queue *q = &b->q[i];
    uint8_t *base = b->mem + per_q * i;
    q->be = b;
    q->index = i;
    q->num = (uint16_t)qs;
    q->desc = (struct vring_desc *)base;
    q->avail = (struct vring_avail *)(base + ALIGN_UP(16ull * qs, 4096));
    q->used = (struct vring_used *)((uint8_t *)q->avail + ALIGN_UP(6 + 2ull * qs, 4096));
    q->slots = (struct vu_slot *)(base + ring_sz);
    q->itables = (struct vring_desc *)(base + ring_sz + slots_sz);
    q->bounce = base + ring_sz + slots_sz + itab_sz;
    q->reqs = calloc(qs, sizeof *q->reqs);
    q->bounced = calloc(qs, sizeof *q->bounced);
    q->chain_next = calloc(qs, sizeof *q->chain_next);
    q->chain_len = calloc(qs, sizeof *q->chain_len);
    q->free_stack = calloc(qs, sizeof *q->free_stack);
    for (unsigned k = 0; k < qs; k++) q->free_stack[k] = (uint16_t)(qs - 1 - k);
    q->free_top = qs;
    q->wait_fd = -1;
    q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    /* start with interrupts off: a waiting reap turns them on */
    q->interrupts_on = true;
    vq_interrupts(q, false);
    napi_value qo;
    napi_create_object(env, &qo);
    set_prop(env, qo, "desc", make_u64(env, (uint64_t)(uintptr_t)q->desc));
    set_prop(env, qo, "avail", make_u64(env, (uint64_t)(uintptr_t)q->avail));
    set_prop(env, qo, "used", make_u64(env, (uint64_t)(uintptr_t)q->used));
    set_prop(env, qo, "kickFd", make_i32(env, q->kick_fd));
    set_prop(env, qo, "callFd", make_i32(env, q->call_fd));
    napi_set_element(env, qarr, i, qo);
  }
  set_prop(env, result, "backend", backend_wrap(env, &b->base));
  set_prop(env, result, "memFd", make_i32(env, b->mem_fd));
  set_prop(env, result, "memAddr", make_u64(env, (uint64_t)(uintptr_t)b->mem));
  set_prop(env, result, "memSize", make_f64(env, (double)b->mem_size));
  set_prop(env, result, "queues", qarr);
  return result;
}

/* vuClientAllocRegion(backend, size) -> {fd, addr (BigInt), size, buffer}: shared memory the server
 * will see once the front-end registers it (ADD_MEM_REG); I/O from it is zero-copy. The buffer is
 * valid while the backend lives. */
static napi_value js_vu_alloc_region(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct vu_backend *b = vu_from_js(env, argv[0]);
  uint64_t size;
  if (!b) return NULL;
  if (!arg_u64(env, argv[1], &size) || size == 0) return throw_msg(env, "region size must be > 0");
  size = ALIGN_UP(size, 4096);
  pthread_mutex_lock(&b->lock);
  if (b->nregions >= VU_MAX_REGIONS) {
    pthread_mutex_unlock(&b->lock);
    return throw_msg(env, "at most %d memory regions", VU_MAX_REGIONS - 1);
  }
  int fd = memfd_create("stor-vu-region", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    pthread_mutex_unlock(&b->lock);
    return throw_errno(env, "memfd", e);
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    close(fd);
    pthread_mutex_unlock(&b->lock);
    return throw_errno(env, "mmap", e);
  }
  /* Region is not visible to submitters until the front-end has registered it; the caller
   * registers first and only then uses the buffer. */
  b->regions[b->nregions++] = (struct vu_region){p, size, fd, true};
  pthread_mutex_unlock(&b->lock);
  napi_value o, buf;
  napi_create_object(env, &o);
  set_prop(env, o, "fd", make_i32(env, fd));
  set_prop(env, o, "addr", make_u64(env, (uint64_t)(uintptr_t)p));
  set_prop(env, o, "size", make_f64(env, (double)size));
  if (napi_create_external_buffer(env, size, p, no_free, NULL, &buf) != napi_ok)
    return throw_msg(env, "external buffers unavailable");
  set_prop(env, o, "buffer", buf);
  return o;
}

/* vuClientMarkDead(backend, shutdown?): the server went away (or we are closing); in-flight and new
 * requests fail with ENOTCONN. With shutdown, the control socket is shut down too, so the server
 * sees the end of the session now even though our dup of it lives until the backend is freed. */
static napi_value js_vu_mark_dead(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct vu_backend *b = vu_from_js(env, argv[0]);
  if (!b) return NULL;
  bool do_shutdown = false;
  if (argc > 1) arg_bool(env, argv[1], &do_shutdown);
  atomic_store(&b->dead, true);
  if (do_shutdown && b->ctl_fd >= 0) shutdown(b->ctl_fd, SHUT_RDWR);
  /* wake any thread waiting for a call */
  for (unsigned i = 0; i < b->nqueues; i++) {
    uint64_t one = 1;
    if (write(b->q[i].call_fd, &one, 8) < 0) { /* full */
    }
  }
  return make_undefined(env);
}

void vu_client_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "vuClientCreate", js_vu_create);
  export_fn(env, exports, "vuClientAllocRegion", js_vu_alloc_region);
  export_fn(env, exports, "vuClientMarkDead", js_vu_mark_dead);
}
