/* virtio-blk (virtio 1.x, 5.2): the request layout, and a transport-free request handler. The handler
 * takes a popped chain's device-readable (out) and device-writable (in) iovecs and a handler struct
 * (backend, block size, read-only, serial, discard / write-zeroes limits, a log callback), checks the
 * request, and either finishes it at once or fills a stor_req for the caller to submit; either way
 * the caller hears the status and the used length through one small completion callback. It knows
 * nothing of the transport: vhost-user-blk uses it now, VDUSE next. */
#ifndef STOR_VIRTIO_BLK_H
#define STOR_VIRTIO_BLK_H
#include "bdev/bdev.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES                20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

struct virtio_blk_outhdr {
  uint32_t type;
  uint32_t ioprio;
  uint64_t sector;
};
struct virtio_blk_discard_write_zeroes {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};

#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX     29

/* virtio-blk feature bits (5.2.3) */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* The device configuration layout (5.2.4), little-endian; fields are valid only with their feature. */
struct virtio_blk_config {
  uint64_t capacity; /* in 512-byte sectors */
  uint32_t size_max;
  uint32_t seg_max;
  struct {
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
  } geometry;
  uint32_t blk_size;
  struct {
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
  } topology;
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_blk_config) == 60, "virtio-blk config space is 60 bytes");

/* Per-queue counters the handler keeps (the transport adds its own: kicks, calls, wake-ups). */
struct virtio_blk_stats {
  uint64_t requests, reads, writes, flushes, discards, write_zeroes, get_id, errors, unsupported;
  uint64_t bytes_read, bytes_written;
};

struct virtio_blk_handler {
  struct stor_backend *be; /* capacity comes from its properties */
  uint32_t block_size;     /* logical block size offered in the config space */
  bool readonly;
  char serial[VIRTIO_BLK_ID_BYTES]; /* GET_ID; not NUL-terminated when 20 bytes long */
  uint32_t max_discard_sectors, max_write_zeroes_sectors;
  struct virtio_blk_stats *stats; /* may be NULL */
  /* Why a request failed (the driver's fault or the backend's); the transport rate-limits. */
  void (*log)(void *ctx, const char *msg);
  void *log_ctx;
};

struct virtio_blk_req;
/* Called exactly once per request: status is VIRTIO_BLK_S_*, used_len what the used ring reports
 * (bytes written into device-writable buffers, status byte included; 0 if there is no status byte).
 * The status byte itself is the transport's to write (virtio_blk_req_status()), so that a transport
 * that lost its memory (SIGBUS) can skip it. */
typedef void (*virtio_blk_done_fn)(struct virtio_blk_req *vr, uint8_t status, uint32_t used_len);

struct virtio_blk_req {
  struct stor_req req; /* first: the backend's completion finds the request */
  const struct virtio_blk_handler *h;
  virtio_blk_done_fn done;
  uint16_t head;   /* the chain's head descriptor (set by the transport; for logs) */
  uint8_t *status; /* the status byte in driver memory, NULL when the chain has none */
  uint32_t used_len;
};

enum virtio_blk_process_result {
  VIRTIO_BLK_REQ_DONE = 0,   /* finished; done() has been called */
  VIRTIO_BLK_REQ_SUBMIT = 1, /* vr->req is ready: the caller submits it (and handles BUSY) */
};

/* Handles one chain: iov[0..n_out) device-readable, iov[n_out..n_out+n_in) device-writable, with
 * out_len / in_len their byte totals. The iovecs are adjusted in place (header and status byte
 * trimmed) and must stay valid until done(). */
enum virtio_blk_process_result virtio_blk_process(const struct virtio_blk_handler *h, struct virtio_blk_req *vr,
                                                  virtio_blk_done_fn done, struct iovec *iov, int n_out, int n_in,
                                                  uint64_t out_len, uint64_t in_len);

static inline void virtio_blk_req_status(struct virtio_blk_req *vr, uint8_t status) {
  if (vr->status) *vr->status = status;
}
#endif
