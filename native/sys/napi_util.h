/* Small helpers that keep N-API boilerplate out of the real code. */
#ifndef STOR_NAPI_UTIL_H
#define STOR_NAPI_UTIL_H
#include <node_api.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <errno.h>

#define NAPI_CALL(env, call)                                                                                           \
  do {                                                                                                                 \
    if ((call) != napi_ok) {                                                                                           \
      const napi_extended_error_info *ei_;                                                                             \
      napi_get_last_error_info((env), &ei_);                                                                           \
      bool pending_;                                                                                                   \
      napi_is_exception_pending((env), &pending_);                                                                     \
      if (!pending_) napi_throw_error((env), NULL, ei_ && ei_->error_message ? ei_->error_message : #call);            \
      return NULL;                                                                                                     \
    }                                                                                                                  \
  } while (0)

#define GET_ARGS(env, info, n)                                                                                         \
  size_t argc = (n);                                                                                                   \
  napi_value argv[(n) > 0 ? (n) : 1];                                                                                  \
  napi_value this_arg;                                                                                                 \
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL))

/* Throws an Error whose message is "what: strerror(err)" and whose .errno is err. */
napi_value throw_errno(napi_env env, const char *what, int err);
napi_value throw_msg(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

bool arg_i32(napi_env env, napi_value v, int32_t *out);
bool arg_u32(napi_env env, napi_value v, uint32_t *out);
bool arg_i64(napi_env env, napi_value v, int64_t *out);
/* Accepts a Number or a BigInt. */
bool arg_u64(napi_env env, napi_value v, uint64_t *out);
bool arg_bool(napi_env env, napi_value v, bool *out);
/* Copies a string argument into buf (NUL-terminated); false if not a string or too long. */
bool arg_str(napi_env env, napi_value v, char *buf, size_t len);
bool arg_buffer(napi_env env, napi_value v, void **data, size_t *len);

napi_value make_i32(napi_env env, int32_t v);
napi_value make_u32(napi_env env, uint32_t v);
napi_value make_f64(napi_env env, double v);
napi_value make_u64(napi_env env, uint64_t v); /* BigInt */
napi_value make_bool(napi_env env, bool v);
napi_value make_undefined(napi_env env);
napi_value make_null(napi_env env);

/* Object property helpers; return false and leave an exception pending on failure. */
bool get_prop(napi_env env, napi_value obj, const char *name, napi_value *out, bool *present);
bool set_prop(napi_env env, napi_value obj, const char *name, napi_value v);
bool prop_u64(napi_env env, napi_value obj, const char *name, uint64_t *out, uint64_t dflt);
bool prop_u32(napi_env env, napi_value obj, const char *name, uint32_t *out, uint32_t dflt);
bool prop_i32(napi_env env, napi_value obj, const char *name, int32_t *out, int32_t dflt);
bool prop_bool(napi_env env, napi_value obj, const char *name, bool *out, bool dflt);
bool prop_str(napi_env env, napi_value obj, const char *name, char *buf, size_t len, const char *dflt);

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

/* Native handles handed to JavaScript are externals tagged with their kind (napi_type_tag_object), so
 * a handle of one kind passed where another is expected is a TypeError, never a reinterpretation. */
enum stor_handle_kind {
  STOR_HANDLE_BACKEND,
  STOR_HANDLE_BLK_DEVICE,
  STOR_HANDLE_CLIENT_QUEUE,
  STOR_HANDLE_VDUSE_DEVICE,
  STOR_HANDLE_UBLK_SERVER,
  STOR_HANDLE_KINDS
};
/* An external holding data, tagged as kind; NULL with an exception pending on failure. */
napi_value make_handle(napi_env env, enum stor_handle_kind kind, void *data, napi_finalize finalize);
/* The data of a handle of this kind; NULL and a pending TypeError ("expected a <what> handle") if v is
 * anything else. */
void *handle_arg(napi_env env, napi_value v, enum stor_handle_kind kind, const char *what);

/* Queues a long-running native job (execute runs on a libuv worker, complete on the JS thread) and
 * returns {promise, progress()}: progress is called with `data`, which lives until progress is
 * garbage-collected (then finalize frees it), so reading it after the job settled is safe. `*running`
 * holds progress alive while the worker thread may still touch `data` (a caller that drops the
 * returned object at once must not let the collector free the job under the thread): `complete` must
 * release it with napi_delete_reference. */
napi_value start_job(napi_env env, const char *name, napi_async_execute_callback execute,
                     napi_async_complete_callback complete, void *data, napi_async_work *work, napi_deferred *deferred,
                     napi_ref *running, napi_callback progress, napi_finalize finalize);
#endif
