/* What every backend shares: the driver registry (open by name with key=value properties, each driver
 * parsing its own), property value parsing, reference counting, and the N-API handle
 * (bdevOpen / bdevProperties / bdevDrivers / backendInfo / backendFlush / backendClose). The backends live in null.c,
 * mem.c, file.c, vhost_user.c and rbd.c. */
#include "bdev/bdev.h"
#include "sys/napi_util.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- opening ------------------------------------------------------------------------------- */

/* ---- the registry: one descriptor per driver, each in its own file ------------------------------ */

static const struct stor_bdev_driver *const drivers[] = {
    &stor_null_driver, &stor_mem_driver, &stor_file_driver, &stor_vhost_user_driver, &stor_rbd_driver,
};
#define NDRIVERS (sizeof drivers / sizeof drivers[0])

const struct stor_bdev_driver *const *stor_bdev_drivers(size_t *n) {
  *n = NDRIVERS;
  return drivers;
}

int stor_bdev_registry_check(char *err, size_t errlen) {
  for (size_t i = 0; i < NDRIVERS; i++) {
    if (drivers[i]->ops_version != STOR_BDEV_OPS_V1) {
      snprintf(err, errlen, "backend driver %s was built for ops version %u, this build has %u", drivers[i]->name,
               drivers[i]->ops_version, STOR_BDEV_OPS_V1);
      return -EPROTO;
    }
  }
  return 0;
}

int stor_bdev_open(const char *driver, const struct stor_kv *props, size_t n, struct stor_backend **out, char *err,
                   size_t errlen) {
  const struct stor_bdev_driver *d = NULL;
  for (size_t i = 0; i < NDRIVERS; i++)
    if (!strcmp(drivers[i]->name, driver)) d = drivers[i];
  if (!d || !d->open) {
    char names[128] = "";
    for (size_t i = 0; i < NDRIVERS; i++) {
      if (!drivers[i]->open) continue;
      size_t l = strlen(names);
      snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", drivers[i]->name);
    }
    snprintf(err, errlen,
             d ? "'%s' backends are opened by the client library, not by name (accepted: %s)"
               : "'%s' is not a backend driver (accepted: %s)",
             driver, names);
    return -EINVAL;
  }
  /* fault-injection properties (fault.c) are every driver's: the driver sees the others */
  struct stor_kv inner_kv[64] = {{0}}, fault_kv[16];
  size_t ninner = 0, nfault = 0;
  for (size_t i = 0; i < n; i++) {
    bool fk = stor_fault_key(props[i].key);
    if ((fk ? nfault >= 16 : ninner >= 64)) {
      snprintf(err, errlen, "%s: too many properties", driver);
      return -EINVAL;
    }
    if (fk)
      fault_kv[nfault++] = props[i];
    else
      inner_kv[ninner++] = props[i];
  }
  struct stor_backend *be = NULL;
  int r = d->open(inner_kv, ninner, &be, err, errlen);
  if (r < 0) return r;
  if (nfault && be->ops && be->ops->version == STOR_BDEV_OPS_V1) {
    struct stor_backend *wrapped;
    be->refs = 1;
    r = stor_fault_wrap(be, fault_kv, nfault, &wrapped, err, errlen);
    if (r < 0) {
      stor_backend_put(be);
      return r;
    }
    be = wrapped;
  }
  if (!be->ops || be->ops->version != STOR_BDEV_OPS_V1) {
    snprintf(err, errlen, "backend driver %s returned an ops table of another version", d->name);
    be->refs = 1;
    stor_backend_put(be);
    return -EPROTO;
  }
  be->refs = 1;
  *out = be;
  return 0;
}

void stor_bdev_props_default(struct stor_bdev_props *p, uint64_t capacity, bool readonly) {
  memset(p, 0, sizeof *p);
  p->capacity = capacity;
  p->block_size = 512;
  p->buf_alignment = 1;
  p->optimal_io_alignment = 512;
  p->optimal_io_size = 0;
  p->max_transfer = 0;
  p->max_segments = 1024; /* IOV_MAX */
  p->max_queues = 64;
  p->readonly = readonly;
  p->can_discard = !readonly;
  p->can_write_zeroes = !readonly;
  p->discard_alignment = 512;
  p->max_discard_len = 0;
  p->max_write_zeroes_len = 0;
}

/* ---- property values ---------------------------------------------------------------------------- */

/* Sizes are binary, as everywhere in stor: 4096, 4k, 4K, 4KiB, 64M, 1G, 1GiB, 512MiB, 1T (KB/MB mean
 * the same binary units). */
int stor_kv_size(const char *driver, const struct stor_kv *kv, uint64_t *out, char *err, size_t errlen) {
  const char *p = kv->value ? kv->value : "";
  const char *s = p;
  unsigned long long whole = 0;
  int digits = 0;
  while (*s >= '0' && *s <= '9') {
    if (whole > (UINT64_MAX - 9) / 10) goto bad;
    whole = whole * 10 + (unsigned)(*s++ - '0');
    digits++;
  }
  unsigned long long frac_num = 0, frac_den = 1;
  if (*s == '.') {
    s++;
    while (*s >= '0' && *s <= '9') {
      if (frac_den >= 1000000000000ull) goto bad;
      frac_num = frac_num * 10 + (unsigned)(*s++ - '0');
      frac_den *= 10;
      digits++;
    }
  }
  if (!digits) goto bad;
  unsigned shift = 0;
  switch (*s | 0x20) {
  case 'k':
    shift = 10;
    s++;
    break;
  case 'm':
    shift = 20;
    s++;
    break;
  case 'g':
    shift = 30;
    s++;
    break;
  case 't':
    shift = 40;
    s++;
    break;
  case 'p':
    shift = 50;
    s++;
    break;
  case 'b': break;
  default:
    if (*s) goto bad;
  }
  if ((*s | 0x20) == 'i') s++;
  if ((*s | 0x20) == 'b') s++;
  if (*s) goto bad;
  if (shift && whole > (UINT64_MAX >> shift)) goto bad;
  uint64_t v = (uint64_t)whole << shift;
  if (frac_num) {
    unsigned __int128 f = ((unsigned __int128)frac_num << shift);
    if (f % frac_den) goto bad; /* not a whole number of bytes */
    v += (uint64_t)(f / frac_den);
  }
  *out = v;
  return 0;
bad:
  snprintf(err, errlen,
           "%s: %s=%s: not a size (accepted: a byte count or a number with k, M, G, T, binary; "
           "KiB/MiB/GiB also accepted, e.g. 4k, 64M, 1GiB)",
           driver, kv->key, p);
  return -EINVAL;
}

int stor_kv_bool(const char *driver, const struct stor_kv *kv, bool *out, char *err, size_t errlen) {
  const char *v = kv->value;
  if (!v || !strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) {
    *out = true;
    return 0;
  }
  if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) {
    *out = false;
    return 0;
  }
  snprintf(err, errlen, "%s: %s=%s: expected on or off", driver, kv->key, v);
  return -EINVAL;
}

int stor_kv_u32(const char *driver, const struct stor_kv *kv, uint32_t *out, char *err, size_t errlen) {
  const char *v = kv->value ? kv->value : "";
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (!*v || *end || errno || n > UINT32_MAX || *v == '-') {
    snprintf(err, errlen, "%s: %s=%s: expected a whole number", driver, kv->key, v);
    return -EINVAL;
  }
  *out = (uint32_t)n;
  return 0;
}

int stor_kv_unknown(const struct stor_bdev_driver *d, const struct stor_kv *kv, char *err, size_t errlen) {
  char names[256] = "";
  for (const struct stor_bdev_prop_help *p = d->props; p && p->name; p++) {
    size_t l = strlen(names);
    snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", p->name);
  }
  snprintf(err, errlen, "%s: unknown property '%s' (accepted: %s)", d->name, kv->key, names);
  return -EINVAL;
}

void stor_backend_put(struct stor_backend *be) {
  if (be && --be->refs == 0) be->ops->destroy(be);
}

/* ---- N-API ----------------------------------------------------------------------------------- */

struct backend_handle {
  struct stor_backend *be;
};

static void backend_finalize(napi_env env, void *data, void *hint) {
  struct backend_handle *h = data;
  if (h->be) stor_backend_put(h->be);
  free(h);
}

struct stor_backend *backend_from_js(napi_env env, napi_value v) {
  struct backend_handle *h = handle_arg(env, v, STOR_HANDLE_BACKEND, "backend");
  if (!h) return NULL;
  if (!h->be) {
    throw_msg(env, "backend is closed");
    return NULL;
  }
  return h->be;
}

/* Reads a JS object of properties into key=value pairs (values coerced to strings). On success returns
 * the pair count and the strings to free with kv_strings_free; on failure an exception is pending and
 * -1 is returned. `who` names the caller in messages. */
int kv_from_js(napi_env env, napi_value obj, const char *who, struct stor_kv *kv, uint32_t max,
               struct kv_strings *owned) {
  napi_value keys;
  uint32_t n = 0;
  napi_valuetype t;
  owned->count = 0;
  if (napi_typeof(env, obj, &t) != napi_ok || t != napi_object || napi_get_property_names(env, obj, &keys) != napi_ok ||
      napi_get_array_length(env, keys, &n) != napi_ok) {
    throw_msg(env, "%s: props must be an object of strings", who);
    return -1;
  }
  if (n > max || n > KV_MAX) {
    throw_msg(env, "%s: at most %u properties", who, max < KV_MAX ? max : KV_MAX);
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value k, v, vs;
    napi_get_element(env, keys, i, &k);
    napi_get_property(env, obj, k, &v);
    if (napi_coerce_to_string(env, v, &vs) != napi_ok) goto fail;
    napi_value both[2] = {k, vs};
    for (int w = 0; w < 2; w++) {
      size_t len;
      if (napi_get_value_string_utf8(env, both[w], NULL, 0, &len) != napi_ok) {
        throw_msg(env, "%s: property names and values must be strings", who);
        goto fail;
      }
      char *buf = malloc(len + 1);
      if (!buf) {
        throw_errno(env, who, ENOMEM);
        goto fail;
      }
      napi_get_value_string_utf8(env, both[w], buf, len + 1, &len);
      owned->s[owned->count++] = buf;
    }
    kv[i].key = owned->s[owned->count - 2];
    kv[i].value = owned->s[owned->count - 1];
  }
  return (int)n;
fail:
  kv_strings_free(owned);
  return -1;
}

void kv_strings_free(struct kv_strings *owned) {
  for (unsigned i = 0; i < owned->count; i++) free(owned->s[i]);
  owned->count = 0;
}

/* bdevOpen(driver, {key: value, ...}) -> handle. A bad property throws an Error with errno EINVAL and
 * .property naming it. */
static napi_value js_bdev_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  char driver[32];
  if (!arg_str(env, argv[0], driver, sizeof driver))
    return throw_msg(env, "bdevOpen(driver, props): driver must be a short string");
  struct stor_kv kv[KV_MAX];
  struct kv_strings strings;
  int got = kv_from_js(env, argv[1], "bdevOpen(driver, props)", kv, KV_MAX, &strings);
  if (got < 0) return NULL;
  uint32_t n = (uint32_t)got;
  napi_value result = NULL;
  char err[512] = "";
  struct stor_backend *be;
  int r = stor_bdev_open(driver, kv, n, &be, err, sizeof err);
  if (r < 0) {
    napi_value m, e;
    napi_create_string_utf8(env, err[0] ? err : strerror(-r), NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    set_prop(env, e, "errno", make_i32(env, -r));
    /* "driver: key=value: why" or "driver: unknown property 'key'": name the property for the caller */
    if (r == -EINVAL) {
      for (uint32_t i = 0; i < n; i++) {
        /* "driver: key..." or, for the fault-injection properties, "fault: key..." */
        const char *who = stor_fault_key(kv[i].key) ? "fault" : driver;
        size_t kl = strlen(kv[i].key), dl = strlen(who);
        bool named = !strncmp(err, who, dl) && err[dl] == ':' && err[dl + 1] == ' ' &&
                     (!strncmp(err + dl + 2, kv[i].key, kl) && (err[dl + 2 + kl] == '=' || err[dl + 2 + kl] == ':'));
        char quoted[80];
        snprintf(quoted, sizeof quoted, "'%s'", kv[i].key);
        if (named || strstr(err, quoted)) {
          napi_value s;
          napi_create_string_utf8(env, kv[i].key, NAPI_AUTO_LENGTH, &s);
          set_prop(env, e, "property", s);
          break;
        }
      }
      napi_value s;
      napi_create_string_utf8(env, "EINVAL", NAPI_AUTO_LENGTH, &s);
      set_prop(env, e, "code", s);
    }
    napi_throw(env, e);
    goto out;
  }
  result = backend_wrap(env, be);
out:
  kv_strings_free(&strings);
  return result;
}

napi_value backend_wrap(napi_env env, struct stor_backend *be) {
  struct backend_handle *h = calloc(1, sizeof *h);
  if (!h) {
    stor_backend_put(be);
    return throw_errno(env, "backend", ENOMEM);
  }
  h->be = be;
  napi_value ext = make_handle(env, STOR_HANDLE_BACKEND, h, backend_finalize);
  if (!ext) {
    stor_backend_put(be);
    free(h);
    return NULL;
  }
  return ext;
}

/* backendInfo(handle) -> {kind, capacity, readonly, desc} (a short form of bdevProperties) */
static napi_value js_backend_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  napi_value o, s;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, be->ops->name, NAPI_AUTO_LENGTH, &s);
  set_prop(env, o, "kind", s);
  napi_create_string_utf8(env, be->desc, NAPI_AUTO_LENGTH, &s);
  set_prop(env, o, "desc", s);
  set_prop(env, o, "capacity", make_f64(env, (double)be->props.capacity));
  set_prop(env, o, "readonly", make_bool(env, be->props.readonly));
  return o;
}

/* bdevProperties(handle) -> every property the backend reports (libblkio's names, camelCase). */
static napi_value js_bdev_properties(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct stor_backend *be = backend_from_js(env, argv[0]);
  if (!be) return NULL;
  const struct stor_bdev_props *p = &be->props;
  napi_value o, s;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, be->ops->name, NAPI_AUTO_LENGTH, &s);
  set_prop(env, o, "driver", s);
  napi_create_string_utf8(env, be->desc, NAPI_AUTO_LENGTH, &s);
  set_prop(env, o, "desc", s);
  set_prop(env, o, "capacity", make_f64(env, (double)p->capacity));
  set_prop(env, o, "requestAlignment", make_u32(env, p->block_size));
  set_prop(env, o, "bufAlignment", make_u32(env, p->buf_alignment));
  set_prop(env, o, "optimalIoAlignment", make_u32(env, p->optimal_io_alignment));
  set_prop(env, o, "optimalIoSize", make_u32(env, p->optimal_io_size));
  set_prop(env, o, "maxTransfer", make_f64(env, (double)p->max_transfer));
  set_prop(env, o, "maxSegments", make_u32(env, p->max_segments));
  set_prop(env, o, "maxQueues", make_u32(env, p->max_queues));
  set_prop(env, o, "readOnly", make_bool(env, p->readonly));
  set_prop(env, o, "canDiscard", make_bool(env, p->can_discard));
  set_prop(env, o, "remote", make_bool(env, p->remote));
  set_prop(env, o, "canWriteZeroes", make_bool(env, p->can_write_zeroes));
  set_prop(env, o, "discardAlignment", make_u32(env, p->discard_alignment));
  set_prop(env, o, "maxDiscardLength", make_f64(env, (double)p->max_discard_len));
  set_prop(env, o, "maxWriteZeroesLength", make_f64(env, (double)p->max_write_zeroes_len));
  set_prop(env, o, "maxMemRegions", make_u32(env, p->max_mem_regions));
  set_prop(env, o, "needsMemRegions", make_bool(env, p->needs_mem_regions));
  set_prop(env, o, "virtioFeatures", make_u64(env, p->virtio_features));
  return o;
}

/* bdevDrivers() -> [{name, help, openable, properties: [{name, help}]}] */
static napi_value js_bdev_drivers(napi_env env, napi_callback_info info) {
  size_t n;
  const struct stor_bdev_driver *const *ds = stor_bdev_drivers(&n);
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (size_t i = 0; i < n; i++) {
    napi_value o, s, props;
    napi_create_object(env, &o);
    napi_create_string_utf8(env, ds[i]->name, NAPI_AUTO_LENGTH, &s);
    set_prop(env, o, "name", s);
    napi_create_string_utf8(env, ds[i]->help, NAPI_AUTO_LENGTH, &s);
    set_prop(env, o, "help", s);
    set_prop(env, o, "openable", make_bool(env, ds[i]->open != NULL));
    napi_create_array(env, &props);
    uint32_t k = 0;
    for (const struct stor_bdev_prop_help *p = ds[i]->props; p && p->name; p++) {
      napi_value po;
      napi_create_object(env, &po);
      napi_create_string_utf8(env, p->name, NAPI_AUTO_LENGTH, &s);
      set_prop(env, po, "name", s);
      napi_create_string_utf8(env, p->help, NAPI_AUTO_LENGTH, &s);
      set_prop(env, po, "help", s);
      napi_set_element(env, props, k++, po);
    }
    set_prop(env, o, "properties", props);
    napi_set_element(env, arr, (uint32_t)i, o);
  }
  return arr;
}

/* backendClose(handle): drops the handle's reference now rather than at garbage collection, so a
 * closed device gives its file (and the file's image locks) back at once. Queues, jobs and exports
 * still using the backend hold their own references; the handle is unusable afterwards. */
static napi_value js_backend_close(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  struct backend_handle *h = handle_arg(env, argv[0], STOR_HANDLE_BACKEND, "backend");
  if (!h) return NULL;
  if (h->be) {
    stor_backend_put(h->be);
    h->be = NULL;
  }
  return make_undefined(env);
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
  char err[160];
  if (stor_bdev_registry_check(err, sizeof err) < 0) {
    napi_throw_error(env, NULL, err);
    return;
  }
  export_fn(env, exports, "bdevOpen", js_bdev_open);
  export_fn(env, exports, "bdevProperties", js_bdev_properties);
  export_fn(env, exports, "bdevDrivers", js_bdev_drivers);
  export_fn(env, exports, "backendInfo", js_backend_info);
  export_fn(env, exports, "backendFlush", js_backend_flush);
  export_fn(env, exports, "backendClose", js_backend_close);
  fault_napi_init(env, exports);
}
