/* libFuzzer target: the device side of a virtio-blk queue over guest memory the fuzzer writes — the
 * memory table (two adjacent regions, so buffers may straddle them), the split ring (descriptor table,
 * avail and used rings at fuzzed places, fuzzed size, base index and EVENT_IDX), descriptor chains
 * (direct and indirect, loops, bad addresses), the virtio-blk request handler on every chain popped,
 * a backend that completes the submitted requests in a fuzzed order, publication of the used ring,
 * and the inflight tracking of all that, recovered at the end as a restarted server would.
 *
 * Input: 8 bytes of ring set-up (see struct setup), then the bytes of guest memory. Any crash, any
 * sanitizer report and any broken invariant (abort) is a finding. */
#include "virtio/inflight.h"
#include "virtio/virtio_blk.h"
#include "virtio/vring.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define REGION0_SIZE (64u << 10)
#define REGION1_SIZE (16u << 10)
#define REGION1_GPA  REGION0_SIZE /* adjacent: a buffer may cross from one into the other */
#define UVA0         0x7f0000000000ull
#define UVA1         0x7f1000000000ull
#define MAX_SEGS     258
#define MAX_NUM      256

struct setup {
  uint8_t log2_num; /* ring size 1 << (v % 9) */
  uint8_t flags;    /* bit 0 EVENT_IDX, 1 read-only, 2 4k blocks, 3-4 completion order, 5 fail some */
  uint16_t desc_off, avail_off, used_off;
} __attribute__((packed));

static struct mem_table mem;
static uint8_t *host0, *host1;
static struct stor_backend backend;

static int region(uint64_t gpa, uint32_t size, uint64_t uva, uint8_t **host) {
  int fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
  char err[256];
  if (fd < 0 || ftruncate(fd, size) < 0 || mem_add_region(&mem, gpa, size, uva, 0, fd, err, sizeof err) < 0) abort();
  *host = mem_gpa_to_host(&mem, gpa, size);
  return *host ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  if (region(0, REGION0_SIZE, UVA0, &host0) || region(REGION1_GPA, REGION1_SIZE, UVA1, &host1)) abort();
  backend.props.capacity = 1 << 20;
  backend.props.block_size = 512;
  return 0;
}

struct slot {
  struct virtio_blk_req vr; /* first: the completion finds the slot */
  struct vring *ring;
  struct inflight_queue *infl;
  uint16_t head;
  bool busy;
  struct iovec iov[MAX_SEGS];
};

static struct slot slots[MAX_NUM];
static struct slot *submitted[MAX_NUM];
static unsigned nsubmitted;
static uint8_t region_buf[16 + 16 * MAX_NUM] __attribute__((aligned(64)));

static void complete_slot(struct virtio_blk_req *vr, uint8_t status, uint32_t used_len) {
  struct slot *s = (struct slot *)vr;
  if (!s->busy) abort(); /* completed twice */
  s->busy = false;
  virtio_blk_req_status(vr, status);
  inflight_pushed(s->infl, s->head);
  vring_push(s->ring, s->head, used_len);
}

static void log_nothing(void *ctx, const char *msg) {}

/* The backend's work: touch every byte the request names, as a real one would. */
static void serve(struct stor_req *r, bool fail) {
  volatile uint8_t sink = 0;
  for (int i = 0; i < r->niov; i++) {
    if (r->op == STOR_OP_READ)
      memset(r->iov[i].iov_base, 0xa5, r->iov[i].iov_len);
    else
      for (size_t k = 0; k < r->iov[i].iov_len; k++) sink ^= ((uint8_t *)r->iov[i].iov_base)[k];
  }
  (void)sink;
  r->result = fail ? -5 : 0;
  r->complete(r);
}

static void complete_some(struct setup *su, bool all) {
  unsigned order = (su->flags >> 3) & 3;
  while (nsubmitted) {
    unsigned pick = order == 0 ? 0 : order == 1 ? nsubmitted - 1 : (nsubmitted * 7 + 3) % nsubmitted;
    struct slot *s = submitted[pick];
    submitted[pick] = submitted[--nsubmitted];
    serve(&s->vr.req, (su->flags & 0x20) && (s->head & 1));
    if (!all && order == 3) break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct setup su;
  if (size < sizeof su) return 0;
  memcpy(&su, data, sizeof su);
  data += sizeof su;
  size -= sizeof su;
  memset(host0, 0, REGION0_SIZE);
  memset(host1, 0, REGION1_SIZE);
  size_t n0 = size < REGION0_SIZE ? size : REGION0_SIZE;
  memcpy(host0, data, n0);
  if (size > n0) memcpy(host1, data + n0, size - n0 < REGION1_SIZE ? size - n0 : REGION1_SIZE);

  uint16_t num = (uint16_t)(1u << (su.log2_num % 9));
  bool event_idx = su.flags & 1;
  struct vring vr;
  char err[256];
  uint64_t desc = UVA0 + (uint64_t)(su.desc_off & ~15u), avail = UVA0 + (uint64_t)(su.avail_off & ~1u),
           used = UVA0 + (uint64_t)(su.used_off & ~3u);
  uint16_t base = (uint16_t)(su.desc_off >> 3);
  if (vring_setup(&vr, &mem, num, desc, avail, used, base, event_idx, err, sizeof err) < 0) return 0;

  struct virtio_blk_stats stats = {0};
  struct virtio_blk_handler h = {
      .be = &backend,
      .block_size = su.flags & 4 ? 4096 : 512,
      .readonly = su.flags & 2,
      .serial = "fuzz",
      .max_discard_sectors = 1u << 22,
      .max_write_zeroes_sectors = 1u << 22,
      .stats = &stats,
      .log = log_nothing,
  };
  struct inflight_queue infl = {.r = (struct inflight_region *)region_buf};
  memset(region_buf, 0, sizeof region_buf);
  infl.r->desc_num = num;
  uint16_t heads[MAX_NUM];
  if (inflight_recover(&infl, num, vr.used_idx, heads, err, sizeof err) != 0) abort(); /* fresh: nothing */

  memset(slots, 0, sizeof slots);
  nsubmitted = 0;
  for (unsigned iter = 0; iter < 2u * num + 2; iter++) {
    uint16_t pending = vring_avail_pending(&vr);
    if (!pending) break;
    if (pending > num) break; /* the export drops such a front-end */
    uint16_t head = __atomic_load_n(&vr.avail->ring[vr.last_avail_idx % num], __ATOMIC_RELAXED);
    if (head >= num || slots[head].busy) break;
    struct slot *s = &slots[head];
    struct vring_chain c;
    if (vring_pop_head(&vr, &mem, head, &c, s->iov, MAX_SEGS, err, sizeof err) != VRING_POPPED) break;
    if (c.head != head || c.n_out + c.n_in > MAX_SEGS) abort();
    inflight_popped(&infl, head);
    s->busy = true;
    s->head = head;
    s->ring = &vr;
    s->infl = &infl;
    s->vr.head = head;
    if (virtio_blk_process(&h, &s->vr, complete_slot, s->iov, c.n_out, c.n_in, c.out_len, c.in_len) ==
        VIRTIO_BLK_REQ_SUBMIT) {
      struct stor_req *r = &s->vr.req;
      if (r->offset + r->length < r->offset || r->offset + r->length > backend.props.capacity) abort();
      submitted[nsubmitted++] = s;
    }
    if (iter % 3 == 2) complete_some(&su, false);
    vring_publish(&vr);
    inflight_published(&infl, vr.used_idx);
  }
  /* a restart now: what recovery finds in flight must be exactly what the backend still holds */
  unsigned held = nsubmitted;
  int n = inflight_recover(&infl, num, vr.used_idx, heads, err, sizeof err);
  if (n != (int)held) abort();
  for (int i = 0; i < n; i++)
    if (!slots[heads[i]].busy) abort();
  complete_some(&su, true);
  vring_publish(&vr);
  inflight_published(&infl, vr.used_idx);
  if (inflight_recover(&infl, num, vr.used_idx, heads, err, sizeof err) != 0) abort();
  return 0;
}
