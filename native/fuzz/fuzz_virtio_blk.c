/* libFuzzer target: the device side of a virtio-blk queue over guest memory the fuzzer writes, served
 * by the code both virtio exports run (virtio/virtq_serve.c) — the memory table (two adjacent regions,
 * so buffers may straddle them), the split ring (descriptor table, avail and used rings at fuzzed
 * places, fuzzed size, base index and EVENT_IDX), descriptor chains (direct and indirect, loops, bad
 * addresses), the virtio-blk request handler on every chain popped, a backend that completes requests
 * inline or later in a fuzzed order and may answer BUSY (the deferred queue), publication of the used
 * ring, and the inflight tracking of all that: recovered mid-way as a restarted server would, the
 * recovered chains resubmitted, and recovered again at the end.
 *
 * Input: 8 bytes of ring set-up (see struct setup), then the bytes of guest memory. Any crash, any
 * sanitizer report and any broken invariant (abort) is a finding. */
#include "virtio/inflight.h"
#include "virtio/virtq_serve.h"
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
#define MAX_NUM      256

struct setup {
  uint8_t log2_num; /* ring size 1 << (v % 9) */
  /* bit 0 EVENT_IDX, 1 read-only, 2 4k blocks, 3-4 completion order, 5 fail some, 6 complete some
   * inline (in submit), 7 a backend of depth 2 (BUSY beyond it) */
  uint8_t flags;
  uint16_t desc_off, avail_off, used_off;
} __attribute__((packed));

static struct mem_table mem;
static uint8_t *host0, *host1;
static struct stor_backend backend;
static struct stor_backend_ops backend_ops;
static struct setup su;
/* One serving unit per ring size, kept across inputs: a unit's slots (4 KiB of iovecs each) are
 * reallocated whenever its size changes, and with one unit for all sizes that was a fresh zeroed MiB under
 * ASan for most inputs. vs points at the current input's. */
static struct virtq_serve vs_by_size[9];
static struct virtq_serve *vs;
static struct stor_req *held[MAX_NUM];
static unsigned nheld;
static uint8_t region_buf[16 + 16 * MAX_NUM] __attribute__((aligned(64)));

static int region(uint64_t gpa, uint32_t size, uint64_t uva, uint8_t **host) {
  int fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
  char err[256];
  if (fd < 0 || ftruncate(fd, size) < 0 || mem_add_region(&mem, gpa, size, uva, 0, fd, err, sizeof err) < 0) abort();
  *host = mem_gpa_to_host(&mem, gpa, size);
  return *host ? 0 : -1;
}

/* The backend's work: touch every byte the request names, as a real one would. */
static void serve(struct stor_req *r) {
  struct virtq_slot *s = (struct virtq_slot *)r;
  if (!s->busy) abort(); /* completed twice */
  volatile uint8_t sink = 0;
  for (int i = 0; i < r->niov; i++) {
    if (r->op == STOR_OP_READ)
      memset(r->iov[i].iov_base, 0xa5, r->iov[i].iov_len);
    else
      for (size_t k = 0; k < r->iov[i].iov_len; k++) sink ^= ((uint8_t *)r->iov[i].iov_base)[k];
  }
  (void)sink;
  r->result = (su.flags & 0x20) && (s->vr.head & 1) ? -5 : 0;
  r->complete(r);
  if (s->busy) abort(); /* the completion must free the slot */
}

static enum stor_submit fake_submit(struct stor_bqueue *q, struct stor_req *r) {
  if (r->offset + r->length < r->offset || r->offset + r->length > backend.props.capacity) abort();
  if ((su.flags & 0x80) && nheld >= 2) return STOR_SUBMIT_BUSY;
  if ((su.flags & 0x40) && (((struct virtq_slot *)r)->vr.head % 3) == 0) {
    serve(r); /* completed inline, in the middle of the batch */
    return STOR_SUBMIT_QUEUED;
  }
  held[nheld++] = r;
  return STOR_SUBMIT_QUEUED;
}

/* Completes held requests in the order the input chose; with wait (or order 0-2) all of them. */
static int fake_reap(struct stor_bqueue *q, bool wait) {
  unsigned order = (su.flags >> 3) & 3;
  int n = 0;
  while (nheld) {
    unsigned pick = order == 0 ? 0 : order == 1 ? nheld - 1 : (nheld * 7 + 3) % nheld;
    struct stor_req *r = held[pick];
    held[pick] = held[--nheld];
    serve(r);
    n++;
    if (!wait && order == 3) break;
  }
  return n;
}

static void fake_commit(struct stor_bqueue *q) {}
static unsigned fake_inflight(struct stor_bqueue *q) { return nheld; }
static void log_nothing(void *ctx, const char *msg) {}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  if (region(0, REGION0_SIZE, UVA0, &host0) || region(REGION1_GPA, REGION1_SIZE, UVA1, &host1)) abort();
  backend.props.capacity = 1 << 20;
  backend.props.block_size = 512;
  backend_ops = (struct stor_backend_ops){
      .submit = fake_submit, .commit = fake_commit, .reap = fake_reap, .inflight = fake_inflight};
  backend.ops = &backend_ops;
  return 0;
}

/* What a restart finds in flight must be exactly what the backend and the deferred queue still hold. */
static void check_recovery(uint16_t num) {
  uint16_t heads[MAX_NUM];
  char err[256];
  int n = inflight_recover(&vs->infl, num, vs->vr.used_idx, heads, err, sizeof err);
  if (n != (int)(nheld + vs->deferred.n)) abort();
  for (int i = 0; i < n; i++)
    if (!vs->slots[heads[i]].busy) abort();
}

/* Serves until nothing moves (bounded); false when the ring turned out broken. Two bounds: the number of
 * polls (one reaped completion per poll in completion order 3 needs a ring's worth of them, BUSY retries
 * as many again), and the work done. A well-behaved ring does at most a few ring's worth of work (each
 * head popped, resubmitted, retried and reaped once or so); a hostile one whose used ring overlaps its
 * avail ring makes a ring's worth of new requests every poll, and serving it for every allowed poll
 * (num * (2 num + 2) requests, 130k at size 256) cost 60 ms an input and most of the fuzzer's time
 * without reaching anything a few rounds of it do not. */
static bool serve_ring(uint16_t num) {
  unsigned work = 0;
  for (unsigned iter = 0; iter < 2u * num + 2 && work < 16u * num + 16; iter++) {
    int n = virtq_serve_poll(vs);
    virtq_serve_publish(vs);
    if (n < 0) return false; /* the export drops such a front-end */
    if (!n && !nheld && !vs->deferred.n) break;
    work += (unsigned)n;
  }
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < sizeof su) return 0;
  memcpy(&su, data, sizeof su);
  data += sizeof su;
  size -= sizeof su;
  /* guest memory: the input, then zeroes */
  size_t n0 = size < REGION0_SIZE ? size : REGION0_SIZE;
  size_t n1 = size - n0 < REGION1_SIZE ? size - n0 : REGION1_SIZE;
  memcpy(host0, data, n0);
  memset(host0 + n0, 0, REGION0_SIZE - n0);
  memcpy(host1, data + n0, n1);
  memset(host1 + n1, 0, REGION1_SIZE - n1);

  uint16_t num = (uint16_t)(1u << (su.log2_num % 9));
  vs = &vs_by_size[su.log2_num % 9];
  char err[256];
  uint64_t desc = UVA0 + (uint64_t)(su.desc_off & ~15u), avail = UVA0 + (uint64_t)(su.avail_off & ~1u),
           used = UVA0 + (uint64_t)(su.used_off & ~3u);
  uint16_t base = (uint16_t)(su.desc_off >> 3);
  if (virtq_serve_reserve(vs, num, err, sizeof err) < 0) abort();
  if (vring_setup(&vs->vr, &mem, num, desc, avail, used, base, su.flags & 1, err, sizeof err) < 0) return 0;
  struct virtio_blk_stats stats = {0};
  vs->mem = &mem;
  vs->handler = (struct virtio_blk_handler){
      .be = &backend,
      .block_size = su.flags & 4 ? 4096 : 512,
      .readonly = su.flags & 2,
      .serial = "fuzz",
      .max_discard_sectors = 1u << 22,
      .max_write_zeroes_sectors = 1u << 22,
      .stats = &stats,
      .log = log_nothing,
  };
  vs->faulted = false;
  nheld = 0;
  memset(region_buf, 0, sizeof region_buf);
  struct inflight_region *r = (struct inflight_region *)region_buf;
  r->desc_num = num;
  if (virtq_serve_recover(vs, r, err, sizeof err) != 0) abort(); /* fresh: nothing */

  bool ok = serve_ring(num);
  check_recovery(num);
  if (ok) {
    /* a restart now: the backend loses what it held, and the new server resubmits it from the region */
    nheld = 0;
    vs->deferred.n = 0;
    for (unsigned i = 0; i < num; i++) vs->slots[i].busy = false;
    int n = virtq_serve_recover(vs, r, err, sizeof err);
    if (n < 0) abort(); /* the region is ours: never corrupt */
    virtq_serve_resume(vs, (unsigned)n);
    ok = serve_ring(num);
  }
  virtq_serve_drain(vs);
  virtq_serve_publish(vs);
  if (ok && inflight_recover(&vs->infl, num, vs->vr.used_idx, (uint16_t[MAX_NUM]){0}, err, sizeof err) != 0) abort();
  return 0;
}
