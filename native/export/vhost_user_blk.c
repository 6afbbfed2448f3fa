/* The vhost-user-blk export's data plane: the guest memory table, vring setup, inflight buffers, and
 * one thread per virtqueue (export/virtq_thread.c, serving the ring through virtio/virtq_serve.c, which
 * it shares with the VDUSE export), notifying the driver through the ring's call eventfd. TypeScript
 * drives the vhost-user protocol and calls in here to set up memory and rings; nothing here calls
 * JavaScript per request. */
#include "bdev/bdev.h"
#include "export/js_events.h"
#include "export/queue_loop.h"
#include "export/virtq_thread.h"
#include "sys/guard.h"
#include "sys/napi_util.h"
#include "virtio/inflight.h"
#include "virtio/virtio_blk.h"
#include "virtio/vring.h"
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_QUEUES 64

struct blk_device;

struct blk_queue {
  struct blk_device *dev;
  int index;
  /* configuration, set from the JS thread while the queue is stopped */
  uint16_t num;
  uint16_t base;
  uint64_t desc_uva, avail_uva, used_uva;
  bool addr_set;
  int call_fd, err_fd; /* the kick fd is t.kick_fd */
  struct virtq_thread t;
  uint64_t calls;
};

struct blk_device {
  struct stor_backend *be;
  struct mem_table mem;
  struct blk_queue q[MAX_QUEUES];
  int nqueues;
  uint64_t features;
  struct js_events events; /* (kind, queue, message) to JS: errors and lifecycle only */
  bool destroyed;
  /* the inflight buffer (GET/SET_INFLIGHT_FD): one region per queue, inflight_qs entries each */
  int inflight_fd;
  void *inflight_map;
  size_t inflight_len;
  uint16_t inflight_nq, inflight_qs;
};

/* ---- the queue thread's callbacks (virtq_thread.h) ------------------------------------------ */

static void queue_event(void *ctx, const char *kind, const char *msg) {
  struct blk_queue *q = ctx;
  js_events_post(&q->dev->events, kind, q->index, "%s", msg);
}

static void queue_notify(void *ctx) {
  struct blk_queue *q = ctx;
  uint64_t one = 1;
  if (q->call_fd >= 0 && write(q->call_fd, &one, 8) == 8) q->calls++;
}

/* A broken ring: JS hears of it (and drops the front-end); the front-end through the err eventfd. */
static void queue_ring_failed(void *ctx) {
  struct blk_queue *q = ctx;
  uint64_t one = 1;
  if (q->err_fd >= 0 && write(q->err_fd, &one, 8) < 0) { /* best effort */
  }
}

/* Attaches the queue's inflight region, if the front-end gave one, and recovers what a previous
 * back-end left in flight (resubmitted first). Runs under the SIGBUS guard: the region is the
 * front-end's memory. A corrupt region refuses the ring (the front-end is dropped). */
static int queue_attach(void *ctx, char *err, size_t errlen) {
  struct blk_queue *q = ctx;
  struct blk_device *d = q->dev;
  struct inflight_region *r = NULL;
  if (d->inflight_map && q->index < d->inflight_nq) {
    if (d->inflight_qs == q->num)
      r = (struct inflight_region *)((char *)d->inflight_map + (size_t)q->index * inflight_queue_bytes(d->inflight_qs));
    else
      js_events_post(&d->events, "warn", q->index,
                     "queue %d: the inflight buffer is for rings of %u entries, this ring has %u: not tracked",
                     q->index, d->inflight_qs, q->num);
  }
  char why[160];
  int n = virtq_serve_recover(&q->t.vs, r, why, sizeof why);
  if (n < 0) {
    snprintf(err, errlen, "queue %d: %s", q->index, why);
    return -EINVAL;
  }
  if (n) {
    virtq_serve_resume(&q->t.vs, (unsigned)n);
    js_events_post(&d->events, "info", q->index, "queue %d: resubmitting %d requests a previous server left in flight",
                   q->index, n);
  }
  return 0;
}

static const struct virtq_thread_ops queue_ops = {
    .event = queue_event,
    .notify = queue_notify,
    .attach = queue_attach,
    .ring_failed = queue_ring_failed,
    .thread_name = "stor-vq",
    .memory_lost = "guest memory became inaccessible (SIGBUS): the front-end shrank a memory region",
};

/* ---- lifecycle (JS thread) -------------------------------------------------------------- */

/* Stops the thread after in-flight requests have completed; base is then GET_VRING_BASE's answer. */
static void queue_stop(struct blk_queue *q) {
  if (virtq_thread_stop(&q->t)) q->base = q->t.vs.vr.last_avail_idx;
}

static void inflight_unmap(struct blk_device *d) {
  for (int i = 0; i < d->nqueues; i++) d->q[i].t.vs.infl.r = NULL;
  if (d->inflight_map) munmap(d->inflight_map, d->inflight_len);
  if (d->inflight_fd >= 0) close(d->inflight_fd);
  d->inflight_map = NULL;
  d->inflight_len = 0;
  d->inflight_fd = -1;
  d->inflight_nq = d->inflight_qs = 0;
}

static int queue_start(struct blk_queue *q, char *err, size_t errlen) {
  if (q->t.running) return 0;
  if (!q->addr_set || !q->num) {
    snprintf(err, errlen, "queue %d: ring size or addresses not set", q->index);
    return -EINVAL;
  }
  bool event_idx = q->dev->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
  return virtq_thread_start(&q->t, q->num, q->desc_uva, q->avail_uva, q->used_uva, q->base, event_idx, err, errlen);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void device_reset(struct blk_device *d) {
  for (int i = 0; i < d->nqueues; i++) queue_stop(&d->q[i]);
  for (int i = 0; i < d->nqueues; i++) {
    struct blk_queue *q = &d->q[i];
    close_fd(&q->t.kick_fd);
    close_fd(&q->call_fd);
    close_fd(&q->err_fd);
    q->addr_set = false;
    q->num = 0;
    q->base = 0;
  }
  mem_clear(&d->mem);
  inflight_unmap(d);
  d->features = 0;
}

/* env: from an explicit destroy (the JS thread, outside a finalizer); NULL from a finalizer. */
static void device_destroy(napi_env env, struct blk_device *d) {
  if (d->destroyed) return;
  d->destroyed = true;
  device_reset(d);
  for (int i = 0; i < d->nqueues; i++) virtq_thread_free(&d->q[i].t);
  /* release, not abort: events already queued (the failures of the last requests, drained just above)
   * are still delivered (delivering needs nothing of the device), and the channel holds the event
   * loop until they are, so a process that stops right after a failure still logs it */
  js_events_close(&d->events, env);
  stor_backend_put(d->be);
  d->be = NULL;
}

static void device_finalize(napi_env env, void *data, void *hint) {
  struct blk_device *d = data;
  device_destroy(NULL, d);
  free(d);
}

static struct blk_device *dev_arg(napi_env env, napi_value v) {
  struct blk_device *d = handle_arg(env, v, STOR_HANDLE_BLK_DEVICE, "vhost-user-blk device");
  if (!d) return NULL;
  if (d->destroyed) {
    throw_msg(env, "device is closed");
    return NULL;
  }
  return d;
}

static struct blk_queue *queue_arg(napi_env env, struct blk_device *d, napi_value v) {
  uint32_t i;
  if (!arg_u32(env, v, &i) || i >= (uint32_t)d->nqueues) {
    throw_msg(env, "queue index out of range (device has %d)", d->nqueues);
    return NULL;
  }
  return &d->q[i];
}

/* Memory and ring changes happen with every running queue paused (joined), then restarted. */
static void pause_all(struct blk_device *d, bool *was_running) {
  for (int i = 0; i < d->nqueues; i++) {
    was_running[i] = d->q[i].t.running;
    queue_stop(&d->q[i]);
  }
}
static void resume_all(struct blk_device *d, const bool *was_running) {
  for (int i = 0; i < d->nqueues; i++) {
    char e[256];
    if (was_running[i] && queue_start(&d->q[i], e, sizeof e) < 0)
      js_events_post(&d->events, "broken", i, "queue %d cannot restart: %s", i, e);
  }
}

/* ---- N-API ---------------------------------------------------------------------------------- */

/* blkDeviceCreate(backend, {queues, blockSize, readonly, serial, mode, spinUs (pollUs: its old name),
 * maxDiscardSectors, maxWriteZeroesSectors}, onEvent(kind, queue, msg)) -> handle */
static napi_value js_create(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  uint32_t queues, block_size, poll_us, spin_us, mds, mwzs;
  bool readonly;
  char serial[64], mode[16];
  if (!prop_u32(env, argv[1], "queues", &queues, 1) || !prop_u32(env, argv[1], "blockSize", &block_size, 512) ||
      !prop_bool(env, argv[1], "readonly", &readonly, false) ||
      !prop_str(env, argv[1], "serial", serial, sizeof serial, "") ||
      !prop_str(env, argv[1], "mode", mode, sizeof mode, "adaptive") ||
      !prop_u32(env, argv[1], "pollUs", &poll_us, STOR_SPIN_US_DEFAULT) ||
      !prop_u32(env, argv[1], "spinUs", &spin_us, poll_us) ||
      !prop_u32(env, argv[1], "maxDiscardSectors", &mds, 1u << 22) ||
      !prop_u32(env, argv[1], "maxWriteZeroesSectors", &mwzs, 1u << 22))
    return NULL;
  if (queues < 1 || queues > MAX_QUEUES) return throw_msg(env, "queues must be 1..%d", MAX_QUEUES);
  struct blk_device *d = calloc(1, sizeof *d);
  if (!d) return throw_errno(env, "blkDeviceCreate", ENOMEM);
  d->be = be;
  be->refs++;
  d->nqueues = (int)queues;
  int m = stor_completion_mode_parse(mode);
  d->inflight_fd = -1;
  struct virtio_blk_handler handler = {
      .be = be,
      .block_size = block_size,
      .readonly = readonly || be->props.readonly,
      .max_discard_sectors = mds,
      .max_write_zeroes_sectors = mwzs,
  };
  memcpy(handler.serial, serial, strnlen(serial, VIRTIO_BLK_ID_BYTES));
  for (int i = 0; i < d->nqueues; i++) {
    struct blk_queue *q = &d->q[i];
    q->dev = d;
    q->index = i;
    q->call_fd = q->err_fd = -1;
    /* one handler per queue: the same device settings, this queue's counters and log */
    virtq_thread_init(&q->t, i, &handler, &d->mem, &queue_ops, q, m < 0 ? STOR_MODE_ADAPTIVE : m, spin_us);
  }
  /* events must not keep the process alive on their own; the server's socket does that */
  if (js_events_open(&d->events, env, argv[2], "stor-vhost-blk-events") < 0) {
    device_destroy(NULL, d);
    free(d);
    return throw_msg(env, "cannot create the event channel");
  }
  return make_handle(env, STOR_HANDLE_BLK_DEVICE, d, device_finalize);
}

static napi_value js_destroy(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  device_destroy(env, d);
  return make_undefined(env);
}

/* blkDeviceReset(dev): front-end gone or RESET_OWNER: stop queues, unmap memory, close fds. */
static napi_value js_reset(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  device_reset(d);
  return make_undefined(env);
}

static napi_value js_set_features(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  uint64_t f;
  if (!d) return NULL;
  if (!arg_u64(env, argv[1], &f)) return throw_msg(env, "features must be a BigInt");
  bool was[MAX_QUEUES];
  pause_all(d, was);
  d->features = f;
  resume_all(d, was);
  return make_undefined(env);
}

static bool region_arg(napi_env env, napi_value o, uint64_t *gpa, uint64_t *size, uint64_t *uva, uint64_t *off,
                       int32_t *fd) {
  return prop_u64(env, o, "guestAddr", gpa, 0) && prop_u64(env, o, "size", size, 0) &&
         prop_u64(env, o, "userAddr", uva, 0) && prop_u64(env, o, "mmapOffset", off, 0) &&
         prop_i32(env, o, "fd", fd, -1);
}

/* blkDeviceSetMemTable(dev, regions[]) replaces the table (SET_MEM_TABLE). Always takes ownership
 * of every region fd (closing those it could not use); on failure the error says why. */
static napi_value js_set_mem_table(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  uint32_t n;
  if (napi_get_array_length(env, argv[1], &n) != napi_ok || n > MEM_MAX_REGIONS)
    return throw_msg(env, "regions: an array of at most %d", MEM_MAX_REGIONS);
  char err[256] = "";
  int r = 0;
  bool was[MAX_QUEUES];
  pause_all(d, was);
  mem_clear(&d->mem);
  for (uint32_t i = 0; i < n; i++) {
    napi_value o;
    uint64_t gpa = 0, size = 0, uva = 0, off = 0;
    int32_t fd = -1;
    napi_get_element(env, argv[1], i, &o);
    bool ok = region_arg(env, o, &gpa, &size, &uva, &off, &fd);
    if (!ok) {
      bool pending;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value e;
        napi_get_and_clear_last_exception(env, &e);
      }
    }
    if (r == 0 && !ok) {
      r = -EINVAL;
      snprintf(err, sizeof err, "memory region %u is malformed", i);
      if (fd >= 0) close(fd);
    } else if (r == 0) {
      r = mem_add_region(&d->mem, gpa, size, uva, off, fd, err, sizeof err);
      if (r < 0 && fd >= 0) close(fd);
    } else if (fd >= 0) {
      close(fd); /* after a failure: the fds of the remaining regions are ours to close */
    }
  }
  resume_all(d, was);
  if (r < 0) return throw_msg(env, "%s", err);
  return make_undefined(env);
}

/* blkDeviceAddMemRegion(dev, region) (ADD_MEM_REG); always takes ownership of region.fd. */
static napi_value js_add_mem_region(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  uint64_t gpa, size, uva, off;
  int32_t fd;
  if (!region_arg(env, argv[1], &gpa, &size, &uva, &off, &fd)) return NULL;
  char err[256] = "";
  int r = 0;
  bool was[MAX_QUEUES];
  pause_all(d, was);
  r = mem_add_region(&d->mem, gpa, size, uva, off, fd, err, sizeof err);
  if (r < 0 && fd >= 0) close(fd);
  resume_all(d, was);
  if (r < 0) return throw_msg(env, "%s", err);
  return make_undefined(env);
}

static napi_value js_remove_mem_region(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  uint64_t gpa, size, uva, off;
  int32_t fd;
  if (!region_arg(env, argv[1], &gpa, &size, &uva, &off, &fd)) return NULL;
  int r = 0;
  bool was[MAX_QUEUES];
  pause_all(d, was);
  r = mem_remove_region(&d->mem, gpa, size);
  resume_all(d, was);
  return make_bool(env, r == 0);
}

/* blkDeviceSetVring(dev, index, {num?, base?, desc?, avail?, used?}) while the queue is stopped. */
static napi_value js_set_vring(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  struct blk_queue *q = queue_arg(env, d, argv[1]);
  if (!q) return NULL;
  napi_value v;
  bool present;
  uint32_t u;
  if (!get_prop(env, argv[2], "num", &v, &present)) return NULL;
  if (present) {
    if (!arg_u32(env, v, &u) || u == 0 || u > 32768 || (u & (u - 1)))
      return throw_msg(env, "vring num %u is not a power of 2 up to 32768", u);
    q->num = (uint16_t)u;
  }
  if (!get_prop(env, argv[2], "base", &v, &present)) return NULL;
  if (present) {
    if (!arg_u32(env, v, &u) || u > 65535) return throw_msg(env, "vring base must be 0..65535");
    q->base = (uint16_t)u;
  }
  if (!get_prop(env, argv[2], "desc", &v, &present)) return NULL;
  if (present) {
    uint64_t desc, avail, used;
    if (!prop_u64(env, argv[2], "desc", &desc, 0) || !prop_u64(env, argv[2], "avail", &avail, 0) ||
        !prop_u64(env, argv[2], "used", &used, 0))
      return NULL;
    /* Refused now, as libvhost-user does, not acknowledged and found broken when the ring starts:
     * the rings must lie in the current memory table (for the ring size when known, else one entry). */
    struct vring_desc *dp;
    struct vring_avail *ap;
    struct vring_used *up;
    char err[256];
    if (vring_translate(&d->mem, q->num, desc, avail, used, &dp, &ap, &up, err, sizeof err) < 0) {
      q->addr_set = false;
      return throw_msg(env, "%s", err);
    }
    q->desc_uva = desc;
    q->avail_uva = avail;
    q->used_uva = used;
    q->addr_set = true;
  }
  return make_undefined(env);
}

/* blkDeviceSetVringFd(dev, index, "kick"|"call"|"err", fd|-1): takes ownership of fd. Pauses the
 * queue if it is running (a call fd can change while the guest runs). */
static napi_value js_set_vring_fd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  struct blk_queue *q = queue_arg(env, d, argv[1]);
  if (!q) return NULL;
  char which[8];
  int32_t fd;
  if (!arg_str(env, argv[2], which, sizeof which) || !arg_i32(env, argv[3], &fd))
    return throw_msg(env, "setVringFd(dev, index, kind, fd)");
  int *slot = !strcmp(which, "kick")   ? &q->t.kick_fd
              : !strcmp(which, "call") ? &q->call_fd
              : !strcmp(which, "err")  ? &q->err_fd
                                       : NULL;
  if (!slot) return throw_msg(env, "fd kind must be kick, call or err");
  if (fd >= 0) {
    /* Only eventfds: a pipe nobody drains, a file that is always readable or an eventfd set
     * blocking could stall or spin a queue thread. Non-blocking so a full counter never blocks. */
    char link[64] = "", path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0 || strncmp(link, "anon_inode:[eventfd]", (size_t)n) || (size_t)n != strlen("anon_inode:[eventfd]")) {
      close(fd);
      return throw_msg(env, "%s fd is not an eventfd", which);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  }
  bool was = q->t.running;
  queue_stop(q);
  close_fd(slot);
  *slot = fd;
  char err[256];
  if (was && queue_start(q, err, sizeof err) < 0) return throw_msg(env, "%s", err);
  return make_undefined(env);
}

static napi_value js_start_queue(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  struct blk_queue *q = queue_arg(env, d, argv[1]);
  if (!q) return NULL;
  char err[256];
  if (queue_start(q, err, sizeof err) < 0) return throw_msg(env, "%s", err);
  return make_undefined(env);
}

/* blkDeviceStopQueue(dev, index) -> the next avail index (GET_VRING_BASE), after in-flight
 * requests have completed. */
static napi_value js_stop_queue(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  struct blk_queue *q = queue_arg(env, d, argv[1]);
  if (!q) return NULL;
  queue_stop(q);
  return make_u32(env, q->base);
}

/* Maps an inflight buffer as the device's (after checking it is large enough), with the queues paused. */
static int inflight_install(struct blk_device *d, int fd, uint64_t size, uint64_t offset, uint32_t nq, uint32_t qs,
                            char *err, size_t errlen) {
  if (nq < 1 || nq > MAX_QUEUES || qs < 1 || qs > 32768 || (qs & (qs - 1))) {
    snprintf(err, errlen,
             "inflight buffer for %u queues of %u entries: expected 1..%d queues, a power of 2 up to 32768", nq, qs,
             MAX_QUEUES);
    return -EINVAL;
  }
  size_t need = inflight_queue_bytes((uint16_t)qs) * nq;
  struct stat st;
  if (size < need || offset % 4096 || fstat(fd, &st) < 0 || (uint64_t)st.st_size < offset + size ||
      offset + size < offset) {
    snprintf(err, errlen, "inflight buffer of %llu bytes at offset %llu: %zu bytes needed, inside the file",
             (unsigned long long)size, (unsigned long long)offset, need);
    return -EINVAL;
  }
  void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
  if (map == MAP_FAILED) {
    snprintf(err, errlen, "inflight buffer: mmap: %s", strerror(errno));
    return -errno;
  }
  bool was[MAX_QUEUES];
  pause_all(d, was);
  inflight_unmap(d);
  d->inflight_fd = fd;
  d->inflight_map = map;
  d->inflight_len = size;
  d->inflight_nq = (uint16_t)nq;
  d->inflight_qs = (uint16_t)qs;
  /* libvhost-user's rule: the front-end's queue size is every region's descriptor count (under the
   * SIGBUS guard: a front-end may truncate a buffer it handed in) */
  sigjmp_buf fault;
  if (sigsetjmp(fault, 1)) {
    stor_fault_jmp = NULL;
    d->inflight_fd = -1; /* the caller closes it */
    inflight_unmap(d);
    resume_all(d, was);
    snprintf(err, errlen, "inflight buffer became inaccessible (SIGBUS)");
    return -EFAULT;
  }
  stor_fault_jmp = &fault;
  for (volatile uint32_t i = 0; i < nq; i++)
    ((struct inflight_region *)((char *)map + (size_t)i * inflight_queue_bytes((uint16_t)qs)))->desc_num = (uint16_t)qs;
  stor_fault_jmp = NULL;
  resume_all(d, was);
  return 0;
}

/* blkDeviceGetInflight(dev, numQueues, queueSize) -> {fd, mmapSize, mmapOffset} (GET_INFLIGHT_FD): a new,
 * zeroed buffer, which becomes the device's; fd stays the device's (send it, do not close it). */
static napi_value js_get_inflight(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  uint32_t nq, qs;
  if (!arg_u32(env, argv[1], &nq) || !arg_u32(env, argv[2], &qs))
    return throw_msg(env, "getInflight(dev, numQueues, queueSize)");
  if (nq < 1 || nq > MAX_QUEUES || qs < 1 || qs > 32768 || (qs & (qs - 1)))
    return throw_msg(env,
                     "inflight buffer for %u queues of %u entries: expected 1..%d queues, a power of 2 up to 32768", nq,
                     qs, MAX_QUEUES);
  size_t size = inflight_queue_bytes((uint16_t)qs) * nq;
  int fd = memfd_create("stor-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  if (ftruncate(fd, (off_t)size) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "ftruncate", e);
  }
  /* the front-end keeps this buffer across our restarts: it must not be able to shrink it under us */
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  char err[256];
  if (inflight_install(d, fd, size, 0, nq, qs, err, sizeof err) < 0) {
    close(fd);
    return throw_msg(env, "%s", err);
  }
  napi_value o;
  napi_create_object(env, &o);
  set_prop(env, o, "fd", make_i32(env, fd));
  set_prop(env, o, "mmapSize", make_f64(env, (double)size));
  set_prop(env, o, "mmapOffset", make_f64(env, 0));
  return o;
}

/* blkDeviceSetInflight(dev, {fd, mmapSize, mmapOffset, numQueues, queueSize}) (SET_INFLIGHT_FD): always takes
 * ownership of fd. */
static napi_value js_set_inflight(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct blk_device *d = dev_arg(env, argv[0]);
  int32_t fd = -1;
  if (argc > 1) prop_i32(env, argv[1], "fd", &fd, -1);
  if (!d) {
    if (fd >= 0) close(fd);
    return NULL;
  }
  uint64_t size, offset;
  uint32_t nq, qs;
  if (fd < 0 || !prop_u64(env, argv[1], "mmapSize", &size, 0) || !prop_u64(env, argv[1], "mmapOffset", &offset, 0) ||
      !prop_u32(env, argv[1], "numQueues", &nq, 0) || !prop_u32(env, argv[1], "queueSize", &qs, 0)) {
    if (fd >= 0) close(fd);
    return throw_msg(env, "setInflight(dev, {fd, mmapSize, mmapOffset, numQueues, queueSize})");
  }
  char err[256];
  if (inflight_install(d, fd, size, offset, nq, qs, err, sizeof err) < 0) {
    close(fd);
    return throw_msg(env, "%s", err);
  }
  return make_undefined(env);
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct blk_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  napi_value arr;
  napi_create_array_with_length(env, d->nqueues, &arr);
  for (int i = 0; i < d->nqueues; i++) {
    struct blk_queue *q = &d->q[i];
    napi_value o;
    napi_create_object(env, &o);
#define S(f) set_prop(env, o, #f, make_f64(env, (double)q->t.blk.f))
    S(requests);
    S(reads);
    S(writes);
    S(flushes);
    S(discards);
    S(get_id);
    S(errors);
    S(unsupported);
    S(bytes_read);
    S(bytes_written);
    S(write_zeroes);
#undef S
    set_prop(env, o, "kicks", make_f64(env, (double)q->t.kicks));
    set_prop(env, o, "calls", make_f64(env, (double)q->calls));
    set_prop(env, o, "wakeups", make_f64(env, (double)q->t.wakeups));
    set_prop(env, o, "running", make_bool(env, q->t.running));
    set_prop(env, o, "cpuSeconds", make_f64(env, virtq_thread_cpu_seconds(&q->t)));
    napi_set_element(env, arr, i, o);
  }
  return arr;
}

void vhost_blk_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "blkDeviceCreate", js_create);
  export_fn(env, exports, "blkDeviceDestroy", js_destroy);
  export_fn(env, exports, "blkDeviceReset", js_reset);
  export_fn(env, exports, "blkDeviceSetFeatures", js_set_features);
  export_fn(env, exports, "blkDeviceSetMemTable", js_set_mem_table);
  export_fn(env, exports, "blkDeviceAddMemRegion", js_add_mem_region);
  export_fn(env, exports, "blkDeviceRemoveMemRegion", js_remove_mem_region);
  export_fn(env, exports, "blkDeviceSetVring", js_set_vring);
  export_fn(env, exports, "blkDeviceSetVringFd", js_set_vring_fd);
  export_fn(env, exports, "blkDeviceStartQueue", js_start_queue);
  export_fn(env, exports, "blkDeviceStopQueue", js_stop_queue);
  export_fn(env, exports, "blkDeviceStats", js_stats);
  export_fn(env, exports, "blkDeviceGetInflight", js_get_inflight);
  export_fn(env, exports, "blkDeviceSetInflight", js_set_inflight);
}
