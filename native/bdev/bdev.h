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
  int32_t result;   /* set by the backend: 0, or -errno */
  uint64_t offset;  /* bytes; the frontend has checked offset + length <= capacity */
  uint64_t length;  /* bytes */
  struct iovec *iov;/* READ/WRITE data; stays valid until complete() */
  int niov;
  /* Called exactly once by the backend, from the queue's own thread, inline in submit() or
   * later from reap(). */
  void (*complete)(struct stor_req *req);
};

struct stor_backend;
struct stor_bqueue;

struct stor_backend_ops {
  const char *name;
  /* One per frontend queue thread; depth bounds the requests it will have in flight. */
  int (*queue_open)(struct stor_backend *be, unsigned depth, struct stor_bqueue **out);
  void (*queue_close)(struct stor_bqueue *q);
  void (*submit)(struct stor_bqueue *q, struct stor_req *req);
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

struct stor_backend {
  const struct stor_backend_ops *ops;
  uint64_t capacity;        /* bytes, a multiple of 512 */
  bool readonly;
  bool can_discard;
  bool can_write_zeroes;
  int refs;                 /* devices using it; guarded by the JS thread (only it opens/closes) */
  char desc[320];           /* human-readable spec, for logs */
};

static inline void stor_req_done(struct stor_req *r, int32_t result) { r->result = result; r->complete(r); }

/* Copies len bytes between a flat buffer and an iovec list, starting skip bytes into the list. */
size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len);
size_t buf_to_iov(const struct iovec *iov, int n, size_t skip, const void *buf, size_t len);
void iov_memset(const struct iovec *iov, int n, int c);

struct stor_backend_config {
  char kind[16];          /* null | mem | file */
  uint64_t size;          /* null, mem: capacity; file: create size (0 = open existing) */
  char path[4096];        /* file */
  bool create;            /* file: create (or extend) to size */
  bool direct;            /* file: O_DIRECT */
  bool readonly;
};

/* Returns 0 or -errno with a reason in err. */
int stor_backend_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen);
void stor_backend_put(struct stor_backend *be);
int stor_null_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen);
int stor_mem_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen);
int stor_file_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen);

/* Shared by backends that complete every request inline in submit() (null, mem). */
struct stor_sync_bqueue { struct stor_backend *be; };
int stor_sync_queue_open(struct stor_backend *be, unsigned depth, struct stor_bqueue **out);
void stor_sync_queue_close(struct stor_bqueue *q);
void stor_sync_commit(struct stor_bqueue *q);
int stor_sync_reap(struct stor_bqueue *q, bool wait);
int stor_sync_event_fd(struct stor_bqueue *q);
unsigned stor_sync_inflight(struct stor_bqueue *q);
int stor_null_flush(struct stor_backend *be);
void stor_plain_destroy(struct stor_backend *be);

/* ---- N-API glue (bdev.c) ---- */
#include <node_api.h>
/* N-API: backendOpen(config) -> external, backendInfo(b), backendFlush(b). */
void backend_init(napi_env env, napi_value exports);
/* Extracts the backend from the external made by backendOpen; NULL (and a pending exception) if not one. */
struct stor_backend *backend_from_js(napi_env env, napi_value v);
/* Wraps a backend (taking over one reference) in the handle JS passes around. */
napi_value backend_wrap(napi_env env, struct stor_backend *be);

#endif
