/* The VDUSE export's data plane: a backend as a virtio-blk device that the host kernel drives through
 * VDUSE (/dev/vduse/NAME) and binds, through vDPA and virtio_vdpa, as an ordinary /dev/vdX. The same
 * queue threads (export/virtq_thread.c) serving the rings with the same code (virtio/virtq_serve.c) as
 * the vhost-user-blk export; what differs is the transport:
 *   memory   the kernel's IOVA space (bounce buffer and coherent ring memory), reached through
 *            VDUSE_IOTLB_GET_FD + mmap. Each queue keeps its own table of IOTLB entries, filled on demand
 *            from the ring walker's misses, so every IOVA a descriptor names is checked against the IOTLB
 *            just as a guest address is checked against a memory table;
 *   kick     an eventfd given to the kernel with VDUSE_VQ_SETUP_KICKFD;
 *   call     VDUSE_VQ_INJECT_IRQ on the device fd.
 * The kernel's messages (read(2) on /dev/vduse/NAME: SET_STATUS, GET_VQ_STATE, UPDATE_IOTLB) are
 * answered here, on one control thread, not in TypeScript: each answer is a data-plane action (start
 * or drain the rings, give the avail index of a stopped ring, drop mappings), the kernel blocks the
 * driver until it gets it (and gives up on the device after its message timeout), and none of them
 * leaves anything for the control plane to decide. TypeScript creates and removes the device (ioctls on
 * /dev/vduse/control through the functions below, vdpa through the `vdpa` tool) and hears lifecycle
 * events. Nothing here calls JavaScript per request. */
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
#include <linux/vduse.h> /* the kernel's uapi header (linux-libc-dev >= 5.15) */
#include <linux/virtio_config.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_MAX_QUEUES 64
#define VDUSE_CONTROL "/dev/vduse/control"

struct vd_device;

struct vd_queue {
  struct vd_device *dev;
  int index;
  /* from VDUSE_VQ_GET_INFO at DRIVER_OK */
  uint16_t num, base;
  uint64_t desc, driver, device;
  struct virtq_thread t; /* its kick_fd is the eventfd given to the kernel */
  struct mem_table mem;  /* this queue's IOTLB entries, mapped on demand (only its thread touches it) */
  bool log_fresh;        /* the driver (re)started the ring: its inflight log region starts empty */
  uint64_t irqs, iotlb_maps;
};

struct vd_device {
  struct stor_backend *be; /* NULL: a device opened only to be removed (its server died) */
  char name[VDUSE_NAME_MAX];
  int fd;
  int nq;
  uint64_t features; /* what the driver accepted (VDUSE_DEV_GET_FEATURES at DRIVER_OK) */
  uint8_t status;
  struct vd_queue q[VD_MAX_QUEUES];
  pthread_t ctl;
  bool ctl_running;
  int ctl_wake;
  struct js_events events;
  bool closed;
  /* the inflight log: a file (under /run/stor) mapped shared, so what a queue records survives the
   * process; a server attached later with reconnect reads it back */
  void *log_map;
  size_t log_len;
  uint32_t log_qs;      /* entries per queue region (the largest ring the device offers) */
  bool reconnecting;    /* queue_start is resuming rings a dead server ran */
  char last_error[384]; /* the last "error" event (a failed resume is reported with it) */
};

/* The log file: this header, then one inflight region (virtio/inflight.h) per queue, each sized for
 * log_qs entries. */
struct vd_log_header {
  char magic[8]; /* "STORVDIL" */
  uint32_t version, queues, queue_size, reserved;
  uint8_t pad[40];
};
_Static_assert(sizeof(struct vd_log_header) == 64, "the log header is 64 bytes (keeps regions 64-byte aligned)");
#define VD_LOG_MAGIC "STORVDIL"

static struct inflight_region *log_region(struct vd_device *d, int i) {
  if (!d->log_map) return NULL;
  return (struct inflight_region *)((char *)d->log_map + sizeof(struct vd_log_header) +
                                    (size_t)i * inflight_queue_bytes((uint16_t)d->log_qs));
}

/* ---- events to JS (lifecycle and failures, never per successful request) --------------------- */

static void emit(struct vd_device *d, const char *kind, int queue, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void emit(struct vd_device *d, const char *kind, int queue, const char *fmt, ...) {
  if (!d->events.fn) return;
  char msg[JS_EVENT_MSG_BYTES];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (!strcmp(kind, "error")) snprintf(d->last_error, sizeof d->last_error, "%s", msg);
  js_events_post(&d->events, kind, queue, "%s", msg);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* ---- memory: IOTLB entries mapped on demand --------------------------------------------------- */

/* The ring walker found no mapping for [addr, addr+len): ask the kernel for the IOTLB entry holding
 * addr and map it. An IOVA the IOTLB does not map stays a bad address (the request or ring fails). */
static int iotlb_miss(void *ctx, uint64_t addr, uint64_t len) {
  struct vd_queue *q = ctx;
  struct vduse_iotlb_entry e = {.start = addr, .last = addr};
  int fd = ioctl(q->dev->fd, VDUSE_IOTLB_GET_FD, &e);
  if (fd < 0) return -errno;
  if (e.start > addr || e.last < addr || e.last == UINT64_MAX) {
    close(fd);
    return -EFAULT;
  }
  if ((e.perm & VDUSE_ACCESS_RW) != VDUSE_ACCESS_RW) {
    /* virtio_vdpa maps everything read-write; a narrower entry is not ours to write through */
    close(fd);
    virtq_thread_log(&q->t, "queue %d: IOTLB entry 0x%llx..0x%llx is not read-write (perm %u)", q->index,
                     (unsigned long long)e.start, (unsigned long long)e.last, e.perm);
    return -EACCES;
  }
  char err[200];
  int r = mem_add_region(&q->mem, e.start, e.last - e.start + 1, e.start, e.offset, fd, err, sizeof err);
  if (r < 0) {
    close(fd);
    virtq_thread_log(&q->t, "queue %d: IOTLB entry 0x%llx..0x%llx: %s", q->index, (unsigned long long)e.start,
                     (unsigned long long)e.last, err);
    return r;
  }
  q->iotlb_maps++;
  return 0;
}

/* Drops this queue's mappings that overlap [start, last] (the queue is stopped). */
static void unmap_range(struct vd_queue *q, uint64_t start, uint64_t last) {
  for (int i = q->mem.n - 1; i >= 0; i--) {
    const struct mem_region *r = &q->mem.r[i];
    if (r->gpa <= last && start <= r->gpa + r->size - 1) mem_remove_region(&q->mem, r->gpa, r->size);
  }
}

/* ---- the queue thread's callbacks (virtq_thread.h) ------------------------------------------ */

static void queue_event(void *ctx, const char *kind, const char *msg) {
  struct vd_queue *q = ctx;
  emit(q->dev, kind, q->index, "%s", msg);
}

static void queue_notify(void *ctx) {
  struct vd_queue *q = ctx;
  uint32_t index = (uint32_t)q->index;
  if (ioctl(q->dev->fd, VDUSE_VQ_INJECT_IRQ, &index) == 0) q->irqs++;
}

/* ---- ring lifecycle (control thread, or the JS thread once the control thread is gone) ---------- */

/* Attaches the queue's region of the inflight log (the vring is set up; under the SIGBUS guard). A ring
 * the driver has just started begins with an empty region. A ring resumed after a reconnect recovers
 * from it the chains the dead server had popped and not returned; the next avail index is then the used
 * index plus their count (every popped chain was returned or is in flight) — the kernel's own record of
 * the avail index (VDUSE_VQ_GET_INFO) is the one it gave at DRIVER_OK, not where the dead server was.
 * Without a log a resumed ring restarts at the used index: chains completed out of order are replayed,
 * and chains still in flight behind them are lost (what the log is for). */
static int queue_attach(void *ctx, char *err, size_t errlen) {
  struct vd_queue *q = ctx;
  struct vd_device *d = q->dev;
  struct virtq_serve *vs = &q->t.vs;
  struct inflight_region *r = log_region(d, q->index);
  if (r && q->num > d->log_qs) r = NULL;
  if (r && q->log_fresh) {
    memset(r, 0, inflight_queue_bytes((uint16_t)d->log_qs));
    r->desc_num = q->num;
  }
  char why[160];
  int n = virtq_serve_recover(vs, r, why, sizeof why);
  if (n < 0) {
    snprintf(err, errlen, "queue %d: inflight log: %s", q->index, why);
    return -EINVAL;
  }
  q->log_fresh = false;
  if (d->reconnecting) {
    virtq_serve_resume(vs, (unsigned)n);
    emit(d, "status", q->index, "queue %d: resumed at avail index %u (used index %u), resubmitting %d request(s)%s",
         q->index, vs->vr.last_avail_idx, vs->vr.used_idx, n, vs->infl.r ? "" : " (no inflight log)");
  }
  return 0;
}

static const struct virtq_thread_ops queue_ops = {
    .event = queue_event,
    .notify = queue_notify,
    .attach = queue_attach,
    .thread_name = "stor-vduse",
    .memory_lost = "kernel memory became inaccessible (SIGBUS)",
};

static void queue_stop(struct vd_queue *q) {
  if (virtq_thread_stop(&q->t)) q->base = q->t.vs.vr.last_avail_idx;
}

static int queue_start(struct vd_queue *q, char *err, size_t errlen) {
  bool event_idx = q->dev->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
  return virtq_thread_start(&q->t, q->num, q->desc, q->driver, q->device, q->base, event_idx, err, errlen);
}

/* A ring's end of life: stopped, its kick fd taken back from the kernel, its mappings dropped. */
static void queue_reset(struct vd_queue *q) {
  queue_stop(q);
  if (q->t.kick_fd >= 0) {
    struct vduse_vq_eventfd ev = {.index = (uint32_t)q->index, .fd = VDUSE_EVENTFD_DEASSIGN};
    if (q->dev->fd >= 0) ioctl(q->dev->fd, VDUSE_VQ_SETUP_KICKFD, &ev);
    close_fd(&q->t.kick_fd);
  }
  mem_clear(&q->mem);
  q->num = 0;
  q->base = 0;
}

/* DRIVER_OK (resume false): read each ready ring's layout from the kernel, give it a kick eventfd and
 * start it with an empty inflight log. Reconnect (resume true): the same for rings a dead server ran,
 * the driver none the wiser — their state comes from the ring and the log (inflight_attach); the kick
 * eventfd replaces the dead server's (kicks sent to that one are lost: each ring is looked at once
 * when it starts) and an interrupt per ring covers completions it published without signalling. */
static int device_start(struct vd_device *d, bool resume) {
  if (ioctl(d->fd, VDUSE_DEV_GET_FEATURES, &d->features) < 0) {
    emit(d, "error", -1, "VDUSE_DEV_GET_FEATURES: %s", strerror(errno));
    return -1;
  }
  int started = 0, r;
  for (int i = 0; i < d->nq; i++) {
    struct vd_queue *q = &d->q[i];
    struct vduse_vq_info info = {.index = (uint32_t)i};
    if (ioctl(d->fd, VDUSE_VQ_GET_INFO, &info) < 0) {
      emit(d, "error", i, "VDUSE_VQ_GET_INFO %d: %s", i, strerror(errno));
      return -1;
    }
    if (!info.ready) continue; /* the driver uses fewer queues than offered */
    if (info.num == 0 || info.num > 32768 || (info.num & (info.num - 1))) {
      emit(d, "error", i, "queue %d: the driver set size %u, not a power of 2 up to 32768", i, info.num);
      return -1;
    }
    q->num = (uint16_t)info.num;
    q->desc = info.desc_addr;
    q->driver = info.driver_addr;
    q->device = info.device_addr;
    q->base = info.split.avail_index;
    q->log_fresh = !resume;
    if (q->t.kick_fd < 0) {
      q->t.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      struct vduse_vq_eventfd ev = {.index = (uint32_t)i, .fd = q->t.kick_fd};
      if (q->t.kick_fd < 0 || ioctl(d->fd, VDUSE_VQ_SETUP_KICKFD, &ev) < 0) {
        emit(d, "error", i, "queue %d: kick eventfd: %s", i, strerror(errno));
        close_fd(&q->t.kick_fd);
        return -1;
      }
    }
    char err[256];
    d->reconnecting = resume;
    r = queue_start(q, err, sizeof err);
    d->reconnecting = false;
    if (r < 0) {
      emit(d, "error", i, "queue %d cannot start: %s", i, err);
      return -1;
    }
    if (resume) {
      uint32_t index = (uint32_t)i;
      ioctl(d->fd, VDUSE_VQ_INJECT_IRQ, &index);
    }
    started++;
  }
  emit(d, "status", -1, "%s: %d queue(s) running, features 0x%llx", resume ? "reconnected" : "driver ready", started,
       (unsigned long long)d->features);
  return started;
}

static void device_reset(struct vd_device *d) {
  for (int i = 0; i < d->nq; i++) queue_reset(&d->q[i]);
  d->features = 0;
}

/* Answers one kernel message; returns VDUSE_REQ_RESULT_*. */
static uint32_t handle_message(struct vd_device *d, const struct vduse_dev_request *req,
                               struct vduse_dev_response *resp) {
  switch (req->type) {
  case VDUSE_GET_VQ_STATE: {
    uint32_t i = req->vq_state.index;
    if (i >= (uint32_t)d->nq) return VDUSE_REQ_RESULT_FAILED;
    struct vd_queue *q = &d->q[i];
    resp->vq_state.index = i;
    resp->vq_state.split.avail_index = q->t.running ? q->t.vs.vr.last_avail_idx : q->base;
    return VDUSE_REQ_RESULT_OK;
  }
  case VDUSE_SET_STATUS: {
    uint8_t s = req->s.status, was = d->status;
    if (!d->be) { /* only being removed: accept everything, start nothing */
      d->status = s;
      return VDUSE_REQ_RESULT_OK;
    }
    if (s == 0) {
      device_reset(d);
      if (was) emit(d, "status", -1, "driver reset the device");
    } else if ((s & VIRTIO_CONFIG_S_DRIVER_OK) && !(was & VIRTIO_CONFIG_S_DRIVER_OK)) {
      if (device_start(d, false) < 0) {
        device_reset(d);
        return VDUSE_REQ_RESULT_FAILED;
      }
    } else if (!(s & VIRTIO_CONFIG_S_DRIVER_OK) && (was & VIRTIO_CONFIG_S_DRIVER_OK)) {
      for (int i = 0; i < d->nq; i++) queue_stop(&d->q[i]);
    }
    d->status = s;
    return VDUSE_REQ_RESULT_OK;
  }
  case VDUSE_UPDATE_IOTLB: {
    /* Mappings in [start, last] changed: drop ours (with the rings paused) so the next use asks again. */
    uint64_t start = req->iova.start, last = req->iova.last;
    for (int i = 0; i < d->nq; i++) {
      struct vd_queue *q = &d->q[i];
      bool was = q->t.running;
      queue_stop(q);
      unmap_range(q, start, last);
      char err[256];
      if (was && queue_start(q, err, sizeof err) < 0) emit(d, "broken", i, "queue %d cannot restart: %s", i, err);
    }
    return VDUSE_REQ_RESULT_OK;
  }
  default: return VDUSE_REQ_RESULT_FAILED;
  }
}

static void *control_thread(void *arg) {
  struct vd_device *d = arg;
  pthread_setname_np(pthread_self(), "stor-vduse-ctl");
  for (;;) {
    struct pollfd pf[2] = {{d->fd, POLLIN, 0}, {d->ctl_wake, POLLIN, 0}};
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR) continue;
      emit(d, "broken", -1, "control: poll: %s", strerror(errno));
      break;
    }
    if (pf[1].revents) break;
    if (pf[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      emit(d, "broken", -1, "control: the VDUSE device fd failed");
      break;
    }
    struct vduse_dev_request req;
    ssize_t n = read(d->fd, &req, sizeof req);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n != (ssize_t)sizeof req) {
      emit(d, "broken", -1, "control: reading a message: %s", n < 0 ? strerror(errno) : "short read");
      break;
    }
    struct vduse_dev_response resp;
    memset(&resp, 0, sizeof resp);
    resp.request_id = req.request_id;
    resp.result = handle_message(d, &req, &resp);
    if (write(d->fd, &resp, sizeof resp) != (ssize_t)sizeof resp)
      emit(d, "broken", -1, "control: answering message %u: %s", req.type, strerror(errno));
  }
  return NULL;
}

/* ---- N-API ---------------------------------------------------------------------------------- */

static int open_control(napi_env env) {
  int fd = open(VDUSE_CONTROL, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, VDUSE_CONTROL, errno);
    return -1;
  }
  return fd;
}

/* vduseApiVersion() -> the version /dev/vduse/control speaks, after agreeing on version 0 (the one
 * this file implements). Throws with errno ENOENT (no VDUSE), EACCES (not root)... */
static napi_value js_api_version(napi_env env, napi_callback_info info) {
  int fd = open_control(env);
  if (fd < 0) return NULL;
  uint64_t v = 0;
  if (ioctl(fd, VDUSE_GET_API_VERSION, &v) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "VDUSE_GET_API_VERSION", e);
  }
  uint64_t want = VDUSE_API_VERSION;
  if (ioctl(fd, VDUSE_SET_API_VERSION, &want) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "VDUSE_SET_API_VERSION", e);
  }
  close(fd);
  return make_f64(env, (double)v);
}

/* vduseCreateDevice({name, features (BigInt), queues, queueSize, config (Buffer)}): VDUSE_CREATE_DEV of
 * a virtio-blk device, then VDUSE_VQ_SETUP of every queue's largest size. Throws with errno (EEXIST:
 * the name is taken). */
static napi_value js_create_device(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  char name[VDUSE_NAME_MAX];
  uint64_t features;
  uint32_t queues, queue_size;
  napi_value cfg_v;
  bool present;
  if (!prop_str(env, argv[0], "name", name, sizeof name, "") || !prop_u64(env, argv[0], "features", &features, 0) ||
      !prop_u32(env, argv[0], "queues", &queues, 1) || !prop_u32(env, argv[0], "queueSize", &queue_size, 128) ||
      !get_prop(env, argv[0], "config", &cfg_v, &present))
    return NULL;
  void *cfg;
  size_t cfg_len;
  if (!present || !arg_buffer(env, cfg_v, &cfg, &cfg_len) || cfg_len == 0 || cfg_len > 4096)
    return throw_msg(env, "config must be a Buffer of 1..4096 bytes");
  if (!name[0]) return throw_msg(env, "name is empty");
  if (queues < 1 || queues > VD_MAX_QUEUES) return throw_msg(env, "queues must be 1..%d", VD_MAX_QUEUES);
  int fd = open_control(env);
  if (fd < 0) return NULL;
  uint64_t version = VDUSE_API_VERSION;
  ioctl(fd, VDUSE_SET_API_VERSION, &version);
  struct vduse_dev_config *c = calloc(1, sizeof *c + cfg_len);
  if (!c) {
    close(fd);
    return throw_errno(env, "vduseCreateDevice", ENOMEM);
  }
  snprintf(c->name, sizeof c->name, "%s", name);
  c->vendor_id = 0;
  c->device_id = 2; /* VIRTIO_ID_BLOCK */
  c->features = features;
  c->vq_num = queues;
  c->vq_align = 4096;
  c->config_size = (uint32_t)cfg_len;
  memcpy(c->config, cfg, cfg_len);
  int r = ioctl(fd, VDUSE_CREATE_DEV, c);
  int e = errno;
  free(c);
  close(fd);
  if (r < 0) return throw_errno(env, "VDUSE_CREATE_DEV", e);
  char path[VDUSE_NAME_MAX + 16];
  snprintf(path, sizeof path, "/dev/vduse/%s", name);
  int dfd = -1;
  /* devtmpfs creates the node with the device; allow it a moment under a slow (emulated) CPU */
  for (int tries = 0; tries < 200 && dfd < 0; tries++) {
    dfd = open(path, O_RDWR | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT)
      usleep(10000);
    else if (dfd < 0)
      break;
  }
  if (dfd < 0) return throw_errno(env, path, errno);
  for (uint32_t i = 0; i < queues; i++) {
    struct vduse_vq_config vc = {.index = i, .max_size = (uint16_t)(queue_size > 32768 ? 32768 : queue_size)};
    if (ioctl(dfd, VDUSE_VQ_SETUP, &vc) < 0) {
      e = errno;
      close(dfd);
      return throw_errno(env, "VDUSE_VQ_SETUP", e);
    }
  }
  close(dfd);
  return make_undefined(env);
}

/* vduseDestroyDevice(name): VDUSE_DESTROY_DEV; throws with errno (EBUSY: still open or on the vDPA bus). */
static napi_value js_destroy_device(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  char name[VDUSE_NAME_MAX];
  memset(name, 0, sizeof name);
  if (!arg_str(env, argv[0], name, sizeof name)) return throw_msg(env, "name must be a string");
  int fd = open_control(env);
  if (fd < 0) return NULL;
  uint64_t version = VDUSE_API_VERSION;
  ioctl(fd, VDUSE_SET_API_VERSION, &version);
  int r = ioctl(fd, VDUSE_DESTROY_DEV, name);
  int e = errno;
  close(fd);
  if (r < 0) return throw_errno(env, "VDUSE_DESTROY_DEV", e);
  return make_undefined(env);
}

static void device_close(struct vd_device *d) {
  if (d->closed) return;
  d->closed = true;
  if (d->ctl_running) {
    uint64_t one = 1;
    if (write(d->ctl_wake, &one, 8) != 8) { /* the thread is gone already */
    }
    pthread_join(d->ctl, NULL);
    d->ctl_running = false;
  }
  if (d->be) device_reset(d);
  close_fd(&d->fd);
  close_fd(&d->ctl_wake);
  for (int i = 0; i < d->nq; i++) virtq_thread_free(&d->q[i].t);
  if (d->log_map) munmap(d->log_map, d->log_len);
  d->log_map = NULL;
  js_events_close(&d->events, NULL);
  if (d->be) stor_backend_put(d->be);
  d->be = NULL;
}

static void device_finalize(napi_env env, void *data, void *hint) {
  struct vd_device *d = data;
  device_close(d);
  free(d);
}

/* Maps the inflight log file: created (emptied) for a new device, or — resume — the one a dead server
 * wrote, which must be for the same number of queues and ring size. Returns 0 or -1 with err set. */
static int log_map(struct vd_device *d, const char *path, uint32_t queue_size, bool resume, char *err, size_t errlen) {
  size_t len = sizeof(struct vd_log_header) + (size_t)d->nq * inflight_queue_bytes((uint16_t)queue_size);
  int fd = open(path, O_RDWR | O_CLOEXEC | (resume ? 0 : O_CREAT | O_TRUNC), 0600);
  if (fd < 0) {
    snprintf(err, errlen, "inflight log %s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || (resume ? (size_t)st.st_size < len : ftruncate(fd, (off_t)len) < 0)) {
    snprintf(err, errlen, "inflight log %s: %s", path, resume ? "shorter than its header says" : strerror(errno));
    close(fd);
    return -1;
  }
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    snprintf(err, errlen, "inflight log %s: mmap: %s", path, strerror(errno));
    return -1;
  }
  struct vd_log_header *h = m;
  if (resume) {
    if (memcmp(h->magic, VD_LOG_MAGIC, 8) || h->version != 1 || h->queues != (uint32_t)d->nq ||
        h->queue_size != queue_size) {
      snprintf(err, errlen, "inflight log %s is not for %d queue(s) of %u entries", path, d->nq, queue_size);
      munmap(m, len);
      return -1;
    }
  } else {
    memcpy(h->magic, VD_LOG_MAGIC, 8);
    h->version = 1;
    h->queues = (uint32_t)d->nq;
    h->queue_size = queue_size;
  }
  d->log_map = m;
  d->log_len = len;
  d->log_qs = queue_size;
  return 0;
}

/* vduseDeviceOpen(name, backend|null, {queues, blockSize, readonly, serial, mode, spinUs,
 * maxDiscardSectors, maxWriteZeroesSectors, queueSize, inflightLog, reconnect}, onEvent(kind, queue, msg))
 * -> handle. inflightLog (a path, "" for none) records each ring's in-flight chains; reconnect resumes
 * the rings of a device whose server died (reading that log) instead of waiting for DRIVER_OK.
 * Opens /dev/vduse/NAME and starts the control thread that answers the kernel's messages; the rings
 * start when the driver sets DRIVER_OK. With backend null the device is only answered (every status
 * accepted, no ring started): what removing a device whose server died needs. */
static napi_value js_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  char name[VDUSE_NAME_MAX];
  if (!arg_str(env, argv[0], name, sizeof name)) return throw_msg(env, "name must be a string");
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  struct stor_backend *be = NULL;
  if (t != napi_null && t != napi_undefined) {
    be = backend_from_js(env, argv[1]);
    if (!be) return NULL;
  }
  uint32_t queues, block_size, spin_us, mds, mwzs, queue_size;
  bool readonly, reconnect;
  char serial[64], mode[16], log_path[512];
  if (!prop_u32(env, argv[2], "queues", &queues, 1) || !prop_u32(env, argv[2], "blockSize", &block_size, 512) ||
      !prop_bool(env, argv[2], "readonly", &readonly, false) ||
      !prop_str(env, argv[2], "serial", serial, sizeof serial, "") ||
      !prop_str(env, argv[2], "mode", mode, sizeof mode, "adaptive") ||
      !prop_u32(env, argv[2], "spinUs", &spin_us, STOR_SPIN_US_DEFAULT) ||
      !prop_u32(env, argv[2], "maxDiscardSectors", &mds, 1u << 22) ||
      !prop_u32(env, argv[2], "maxWriteZeroesSectors", &mwzs, 1u << 22) ||
      !prop_u32(env, argv[2], "queueSize", &queue_size, 128) ||
      !prop_str(env, argv[2], "inflightLog", log_path, sizeof log_path, "") ||
      !prop_bool(env, argv[2], "reconnect", &reconnect, false))
    return NULL;
  if (queue_size < 1 || queue_size > 32768) return throw_msg(env, "queueSize must be 1..32768");
  if (queues < 1 || queues > VD_MAX_QUEUES) return throw_msg(env, "queues must be 1..%d", VD_MAX_QUEUES);
  char path[VDUSE_NAME_MAX + 16];
  snprintf(path, sizeof path, "/dev/vduse/%s", name);
  int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return throw_errno(env, path, errno);
  struct vd_device *d = calloc(1, sizeof *d);
  if (!d) {
    close(fd);
    return throw_errno(env, "vduseDeviceOpen", ENOMEM);
  }
  snprintf(d->name, sizeof d->name, "%s", name);
  d->fd = fd;
  d->be = be;
  if (be) be->refs++;
  d->nq = (int)queues;
  int m = stor_completion_mode_parse(mode);
  d->ctl_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct virtio_blk_handler handler = {
      .be = be,
      .block_size = block_size,
      .readonly = readonly || (be && be->props.readonly),
      .max_discard_sectors = mds,
      .max_write_zeroes_sectors = mwzs,
  };
  memcpy(handler.serial, serial, strnlen(serial, VIRTIO_BLK_ID_BYTES));
  for (int i = 0; i < d->nq; i++) {
    struct vd_queue *q = &d->q[i];
    q->dev = d;
    q->index = i;
    virtq_thread_init(&q->t, i, &handler, &q->mem, &queue_ops, q, m < 0 ? STOR_MODE_ADAPTIVE : m, spin_us);
    q->mem.miss = iotlb_miss;
    q->mem.miss_ctx = q;
  }
  if (js_events_open(&d->events, env, argv[3], "stor-vduse-events") < 0) {
    device_close(d);
    free(d);
    return throw_msg(env, "cannot create the event channel");
  }
  char err[600];
  if (be && log_path[0] && log_map(d, log_path, queue_size, reconnect, err, sizeof err) < 0) {
    device_close(d);
    free(d);
    return throw_msg(env, "%s", err);
  }
  if (be && reconnect) {
    /* the driver set DRIVER_OK long ago and will not say it again: resume the rings it runs now */
    int started = device_start(d, true);
    if (started < 0) {
      snprintf(err, sizeof err, "%s", d->last_error);
      device_reset(d);
      device_close(d);
      free(d);
      return throw_msg(env, "cannot resume the rings of %s: %s", name, err);
    }
    if (started)
      d->status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
                  VIRTIO_CONFIG_S_DRIVER_OK;
  }
  int r = pthread_create(&d->ctl, NULL, control_thread, d);
  if (r) {
    device_close(d);
    free(d);
    return throw_errno(env, "pthread_create", r);
  }
  d->ctl_running = true;
  return make_handle(env, STOR_HANDLE_VDUSE_DEVICE, d, device_finalize);
}

static struct vd_device *dev_arg(napi_env env, napi_value v) {
  return handle_arg(env, v, STOR_HANDLE_VDUSE_DEVICE, "VDUSE device");
}

/* vduseDeviceClose(dev): stops answering the kernel, drains and stops the rings, closes the device fd
 * (after which VDUSE_DESTROY_DEV can remove it). Idempotent. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct vd_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  device_close(d);
  return make_undefined(env);
}

/* vduseDeviceStats(dev) -> per queue: the handler's counters, kicks, irqs, wakeups, iotlbMaps, running. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct vd_device *d = dev_arg(env, argv[0]);
  if (!d) return NULL;
  napi_value arr;
  napi_create_array_with_length(env, d->nq, &arr);
  for (int i = 0; i < d->nq; i++) {
    struct vd_queue *q = &d->q[i];
    napi_value o;
    napi_create_object(env, &o);
#define S(f) set_prop(env, o, #f, make_f64(env, (double)q->t.blk.f))
    S(requests);
    S(reads);
    S(writes);
    S(flushes);
    S(discards);
    S(write_zeroes);
    S(get_id);
    S(errors);
    S(unsupported);
    S(bytes_read);
    S(bytes_written);
#undef S
    set_prop(env, o, "kicks", make_f64(env, (double)q->t.kicks));
    set_prop(env, o, "irqs", make_f64(env, (double)q->irqs));
    set_prop(env, o, "wakeups", make_f64(env, (double)q->t.wakeups));
    set_prop(env, o, "iotlbMaps", make_f64(env, (double)q->iotlb_maps));
    set_prop(env, o, "running", make_bool(env, q->t.running));
    napi_set_element(env, arr, i, o);
  }
  return arr;
}

void vduse_blk_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "vduseApiVersion", js_api_version);
  export_fn(env, exports, "vduseCreateDevice", js_create_device);
  export_fn(env, exports, "vduseDestroyDevice", js_destroy_device);
  export_fn(env, exports, "vduseDeviceOpen", js_open);
  export_fn(env, exports, "vduseDeviceClose", js_close);
  export_fn(env, exports, "vduseDeviceStats", js_stats);
}
