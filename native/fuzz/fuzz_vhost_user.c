/* libFuzzer target: what the C side does with the contents of vhost-user messages. The messages
 * themselves are decoded in TypeScript (src/lib/proto/vhost-user.ts, fuzzed by
 * test/unit/vhost-user-fuzz.test.ts); their numbers reach C unchanged, so this target feeds fuzzed
 * sequences of them to the C entry points:
 *   SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG  mem_add_region / mem_remove_region / mem_clear
 *   SET_VRING_ADDR                            vring_translate (ring addresses against the table)
 *   descriptor addresses                      mem_gpa_to_iov / mem_gpa_to_host / mem_uva_to_host
 *   SET_INFLIGHT_FD                           inflight_recover over a buffer with fuzzed contents
 * and checks that every pointer handed out lies inside a mapping.
 *
 * Input: a sequence of 1-byte opcodes, each followed by its fixed-size arguments. */
#include "virtio/inflight.h"
#include "virtio/vring.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FILE_SIZE (64u << 10)

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
  if (memfd < 0 || ftruncate(memfd, FILE_SIZE) < 0) abort();
  return 0;
}

struct reader {
  const uint8_t *p;
  size_t n;
};

static bool take(struct reader *r, void *out, size_t len) {
  if (r->n < len) return false;
  memcpy(out, r->p, len);
  r->p += len;
  r->n -= len;
  return true;
}

/* Small numbers are likelier to hit something: addresses and sizes are drawn from a few scales. */
static uint64_t scaled(uint64_t v) {
  switch (v & 3) {
  case 0: return (v >> 2) & 0xffff;               /* inside one page or region */
  case 1: return ((v >> 2) & 0xff) << 12;         /* page multiples */
  case 2: return UINT64_MAX - ((v >> 2) & 0xfff); /* near the top: overflow */
  default: return v >> 2;
  }
}

static bool inside_mapping(const struct mem_table *t, const void *p, uint64_t len) {
  for (int i = 0; i < t->n; i++) {
    const uint8_t *lo = t->r[i].host, *hi = t->r[i].host + t->r[i].size;
    if ((const uint8_t *)p >= lo && (const uint8_t *)p + len <= hi) return true;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct mem_table t;
  memset(&t, 0, sizeof t);
  struct reader rd = {data, size};
  uint8_t op;
  char err[256];
  static uint8_t region_buf[16 + 16 * 256] __attribute__((aligned(64)));
  while (take(&rd, &op, 1)) {
    switch (op % 6) {
    case 0: { /* add a region */
      uint64_t a[4];
      if (!take(&rd, a, sizeof a)) goto out;
      int fd = dup(memfd);
      if (fd < 0) abort();
      uint64_t gpa = scaled(a[0]), sz = scaled(a[1]), uva = scaled(a[2]), off = scaled(a[3]) & 0xffff;
      if (mem_add_region(&t, gpa, sz, uva, off, fd, err, sizeof err) < 0) close(fd);
      break;
    }
    case 1: { /* remove a region */
      uint64_t a[2];
      if (!take(&rd, a, sizeof a)) goto out;
      mem_remove_region(&t, scaled(a[0]), scaled(a[1]));
      break;
    }
    case 2: { /* ring addresses */
      uint64_t a[3];
      uint8_t l2;
      if (!take(&rd, a, sizeof a) || !take(&rd, &l2, 1)) goto out;
      uint16_t num = (uint16_t)(1u << (l2 % 16));
      struct vring_desc *d;
      struct vring_avail *av;
      struct vring_used *u;
      if (vring_translate(&t, num, scaled(a[0]), scaled(a[1]), scaled(a[2]), &d, &av, &u, err, sizeof err) == 0) {
        if (!inside_mapping(&t, d, 16ull * num) || !inside_mapping(&t, av, 6 + 2ull * num) ||
            !inside_mapping(&t, u, 6 + 8ull * num))
          abort();
        /* what a ring start does with them (it also checks their alignment): touching must be safe */
        struct vring vr;
        if (vring_setup(&vr, &t, num, scaled(a[0]), scaled(a[1]), scaled(a[2]), 0, l2 & 0x80, err, sizeof err) == 0) {
          (void)vring_avail_pending(&vr);
          vring_enable_kicks(&vr);
          vring_disable_kicks(&vr);
        }
      }
      break;
    }
    case 3: { /* a descriptor's buffer */
      uint64_t a[2];
      if (!take(&rd, a, sizeof a)) goto out;
      struct iovec iov[8];
      uint64_t gpa = scaled(a[0]), len = scaled(a[1]) & 0xfffff;
      int n = mem_gpa_to_iov(&t, gpa, len, iov, 8);
      uint64_t total = 0;
      for (int i = 0; i < n; i++) {
        if (!inside_mapping(&t, iov[i].iov_base, iov[i].iov_len)) abort();
        total += iov[i].iov_len;
      }
      if (n >= 0 && total != len) abort();
      void *h = mem_gpa_to_host(&t, gpa, len);
      if (h && !inside_mapping(&t, h, len)) abort();
      h = mem_uva_to_host(&t, gpa, len);
      if (h && !inside_mapping(&t, h, len)) abort();
      break;
    }
    case 4: { /* an inflight buffer a front-end hands back */
      uint8_t l2;
      uint16_t used_idx;
      if (!take(&rd, &l2, 1) || !take(&rd, &used_idx, 2)) goto out;
      uint16_t num = (uint16_t)(1u << (l2 % 9));
      size_t len = 16 + 16 * (size_t)num;
      memset(region_buf, 0, sizeof region_buf);
      size_t have = rd.n < len ? rd.n : len;
      take(&rd, region_buf, have);
      struct inflight_queue q = {.r = (struct inflight_region *)region_buf};
      if (l2 & 0x80) q.r->desc_num = num; /* what SET_INFLIGHT_FD stamps; else whatever came */
      uint16_t heads[256];
      int n = inflight_recover(&q, num, used_idx, heads, err, sizeof err);
      if (n > num) abort();
      for (int i = 0; i < n; i++) {
        if (heads[i] >= num || q.r->desc[heads[i]].inflight != 1) abort();
        if (i && q.r->desc[heads[i - 1]].counter > q.r->desc[heads[i]].counter) abort(); /* pop order */
      }
      if (n >= 0 && q.r->used_idx != used_idx) abort();
      break;
    }
    default: mem_clear(&t); break;
    }
  }
out:
  mem_clear(&t);
  return 0;
}
