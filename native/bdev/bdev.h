/* Backends (bdevs) and the one request model. Exports (vhost-user-blk queues, later ublk and VDUSE)
 * and engines (client, copy, bench) turn their own descriptors into a stor_req; backends (null, mem,
 * file, vhost-user as a client) serve stor_req and nothing else, through one small ops table. */
#ifndef STOR_BDEV_H
#define STOR_BDEV_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

enum stor_op {
  STOR_OP_READ = 0,
  STOR_OP_WRITE = 1,
  STOR_OP_FLUSH = 2,
  STOR_OP_DISCARD = 3,
  STOR_OP_WRITE_ZEROES = 4,
};

#define STOR_REQ_F_UNMAP 1u /* write-zeroes may deallocate */

struct stor_req {
  uint8_t op;
  uint8_t flags;
  int32_t result;    /* set by the backend: 0, or -errno */
  uint64_t offset;   /* bytes; the frontend has checked offset + length <= capacity */
  uint64_t length;   /* bytes */
  struct iovec *iov; /* READ/WRITE data; stays valid until complete() */
  int niov;
  /* Called exactly once by the backend, from the queue's own thread, inline in submit() or
   * later from reap(). */
  void (*complete)(struct stor_req *req);
};

struct stor_backend;
struct stor_bqueue;

/* What submit() did with a request (fio's QUEUED / BUSY idea). QUEUED: the backend owns the request
 * until it calls complete() — inline, or later from reap(). BUSY: the backend's queue is full and the
 * request was NOT taken (complete() is not called); the caller keeps it, commits and reaps, and
 * submits it again later, in order. A full queue is back-pressure, never an I/O error. */
enum stor_submit { STOR_SUBMIT_QUEUED = 0, STOR_SUBMIT_BUSY = 1 };

/* The ops table's layout version: a backend built against another layout is refused at open. */
#define STOR_BDEV_OPS_V1 1u

struct stor_backend_ops {
  unsigned version; /* STOR_BDEV_OPS_V1 */
  const char *name;
  /* One per frontend queue thread; depth bounds the requests it will have in flight. */
  int (*queue_open)(struct stor_backend *be, unsigned depth, struct stor_bqueue **out);
  void (*queue_close)(struct stor_bqueue *q);
  enum stor_submit (*submit)(struct stor_bqueue *q, struct stor_req *req);
  /* Hands what submit() queued to the kernel (io_uring_submit); no-op for synchronous backends. */
  void (*commit)(struct stor_bqueue *q);
  /* Completes finished requests; with wait, blocks until at least one does (if any in flight). */
  int (*reap)(struct stor_bqueue *q, bool wait);
  /* Readable when reap() has work; -1 for backends that complete inline. */
  int (*event_fd)(struct stor_bqueue *q);
  unsigned (*inflight)(struct stor_bqueue *q);
  /* Optional: makes event_fd fire on the next completion (for callers that wait on event_fd
   * themselves, e.g. the Node event loop); returns completions reaped while arming. NULL: always armed. */
  int (*arm)(struct stor_bqueue *q);
  /* Whole-backend flush (shutdown, and FLUSH requests for synchronous backends). */
  int (*flush)(struct stor_backend *be);
  void (*destroy)(struct stor_backend *be);
};

/* Everything a user of a backend needs to know about it, set by the backend when it opens (libblkio's
 * property names in the comments). TypeScript reads these; it never invents them. */
struct stor_bdev_props {
  uint64_t capacity;             /* capacity: bytes, a multiple of 512 */
  uint32_t block_size;           /* request-alignment: offsets and lengths are multiples of it */
  uint32_t buf_alignment;        /* buf-alignment: memory alignment of data buffers */
  uint32_t optimal_io_alignment; /* optimal-io-alignment */
  uint32_t optimal_io_size;      /* optimal-io-size (0: none) */
  uint64_t max_transfer;         /* max-transfer: bytes per request (0: no limit) */
  uint32_t max_segments;         /* max-segments: iovecs per request */
  uint32_t max_queues;           /* max-queues */
  bool readonly;                 /* read-only */
  bool can_discard;              /* can-discard */
  bool can_write_zeroes;         /* can-write-zeroes */
  uint32_t discard_alignment;    /* discard-alignment */
  uint64_t max_discard_len;      /* max-discard-len (0: no limit) */
  uint64_t max_write_zeroes_len; /* max-write-zeroes-len (0: no limit) */
  uint32_t max_mem_regions;      /* max-mem-regions: buffers a user may register for zero-copy I/O (0: none needed) */
  bool needs_mem_regions;        /* needs-mem-regions: data must live in registered memory to avoid a copy */
  uint64_t virtio_features;      /* a virtio device behind the backend (vhost-user): the negotiated features; else 0 */
  bool remote;                   /* remote: a completion takes a network round trip (rbd); see stor_qloop_spin_budget */
};

struct stor_backend {
  const struct stor_backend_ops *ops;
  struct stor_bdev_props props;
  int refs;       /* devices using it; guarded by the JS thread (only it opens/closes) */
  char desc[320]; /* human-readable spec, for logs */
};

static inline void stor_req_done(struct stor_req *r, int32_t result) {
  r->result = result;
  r->complete(r);
}

/* Copies len bytes between a flat buffer and an iovec list, starting skip bytes into the list. */
size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len);
size_t buf_to_iov(const struct iovec *iov, int n, size_t skip, const void *buf, size_t len);
void iov_memset(const struct iovec *iov, int n, int c);

/* ---- the registry ------------------------------------------------------------------------------ */

/* One key=value property of a backend spec ("file:/img,direct=on" -> path=/img, direct=on). */
struct stor_kv {
  const char *key;
  const char *value;
};

struct stor_bdev_prop_help {
  const char *name;
  const char *help;
};

/* A backend driver: its name, the ops layout it was built for, its properties with one line of help
 * each, and open(), which parses its own properties (unknown keys and bad values are -EINVAL with
 * the property named in err). open may be NULL for a driver opened another way (vhost-user: the
 * client library's handshake creates it). */
struct stor_bdev_driver {
  const char *name;
  unsigned ops_version; /* STOR_BDEV_OPS_V1 */
  const char *help;
  const struct stor_bdev_prop_help *props; /* terminated by {NULL, NULL} */
  int (*open)(const struct stor_kv *props, size_t n, struct stor_backend **out, char *err, size_t errlen);
};

extern const struct stor_bdev_driver stor_null_driver, stor_mem_driver, stor_file_driver, stor_vhost_user_driver;
extern const struct stor_bdev_driver stor_rbd_driver; /* rbd.c: librbd loaded with dlopen at open */

/* ---- fault injection (fault.c): properties every driver accepts, a filter in front of the backend ---- */
extern const struct stor_bdev_prop_help stor_fault_props[]; /* delay-us, error-rate, stall-file, ... */
/* Whether key is one of the filter's properties (stor_bdev_open takes them out before the driver sees them). */
bool stor_fault_key(const char *key);
/* Wraps inner (taking over its reference) in the filter configured by kv; -EINVAL with a reason in err. */
int stor_fault_wrap(struct stor_backend *inner, const struct stor_kv *kv, size_t n, struct stor_backend **out,
                    char *err, size_t errlen);

/* The filter stacked on a backend that stays open and in use (the daemon's delay and error bdevs): takes its
 * own reference on inner, so the wrapper's destroy leaves inner to its other users. kv: the same
 * properties (may be empty); the live settings below start empty and change while queues run. */
int stor_fault_wrap_live(struct stor_backend *inner, const struct stor_kv *kv, size_t n, struct stor_backend **out,
                         char *err, size_t errlen);
enum stor_fault_error { STOR_FAULT_NONE = 0, STOR_FAULT_FAIL = 1, STOR_FAULT_PENDING = 2 };
bool stor_fault_is_live(struct stor_backend *be);
/* Latency added to every request of op (p99: the one request in 100 that gets the tail latency). */
void stor_fault_set_latency(struct stor_backend *be, enum stor_op op, bool p99, uint64_t ns);
/* The next num requests of op fail with EIO (FAIL) or are held (PENDING), while at least queue_depth
 * requests are in flight below; num 0 clears. */
void stor_fault_set_error(struct stor_backend *be, enum stor_op op, enum stor_fault_error kind, uint32_t num,
                          uint64_t queue_depth);
/* Releases every held request to the inner backend and zeroes the pending counts (SPDK's resume_pending). */
void stor_fault_resume(struct stor_backend *be);

/* Checks every driver's ops version; returns 0, or -EPROTO with the culprit named in err. */
int stor_bdev_registry_check(char *err, size_t errlen);
const struct stor_bdev_driver *const *stor_bdev_drivers(size_t *n);
/* Opens a backend by driver name. Returns 0 or -errno with a reason in err. */
int stor_bdev_open(const char *driver, const struct stor_kv *props, size_t n, struct stor_backend **out, char *err,
                   size_t errlen);
void stor_backend_put(struct stor_backend *be);
/* Fills the properties every backend starts from (512-byte blocks, no limits, 64 queues). */
void stor_bdev_props_default(struct stor_bdev_props *p, uint64_t capacity, bool readonly);

/* Property parsing for drivers: each returns 0, or -EINVAL with "driver: key=value: why" in err. */
int stor_kv_size(const char *driver, const struct stor_kv *kv, uint64_t *out, char *err, size_t errlen);
int stor_kv_bool(const char *driver, const struct stor_kv *kv, bool *out, char *err, size_t errlen);
int stor_kv_u32(const char *driver, const struct stor_kv *kv, uint32_t *out, char *err, size_t errlen);
/* The -EINVAL for a key the driver does not know, listing those it does. */
int stor_kv_unknown(const struct stor_bdev_driver *d, const struct stor_kv *kv, char *err, size_t errlen);

/* Shared by backends that complete every request inline in submit() (null, mem). */
struct stor_sync_bqueue {
  struct stor_backend *be;
};
int stor_sync_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out);
void stor_sync_queue_close(struct stor_bqueue *q);
void stor_sync_commit(struct stor_bqueue *q);
int stor_sync_reap(struct stor_bqueue *q, bool wait);
int stor_sync_event_fd(struct stor_bqueue *q);
unsigned stor_sync_inflight(struct stor_bqueue *q);
int stor_sync_flush(struct stor_backend *be);

/* ---- N-API glue (bdev.c) ---- */
#include <node_api.h>
/* N-API: bdevOpen(driver, props) -> handle, bdevProperties(h), bdevDrivers(), backendInfo(h), backendFlush(h). */
void backend_init(napi_env env, napi_value exports);
/* Extracts the backend from the handle made by bdevOpen (or a backend-making call); NULL (and a pending exception) if
 * not one. */
struct stor_backend *backend_from_js(napi_env env, napi_value v);
/* JS property objects → key=value pairs, for bdevOpen and bdevWrap */
#define KV_MAX 32
struct kv_strings {
  char *s[2 * KV_MAX];
  unsigned count;
};
int kv_from_js(napi_env env, napi_value obj, const char *who, struct stor_kv *kv, uint32_t max,
               struct kv_strings *owned);
void kv_strings_free(struct kv_strings *owned);
/* Wraps a backend (taking over one reference) in the handle JS passes around. */
napi_value backend_wrap(napi_env env, struct stor_backend *be);
/* N-API of fault.c's live filter: bdevWrap, faultSetLatency, faultInjectError, faultResume, faultState. */
void fault_napi_init(napi_env env, napi_value exports);

#endif
