/* Requests from JavaScript (the promise-based client library) onto any backend queue. JS submits
 * with a token, watches event_fd on the libuv loop (or polls), and reaps [token, result] pairs.
 * Buffers stay referenced until their request completes. */
#include "bdev/bdev.h"
#include "export/queue_loop.h"
#include "sys/napi_util.h"
#include <stdlib.h>
#include <unistd.h>

struct client_req {
  struct stor_req req;
  struct iovec iov;
  struct client_queue *q;
  double token;
  napi_ref buf_ref;
  bool used;
};

struct client_queue {
  struct stor_backend *be;
  struct stor_bqueue *bq;
  napi_ref backend_ref;
  struct client_req *reqs;
  unsigned depth;
  unsigned *free_ids;
  unsigned free_top;
  /* completed, not yet handed to JS */
  unsigned *done_ids;
  unsigned done_n;
  bool closed;
};

static void on_complete(struct stor_req *r) {
  struct client_req *c = (struct client_req *)r;
  c->q->done_ids[c->q->done_n++] = (unsigned)(c - c->q->reqs);
}

static struct client_queue *cq_arg(napi_env env, napi_value v) {
  struct client_queue *q = handle_arg(env, v, STOR_HANDLE_CLIENT_QUEUE, "client queue");
  if (!q) return NULL;
  if (q->closed) {
    throw_msg(env, "client queue is closed");
    return NULL;
  }
  return q;
}

static void cq_close(napi_env env, struct client_queue *q) {
  if (q->closed) return;
  /* finish what is in flight: its buffers are still referenced */
  while (q->be->ops->inflight(q->bq)) {
    q->be->ops->commit(q->bq);
    q->be->ops->reap(q->bq, true);
  }
  for (unsigned i = 0; i < q->depth; i++)
    if (q->reqs[i].buf_ref) napi_delete_reference(env, q->reqs[i].buf_ref);
  q->be->ops->queue_close(q->bq);
  stor_backend_put(q->be);
  napi_delete_reference(env, q->backend_ref);
  q->closed = true;
}

static void cq_finalize(napi_env env, void *data, void *hint) {
  struct client_queue *q = data;
  if (!q->closed) {
    /* collected without close(): no env calls allowed on references here beyond deletion */
    while (q->be->ops->inflight(q->bq)) {
      q->be->ops->commit(q->bq);
      q->be->ops->reap(q->bq, true);
    }
    q->be->ops->queue_close(q->bq);
    stor_backend_put(q->be);
  }
  free(q->reqs);
  free(q->free_ids);
  free(q->done_ids);
  free(q);
}

/* clientQueueOpen(backend, depth) -> handle */
static napi_value js_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  uint32_t depth;
  if (!be) return NULL;
  if (!arg_u32(env, argv[1], &depth) || depth == 0 || depth > 32768) return throw_msg(env, "depth must be 1..32768");
  struct client_queue *q = calloc(1, sizeof *q);
  q->be = be;
  q->depth = depth;
  q->reqs = calloc(depth, sizeof *q->reqs);
  q->free_ids = calloc(depth, sizeof *q->free_ids);
  q->done_ids = calloc(depth, sizeof *q->done_ids);
  if (!q->reqs || !q->free_ids || !q->done_ids) {
    free(q->reqs);
    free(q->free_ids);
    free(q->done_ids);
    free(q);
    return throw_errno(env, "clientQueueOpen", ENOMEM);
  }
  int r = be->ops->queue_open(be, depth, &q->bq);
  if (r < 0) {
    free(q->reqs);
    free(q->free_ids);
    free(q->done_ids);
    free(q);
    return r == -EBUSY ? throw_msg(env, "every queue of this device is in use") : throw_errno(env, "open queue", -r);
  }
  be->refs++; /* the queue's own reference: the backend outlives a closed handle while the queue is open */
  for (unsigned i = 0; i < depth; i++) {
    q->free_ids[i] = depth - 1 - i;
    q->reqs[i].q = q;
  }
  q->free_top = depth;
  napi_create_reference(env, argv[0], 1, &q->backend_ref);
  return make_handle(env, STOR_HANDLE_CLIENT_QUEUE, q, cq_finalize);
}

/* clientSubmit(q, op, offset, length, buffer|null, token, flags) -> true, or false when the queue is full */
static napi_value js_submit(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  struct client_queue *q = cq_arg(env, argv[0]);
  if (!q) return NULL;
  uint32_t op, flags = 0;
  uint64_t offset, length;
  double token;
  if (!arg_u32(env, argv[1], &op) || !arg_u64(env, argv[2], &offset) || !arg_u64(env, argv[3], &length) ||
      napi_get_value_double(env, argv[5], &token) != napi_ok)
    return throw_msg(env, "clientSubmit(q, op, offset, length, buffer, token, flags)");
  if (argc > 6) arg_u32(env, argv[6], &flags);
  if (q->free_top == 0) return make_bool(env, false);
  void *data = NULL;
  size_t len = 0;
  napi_valuetype bt;
  napi_typeof(env, argv[4], &bt);
  if (bt != napi_null && bt != napi_undefined) {
    if (!arg_buffer(env, argv[4], &data, &len)) return throw_msg(env, "buffer must be a Buffer or Uint8Array");
    if (len < length)
      return throw_msg(env, "buffer of %zu bytes is shorter than the request (%llu)", len, (unsigned long long)length);
  }
  unsigned id = q->free_ids[--q->free_top];
  struct client_req *c = &q->reqs[id];
  memset(&c->req, 0, sizeof c->req);
  c->req.op = (uint8_t)op;
  c->req.flags = (uint8_t)flags;
  c->req.offset = offset;
  c->req.length = length;
  c->req.complete = on_complete;
  c->token = token;
  if (data) {
    c->iov.iov_base = data;
    c->iov.iov_len = length;
    c->req.iov = &c->iov;
    c->req.niov = 1;
    napi_create_reference(env, argv[4], 1, &c->buf_ref);
  }
  /* BUSY: the backend's queue is full right now. Back-pressure, not a failure: take the request
   * back; the caller retries after a completion. */
  if (q->be->ops->submit(q->bq, &c->req) == STOR_SUBMIT_BUSY) {
    if (c->buf_ref) {
      napi_delete_reference(env, c->buf_ref);
      c->buf_ref = NULL;
    }
    q->free_ids[q->free_top++] = id;
    return make_bool(env, false);
  }
  return make_bool(env, true);
}

static napi_value js_commit(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct client_queue *q = cq_arg(env, argv[0]);
  if (!q) return NULL;
  q->be->ops->commit(q->bq);
  return make_undefined(env);
}

/* Polling: one non-blocking reap; progress once a completion is waiting for JS (or nothing is in flight). */
static int cq_poll(void *ctx) {
  struct client_queue *q = ctx;
  if (q->done_n || !q->be->ops->inflight(q->bq)) return 1;
  q->be->ops->reap(q->bq, false);
  return q->done_n > 0;
}
static const struct stor_qloop_ops cq_loop_ops = {.poll = cq_poll};

/* clientReap(q, spinUs, arm) -> Float64Array [token, result, token, result, ...]
 * spinUs > 0: poll up to that long for a first completion (polled mode).
 * arm: leave the event fd armed for the next completion (event-driven mode). */
static napi_value js_reap(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  struct client_queue *q = cq_arg(env, argv[0]);
  if (!q) return NULL;
  uint32_t spin_us = 0;
  bool arm = false;
  if (argc > 1) arg_u32(env, argv[1], &spin_us);
  if (argc > 2) arg_bool(env, argv[2], &arm);
  const struct stor_backend_ops *ops = q->be->ops;
  int efd = ops->event_fd(q->bq);
  if (efd >= 0) {
    uint64_t v;
    if (read(efd, &v, 8) < 0) { /* nothing pending */
    }
  }
  ops->commit(q->bq);
  if (ops->inflight(q->bq)) ops->reap(q->bq, false);
  if (spin_us && !q->done_n && ops->inflight(q->bq)) {
    /* spin, then arm: the shared queue loop's bounded spin; the Node event loop is the sleep */
    struct stor_qloop l;
    stor_qloop_init(&l, STOR_MODE_POLL, spin_us);
    stor_qloop_spin(&l, &cq_loop_ops, q);
  }
  if (arm && ops->arm && ops->inflight(q->bq)) ops->arm(q->bq);
  napi_value ab, arr;
  void *raw;
  napi_create_arraybuffer(env, q->done_n * 2 * sizeof(double), &raw, &ab);
  double *out = raw;
  for (unsigned i = 0; i < q->done_n; i++) {
    struct client_req *c = &q->reqs[q->done_ids[i]];
    out[2 * i] = c->token;
    out[2 * i + 1] = c->req.result;
    if (c->buf_ref) {
      napi_delete_reference(env, c->buf_ref);
      c->buf_ref = NULL;
    }
    q->free_ids[q->free_top++] = q->done_ids[i];
  }
  napi_create_typedarray(env, napi_float64_array, q->done_n * 2, ab, 0, &arr);
  q->done_n = 0;
  return arr;
}

/* clientInfo(q) -> {eventFd, inflight, free} */
static napi_value js_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct client_queue *q = cq_arg(env, argv[0]);
  if (!q) return NULL;
  napi_value o;
  napi_create_object(env, &o);
  set_prop(env, o, "eventFd", make_i32(env, q->be->ops->event_fd(q->bq)));
  set_prop(env, o, "inflight", make_u32(env, q->be->ops->inflight(q->bq) + q->done_n));
  set_prop(env, o, "free", make_u32(env, q->free_top));
  return o;
}

static napi_value js_close_q(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct client_queue *q = handle_arg(env, argv[0], STOR_HANDLE_CLIENT_QUEUE, "client queue");
  if (!q) return NULL;
  cq_close(env, q);
  return make_undefined(env);
}

void client_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "clientQueueOpen", js_open);
  export_fn(env, exports, "clientSubmit", js_submit);
  export_fn(env, exports, "clientCommit", js_commit);
  export_fn(env, exports, "clientReap", js_reap);
  export_fn(env, exports, "clientInfo", js_info);
  export_fn(env, exports, "clientQueueClose", js_close_q);
}
