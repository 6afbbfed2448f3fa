/* The syscall layer the TypeScript control plane needs and Node does not offer:
 * Unix sockets with SCM_RIGHTS, memfd + shared mmap, eventfd, and readiness watches on the
 * libuv loop. Nothing here runs per I/O. */
#include "sys/napi_util.h"
#include "sys/sys.h"
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#define MAX_FDS_PER_MSG 32

static bool fill_sockaddr(napi_env env, napi_value v, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (!arg_str(env, v, sa->sun_path, sizeof sa->sun_path)) {
    throw_msg(env, "socket path must be a string of at most %zu bytes", sizeof sa->sun_path - 1);
    return false;
  }
  return true;
}

/* unixListen(path, backlog) -> fd (non-blocking, close-on-exec). */
static napi_value js_unix_listen(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct sockaddr_un sa;
  int32_t backlog = 16;
  if (!fill_sockaddr(env, argv[0], &sa)) return NULL;
  if (argc > 1) arg_i32(env, argv[1], &backlog);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    char what[160];
    snprintf(what, sizeof what, "bind %s", sa.sun_path);
    return throw_errno(env, what, e);
  }
  if (listen(fd, backlog) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "listen", e);
  }
  return make_i32(env, fd);
}

/* unixConnect(path) -> fd (blocking, close-on-exec). */
static napi_value js_unix_connect(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct sockaddr_un sa;
  if (!fill_sockaddr(env, argv[0], &sa)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    char what[160];
    snprintf(what, sizeof what, "connect %s", sa.sun_path);
    return throw_errno(env, what, e);
  }
  return make_i32(env, fd);
}

/* accept(listenFd) -> fd, or -1 when no connection is pending. The new fd is non-blocking. */
static napi_value js_accept(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t lfd;
  if (!arg_i32(env, argv[0], &lfd)) return throw_msg(env, "accept: fd expected");
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) return make_i32(env, -1);
    return throw_errno(env, "accept", errno);
  }
  return make_i32(env, fd);
}

static void close_fds(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
}

/* recvmsg(fd, maxLen) -> {data: Buffer, fds: number[]} | null when it would block.
 * data.length === 0 means the peer closed. Received fds are close-on-exec; the caller owns them.
 * Callers read one message part at a time (never past a message's end) so that the fds a sender
 * attached to a message are never mistaken for a neighbour's. */
static napi_value js_recvmsg(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  uint32_t max;
  if (!arg_i32(env, argv[0], &fd) || !arg_u32(env, argv[1], &max) || max == 0 || max > (1u << 20))
    return throw_msg(env, "recvmsg(fd, maxLen): maxLen must be 1..1048576");
  void *data = malloc(max);
  if (!data) return throw_errno(env, "recvmsg", ENOMEM);
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {data, max};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    free(data);
    if (e == EAGAIN || e == EWOULDBLOCK) return make_null(env);
    return throw_errno(env, "recvmsg", e);
  }
  int fds[MAX_FDS_PER_MSG];
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (int i = 0; i < cnt; i++) {
        int f;
        memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
        if (nfds < MAX_FDS_PER_MSG)
          fds[nfds++] = f;
        else
          close(f);
      }
    }
  }
  napi_value result, buf, arr;
  if (napi_create_buffer_copy(env, n, data, NULL, &buf) != napi_ok) {
    free(data);
    close_fds(fds, nfds);
    return NULL;
  }
  free(data);
  napi_create_object(env, &result);
  napi_create_array_with_length(env, nfds, &arr);
  for (int i = 0; i < nfds; i++) napi_set_element(env, arr, i, make_i32(env, fds[i]));
  set_prop(env, result, "data", buf);
  set_prop(env, result, "fds", arr);
  set_prop(env, result, "truncated", make_bool(env, (mh.msg_flags & MSG_CTRUNC) != 0));
  return result;
}

/* sendmsg(fd, buffer, fds?) -> bytes sent (-1 when it would block). */
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  int32_t fd;
  void *data;
  size_t len;
  if (!arg_i32(env, argv[0], &fd) || !arg_buffer(env, argv[1], &data, &len))
    return throw_msg(env, "sendmsg(fd, buffer, fds?)");
  int fds[MAX_FDS_PER_MSG];
  uint32_t nfds = 0;
  bool is_arr = false;
  if (argc > 2) napi_is_array(env, argv[2], &is_arr);
  if (is_arr) {
    napi_get_array_length(env, argv[2], &nfds);
    if (nfds > MAX_FDS_PER_MSG) return throw_msg(env, "sendmsg: at most %d fds", MAX_FDS_PER_MSG);
    for (uint32_t i = 0; i < nfds; i++) {
      napi_value e;
      napi_get_element(env, argv[2], i, &e);
      if (!arg_i32(env, e, &fds[i])) return throw_msg(env, "sendmsg: fds must be integers");
    }
  }
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {data, len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds) {
    mh.msg_control = ctl.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(fd, &mh, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_i32(env, -1);
    return throw_errno(env, "sendmsg", errno);
  }
  return make_i32(env, (int32_t)n);
}

/* waitReadable(fd, timeoutMs) -> true if readable (or hung up) before the timeout. For clients
 * that do request/reply on a blocking socket and must not hang on a dead peer. */
static napi_value js_wait_readable(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd, ms;
  if (!arg_i32(env, argv[0], &fd) || !arg_i32(env, argv[1], &ms)) return throw_msg(env, "waitReadable(fd, ms)");
  struct pollfd p = {fd, POLLIN, 0};
  int r;
  do r = poll(&p, 1, ms);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, "poll", errno);
  return make_bool(env, r > 0);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t fd;
  if (!arg_i32(env, argv[0], &fd)) return throw_msg(env, "close(fd)");
  if (fd >= 0) close(fd);
  return make_undefined(env);
}

static napi_value js_set_nonblocking(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  bool on;
  if (!arg_i32(env, argv[0], &fd) || !arg_bool(env, argv[1], &on)) return throw_msg(env, "setNonBlocking(fd, on)");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
    return throw_errno(env, "fcntl", errno);
  return make_undefined(env);
}

/* eventfd(initval, nonblocking) -> fd */
static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  uint32_t init = 0;
  bool nb = true;
  if (argc > 0) arg_u32(env, argv[0], &init);
  if (argc > 1) arg_bool(env, argv[1], &nb);
  int fd = eventfd(init, EFD_CLOEXEC | (nb ? EFD_NONBLOCK : 0));
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return make_i32(env, fd);
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  uint64_t v = 1;
  if (!arg_i32(env, argv[0], &fd)) return throw_msg(env, "eventfdWrite(fd, value)");
  if (argc > 1) arg_u64(env, argv[1], &v);
  if (write(fd, &v, 8) != 8 && errno != EAGAIN) return throw_errno(env, "eventfd write", errno);
  return make_undefined(env);
}

/* eventfdRead(fd) -> counter value (0 if it would block). */
static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t fd;
  uint64_t v = 0;
  if (!arg_i32(env, argv[0], &fd)) return throw_msg(env, "eventfdRead(fd)");
  if (read(fd, &v, 8) != 8) {
    if (errno == EAGAIN) return make_f64(env, 0);
    return throw_errno(env, "eventfd read", errno);
  }
  return make_f64(env, (double)v);
}

/* memfdCreate(name, size) -> fd, sized with ftruncate; sparse until written. */
static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  char name[64];
  uint64_t size;
  if (!arg_str(env, argv[0], name, sizeof name) || !arg_u64(env, argv[1], &size))
    return throw_msg(env, "memfdCreate(name, size)");
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  if (ftruncate(fd, (off_t)size) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "ftruncate", e);
  }
  return make_i32(env, fd);
}

static void unmap_finalizer(napi_env env, void *data, void *hint) { munmap(data, (size_t)(uintptr_t)hint); }

/* mmapShared(fd, size, offset) -> Buffer over a MAP_SHARED mapping, unmapped when collected. */
static napi_value js_mmap_shared(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  int32_t fd;
  uint64_t size, off = 0;
  if (!arg_i32(env, argv[0], &fd) || !arg_u64(env, argv[1], &size) || size == 0)
    return throw_msg(env, "mmapShared(fd, size, offset)");
  if (argc > 2) arg_u64(env, argv[2], &off);
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
  if (p == MAP_FAILED) return throw_errno(env, "mmap", errno);
  napi_value buf;
  if (napi_create_external_buffer(env, size, p, unmap_finalizer, (void *)(uintptr_t)size, &buf) != napi_ok) {
    munmap(p, size);
    return throw_msg(env, "mmapShared: external buffers are not allowed in this runtime");
  }
  return buf;
}

/* bufferAddress(buf) -> BigInt virtual address of buf's first byte (a front-end's "user address"). */
static napi_value js_buffer_address(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  void *data;
  size_t len;
  if (!arg_buffer(env, argv[0], &data, &len)) return throw_msg(env, "bufferAddress(buffer)");
  return make_u64(env, (uint64_t)(uintptr_t)data);
}

/* fstatSize(fd) -> size in bytes (regular files and memfds). */
static napi_value js_fstat_size(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t fd;
  struct stat st;
  if (!arg_i32(env, argv[0], &fd)) return throw_msg(env, "fstatSize(fd)");
  if (fstat(fd, &st) < 0) return throw_errno(env, "fstat", errno);
  return make_f64(env, (double)st.st_size);
}

/* ---- readiness watches on the libuv loop ---------------------------------------------- */

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  bool closed;
} fd_watch;

static void watch_closed(uv_handle_t *h) {
  fd_watch *w = h->data;
  free(w);
}

static void watch_cb(uv_poll_t *h, int status, int events) {
  fd_watch *w = h->data;
  if (w->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(w->env, &scope);
  napi_value cb, global, args[2];
  napi_get_reference_value(w->env, w->callback, &cb);
  napi_get_global(w->env, &global);
  args[0] = make_i32(w->env, status);
  args[1] = make_i32(w->env, events);
  napi_value result;
  /* An exception in the callback becomes an uncaught exception, like any libuv callback's. */
  napi_make_callback(w->env, NULL, global, cb, 2, args, &result);
  napi_close_handle_scope(w->env, scope);
}

static void watch_stop(fd_watch *w) {
  if (w->closed) return;
  w->closed = true;
  uv_poll_stop(&w->poll);
  napi_delete_reference(w->env, w->callback);
  uv_close((uv_handle_t *)&w->poll, watch_closed);
}

static napi_value js_watch_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  void *data;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, NULL, &self, &data));
  fd_watch *w;
  if (napi_unwrap(env, self, (void **)&w) == napi_ok && w) {
    napi_remove_wrap(env, self, NULL);
    watch_stop(w);
  }
  return make_undefined(env);
}

/* ref(on): whether the watch keeps the event loop alive (uv_ref / uv_unref). */
static napi_value js_watch_ref(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  bool on = true;
  if (argc > 0) arg_bool(env, argv[0], &on);
  fd_watch *w;
  if (napi_unwrap(env, self, (void **)&w) == napi_ok && w && !w->closed) {
    if (on)
      uv_ref((uv_handle_t *)&w->poll);
    else
      uv_unref((uv_handle_t *)&w->poll);
  }
  return make_undefined(env);
}

static void watch_finalize(napi_env env, void *data, void *hint) {
  /* Collected without stop(): stop it now so libuv does not call into a dead object. */
  watch_stop((fd_watch *)data);
}

/* watchFd(fd, readable, writable, cb(status, events)) -> {stop()}. The watch keeps the loop alive
 * until stopped. */
static napi_value js_watch_fd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  int32_t fd;
  bool rd, wr;
  if (!arg_i32(env, argv[0], &fd) || !arg_bool(env, argv[1], &rd) || !arg_bool(env, argv[2], &wr))
    return throw_msg(env, "watchFd(fd, readable, writable, cb)");
  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  fd_watch *w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, "watchFd", ENOMEM);
  w->env = env;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    free(w);
    return throw_msg(env, "watchFd: %s", uv_strerror(r));
  }
  w->poll.data = w;
  NAPI_CALL(env, napi_create_reference(env, argv[3], 1, &w->callback));
  r = uv_poll_start(&w->poll, (rd ? UV_READABLE : 0) | (wr ? UV_WRITABLE : 0) | UV_DISCONNECT, watch_cb);
  if (r < 0) {
    watch_stop(w);
    return throw_msg(env, "watchFd: %s", uv_strerror(r));
  }
  napi_value obj, stop;
  napi_create_object(env, &obj);
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, js_watch_stop, NULL, &stop);
  set_prop(env, obj, "stop", stop);
  napi_value ref;
  napi_create_function(env, "ref", NAPI_AUTO_LENGTH, js_watch_ref, NULL, &ref);
  set_prop(env, obj, "ref", ref);
  napi_wrap(env, obj, w, watch_finalize, NULL, NULL);
  return obj;
}

void sys_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "unixListen", js_unix_listen);
  export_fn(env, exports, "unixConnect", js_unix_connect);
  export_fn(env, exports, "accept", js_accept);
  export_fn(env, exports, "recvmsg", js_recvmsg);
  export_fn(env, exports, "sendmsg", js_sendmsg);
  export_fn(env, exports, "waitReadable", js_wait_readable);
  export_fn(env, exports, "close", js_close);
  export_fn(env, exports, "setNonBlocking", js_set_nonblocking);
  export_fn(env, exports, "eventfd", js_eventfd);
  export_fn(env, exports, "eventfdWrite", js_eventfd_write);
  export_fn(env, exports, "eventfdRead", js_eventfd_read);
  export_fn(env, exports, "memfdCreate", js_memfd_create);
  export_fn(env, exports, "mmapShared", js_mmap_shared);
  export_fn(env, exports, "bufferAddress", js_buffer_address);
  export_fn(env, exports, "fstatSize", js_fstat_size);
  export_fn(env, exports, "watchFd", js_watch_fd);
}
