/* One virtqueue's thread, for the two virtio exports (vhost-user-blk, VDUSE): it serves the ring
 * (virtio/virtq_serve.h) through the shared queue loop (notify / poll / adaptive), sleeping on the
 * driver's kick eventfd, the backend's completion fd and a wake eventfd for stopping, under the SIGBUS
 * guard; it rate-limits the log of failed requests, and drains the ring when asked to stop so that the
 * used ring is complete when the ring's state is handed over. What differs between the exports comes
 * through a small ops table, none of it per request: how the driver is notified (an eventfd write, or
 * VDUSE_VQ_INJECT_IRQ), where events go, and where the inflight region comes from. The export keeps its
 * memory translation (the mem_table it points vs.mem at), its kick fd and its control plane. */
#ifndef STOR_VIRTQ_THREAD_H
#define STOR_VIRTQ_THREAD_H
#include "export/queue_loop.h"
#include "virtio/virtq_serve.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

struct virtq_thread_ops {
  /* An event for the control plane: "reqerr" (a request failed: rate-limited here), "warn", "broken"
   * (the queue stopped serving). msg names the queue. From the queue thread. */
  void (*event)(void *ctx, const char *kind, const char *msg);
  /* The driver asked to hear of the completions just published (once per batch at most). */
  void (*notify)(void *ctx);
  /* Optional: after the ring is set up, under the SIGBUS guard, before the thread starts: attaches the
   * inflight region (virtq_serve_recover, virtq_serve_resume). 0 or -errno with err set. */
  int (*attach)(void *ctx, char *err, size_t errlen);
  /* Optional: the ring or its memory failed (after the "broken" event). */
  void (*ring_failed)(void *ctx);
  const char *thread_name; /* the queue index is appended (at most 15 characters in all) */
  const char *memory_lost; /* the "broken" event when the ring's memory raised SIGBUS */
};

struct virtq_thread {
  struct virtq_serve vs; /* vs.mem and vs.handler are set by virtq_thread_init */
  int index;
  const struct virtq_thread_ops *ops;
  void *ctx;
  enum stor_completion_mode mode;
  uint32_t spin_us;
  int kick_fd; /* the export's (it opens and closes it, with the queue stopped); -1: the driver polls */
  int wake_fd;
  pthread_t thread;
  bool running;
  atomic_bool stop;
  clockid_t cpu_clock;
  double cpu_seconds_done; /* accumulated over earlier runs */
  struct stor_qloop loop;
  uint64_t kicks, wakeups;
  struct virtio_blk_stats blk; /* the handler's counters */
  /* failure logging, rate-limited so a hostile driver cannot flood the log */
  time_t log_second;
  unsigned log_count, log_suppressed;
};

/* handler: the device's settings (its stats and log are set here). Returns 0 or -errno (no eventfd). */
int virtq_thread_init(struct virtq_thread *t, int index, const struct virtio_blk_handler *handler,
                      const struct mem_table *mem, const struct virtq_thread_ops *ops, void *ctx,
                      enum stor_completion_mode mode, uint32_t spin_us);
/* The queue is stopped: frees its slots and closes its wake fd (not the kick fd). */
void virtq_thread_free(struct virtq_thread *t);
/* Sets the ring up, attaches (ops->attach), opens a backend queue and starts the thread; no-op when
 * running. 0, or -errno with err set. */
int virtq_thread_start(struct virtq_thread *t, uint16_t num, uint64_t desc, uint64_t avail, uint64_t used,
                       uint16_t base, bool event_idx, char *err, size_t errlen);
/* Drains and joins the thread and closes the backend queue. Returns false if it was not running; else
 * the next avail index is t->vs.vr.last_avail_idx. */
bool virtq_thread_stop(struct virtq_thread *t);
/* A request failed: logs why ("reqerr"), at most a burst a second (the rest are counted and reported). */
void virtq_thread_log(struct virtq_thread *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double virtq_thread_cpu_seconds(struct virtq_thread *t);
#endif
