#include "sys/napi_util.h"
#include <stdarg.h>
#include <stdio.h>

napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value m, e, code;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &code);
  napi_set_named_property(env, e, "errno", code);
  napi_throw(env, e);
  return NULL;
}

napi_value throw_msg(napi_env env, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_error(env, NULL, msg);
  return NULL;
}

bool arg_i32(napi_env env, napi_value v, int32_t *out) { return napi_get_value_int32(env, v, out) == napi_ok; }
bool arg_u32(napi_env env, napi_value v, uint32_t *out) { return napi_get_value_uint32(env, v, out) == napi_ok; }
bool arg_i64(napi_env env, napi_value v, int64_t *out) { return napi_get_value_int64(env, v, out) == napi_ok; }
bool arg_u64(napi_env env, napi_value v, uint64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_bigint) {
    bool lossless;
    return napi_get_value_bigint_uint64(env, v, out, &lossless) == napi_ok && lossless;
  }
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > 9007199254740991.0 || d != (double)(uint64_t)d)
    return false;
  *out = (uint64_t)d;
  return true;
}
bool arg_bool(napi_env env, napi_value v, bool *out) { return napi_get_value_bool(env, v, out) == napi_ok; }
bool arg_str(napi_env env, napi_value v, char *buf, size_t len) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok || n + 1 > len) return false;
  return napi_get_value_string_utf8(env, v, buf, len, &n) == napi_ok;
}
bool arg_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) == napi_ok && is) return napi_get_buffer_info(env, v, data, len) == napi_ok;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type t;
    size_t n;
    napi_value ab;
    size_t off;
    if (napi_get_typedarray_info(env, v, &t, &n, data, &ab, &off) != napi_ok) return false;
    *len = n * (t == napi_uint8_array || t == napi_int8_array || t == napi_uint8_clamped_array ? 1 : 0);
    return t == napi_uint8_array || t == napi_int8_array || t == napi_uint8_clamped_array;
  }
  return false;
}

napi_value make_i32(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}
napi_value make_u32(napi_env env, uint32_t v) {
  napi_value r;
  napi_create_uint32(env, v, &r);
  return r;
}
napi_value make_f64(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}
napi_value make_u64(napi_env env, uint64_t v) {
  napi_value r;
  napi_create_bigint_uint64(env, v, &r);
  return r;
}
napi_value make_bool(napi_env env, bool v) {
  napi_value r;
  napi_get_boolean(env, v, &r);
  return r;
}
napi_value make_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}
napi_value make_null(napi_env env) {
  napi_value r;
  napi_get_null(env, &r);
  return r;
}

bool get_prop(napi_env env, napi_value obj, const char *name, napi_value *out, bool *present) {
  bool has = false;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok) return false;
  *present = false;
  if (!has) return true;
  if (napi_get_named_property(env, obj, name, out) != napi_ok) return false;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  *present = t != napi_undefined && t != napi_null;
  return true;
}
bool set_prop(napi_env env, napi_value obj, const char *name, napi_value v) {
  return napi_set_named_property(env, obj, name, v) == napi_ok;
}
#define PROP_GETTER(fn, type, conv, desc)                                                                              \
  bool fn(napi_env env, napi_value obj, const char *name, type *out, type dflt) {                                      \
    napi_value v;                                                                                                      \
    bool present;                                                                                                      \
    if (!get_prop(env, obj, name, &v, &present)) return false;                                                         \
    if (!present) {                                                                                                    \
      *out = dflt;                                                                                                     \
      return true;                                                                                                     \
    }                                                                                                                  \
    if (!conv(env, v, out)) {                                                                                          \
      throw_msg(env, "option %s: expected " desc, name);                                                               \
      return false;                                                                                                    \
    }                                                                                                                  \
    return true;                                                                                                       \
  }
PROP_GETTER(prop_u64, uint64_t, arg_u64, "a non-negative integer")
PROP_GETTER(prop_u32, uint32_t, arg_u32, "a 32-bit unsigned integer")
PROP_GETTER(prop_i32, int32_t, arg_i32, "a 32-bit integer")
PROP_GETTER(prop_bool, bool, arg_bool, "a boolean")
bool prop_str(napi_env env, napi_value obj, const char *name, char *buf, size_t len, const char *dflt) {
  napi_value v;
  bool present;
  if (!get_prop(env, obj, name, &v, &present)) return false;
  if (!present) {
    snprintf(buf, len, "%s", dflt ? dflt : "");
    return true;
  }
  if (!arg_str(env, v, buf, len)) {
    throw_msg(env, "option %s: expected a string shorter than %zu bytes", name, len);
    return false;
  }
  return true;
}

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

napi_value start_job(napi_env env, const char *name, napi_async_execute_callback execute,
                     napi_async_complete_callback complete, void *data, napi_async_work *work, napi_deferred *deferred,
                     napi_ref *running, napi_callback progress, napi_finalize finalize) {
  napi_value promise, resource_name, res, progress_fn;
  NAPI_CALL(env, napi_create_promise(env, deferred, &promise));
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  NAPI_CALL(env, napi_create_async_work(env, NULL, resource_name, execute, complete, data, work));
  NAPI_CALL(env, napi_queue_async_work(env, *work));
  napi_create_object(env, &res);
  set_prop(env, res, "promise", promise);
  napi_create_function(env, "progress", NAPI_AUTO_LENGTH, progress, data, &progress_fn);
  napi_add_finalizer(env, progress_fn, data, finalize, NULL, NULL);
  napi_create_reference(env, progress_fn, 1, running);
  set_prop(env, res, "progress", progress_fn);
  return res;
}

/* One random 128-bit tag per kind of handle. */
static const napi_type_tag handle_tags[STOR_HANDLE_KINDS] = {
    [STOR_HANDLE_BACKEND] = {0x73746f7262646576ull, 0x9b1c54a0e2d34f11ull},
    [STOR_HANDLE_BLK_DEVICE] = {0x73746f72626c6b64ull, 0x4e7a2b90c1f86d23ull},
    [STOR_HANDLE_CLIENT_QUEUE] = {0x73746f72636c7471ull, 0x2d6f18b3a7e95c47ull},
    [STOR_HANDLE_VDUSE_DEVICE] = {0x73746f7276647573ull, 0x61d3c8e05b9f2a74ull},
    [STOR_HANDLE_UBLK_SERVER] = {0x73746f7275626c6bull, 0x61c3e5f2094b7d18ull},
};

napi_value make_handle(napi_env env, enum stor_handle_kind kind, void *data, napi_finalize finalize) {
  napi_value ext;
  if (napi_create_external(env, data, finalize, NULL, &ext) != napi_ok) return NULL;
  if (napi_type_tag_object(env, ext, &handle_tags[kind]) != napi_ok) return NULL;
  return ext;
}

void *handle_arg(napi_env env, napi_value v, enum stor_handle_kind kind, const char *what) {
  napi_valuetype t;
  bool tagged = false;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, &handle_tags[kind], &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &data) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "expected a %s handle", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
  }
  return data;
}
