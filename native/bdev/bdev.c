/* What every backend shares: iovec copies, opening by kind, reference counting, and the N-API
 * handle (backendOpen / backendInfo / backendFlush). The backends live in null.c, mem.c, file.c and
 * vhost_user.c. */
#include "bdev/bdev.h"
#include "sys/napi_util.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len) {
  size_t done = 0;
  for (int i = 0; i < n && done < len; i++) {
    if (skip >= iov[i].iov_len) { skip -= iov[i].iov_len; continue; }
    size_t take = iov[i].iov_len - skip;
    if (take > len - done) take = len - done;
    memcpy((char *)buf + done, (char *)iov[i].iov_base + skip, take);
    done += take; skip = 0;
  }
  return done;
}

size_t buf_to_iov(const struct iovec *iov, int n, size_t skip, const void *buf, size_t len) {
  size_t done = 0;
  for (int i = 0; i < n && done < len; i++) {
    if (skip >= iov[i].iov_len) { skip -= iov[i].iov_len; continue; }
    size_t take = iov[i].iov_len - skip;
    if (take > len - done) take = len - done;
    memcpy((char *)iov[i].iov_base + skip, (const char *)buf + done, take);
    done += take; skip = 0;
  }
  return done;
}

void iov_memset(const struct iovec *iov, int n, int c) {
  for (int i = 0; i < n; i++) memset(iov[i].iov_base, c, iov[i].iov_len);
}

/* ---- opening ------------------------------------------------------------------------------- */

int stor_backend_open(const struct stor_backend_config *cfg, struct stor_backend **out, char *err, size_t errlen) {
  if (!strcmp(cfg->kind, "null")) return stor_null_open(cfg, out, err, errlen);
  if (!strcmp(cfg->kind, "mem")) return stor_mem_open(cfg, out, err, errlen);
  if (!strcmp(cfg->kind, "file")) return stor_file_open(cfg, out, err, errlen);
  snprintf(err, errlen, "unknown backend kind '%s'", cfg->kind);
  return -EINVAL;
}

void stor_backend_put(struct stor_backend *be) {
  if (be && --be->refs == 0) be->ops->destroy(be);
}

/* ---- N-API ----------------------------------------------------------------------------------- */

struct backend_handle { struct stor_backend *be; };

static void backend_finalize(napi_env env, void *data, void *hint) {
  struct backend_handle *h = data;
  stor_backend_put(h->be);
  free(h);
}

struct stor_backend *backend_from_js(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok) {
    throw_msg(env, "expected a backend handle");
    return NULL;
  }
  struct backend_handle *h = data;
  if (!h->be) { throw_msg(env, "backend is closed"); return NULL; }
  return h->be;
}

/* backendOpen({kind, size, path, create, direct, readonly}) -> handle */
static napi_value js_backend_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend_config cfg;
  memset(&cfg, 0, sizeof cfg);
  if (!prop_str(env, argv[0], "kind", cfg.kind, sizeof cfg.kind, "") || !prop_u64(env, argv[0], "size", &cfg.size, 0) ||
      !prop_str(env, argv[0], "path", cfg.path, sizeof cfg.path, "") || !prop_bool(env, argv[0], "create", &cfg.create, false) ||
      !prop_bool(env, argv[0], "direct", &cfg.direct, false) || !prop_bool(env, argv[0], "readonly", &cfg.readonly, false))
    return NULL;
  char err[512] = "";
  struct stor_backend *be;
  int r = stor_backend_open(&cfg, &be, err, sizeof err);
  if (r < 0) {
    napi_value m, e;
    napi_create_string_utf8(env, err[0] ? err : strerror(-r), NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    set_prop(env, e, "errno", make_i32(env, -r));
    napi_throw(env, e);
    return NULL;
  }
  return backend_wrap(env, be);
}

napi_value backend_wrap(napi_env env, struct stor_backend *be) {
  struct backend_handle *h = calloc(1, sizeof *h);
  if (!h) { stor_backend_put(be); return throw_errno(env, "backend", ENOMEM); }
  h->be = be;
  napi_value ext;
  if (napi_create_external(env, h, backend_finalize, NULL, &ext) != napi_ok) { stor_backend_put(be); free(h); return NULL; }
  return ext;
}

/* backendInfo(handle) -> {kind, capacity, readonly, desc} */
static napi_value js_backend_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  napi_value o, s;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, be->ops->name, NAPI_AUTO_LENGTH, &s); set_prop(env, o, "kind", s);
  napi_create_string_utf8(env, be->desc, NAPI_AUTO_LENGTH, &s); set_prop(env, o, "desc", s);
  set_prop(env, o, "capacity", make_f64(env, (double)be->capacity));
  set_prop(env, o, "readonly", make_bool(env, be->readonly));
  return o;
}

/* backendFlush(handle) -> 0 or throws */
static napi_value js_backend_flush(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  int r = be->ops->flush(be);
  if (r < 0) return throw_errno(env, "flush", -r);
  return make_undefined(env);
}

void backend_init(napi_env env, napi_value exports) {
  export_fn(env, exports, "backendOpen", js_backend_open);
  export_fn(env, exports, "backendInfo", js_backend_info);
  export_fn(env, exports, "backendFlush", js_backend_flush);
}
