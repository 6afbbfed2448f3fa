#ifndef STOR_BACKEND_H
#define STOR_BACKEND_H
#include "req.h"
#include <node_api.h>

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

/* N-API: backendOpen(config) -> external, backendInfo(b), backendClose(b). */
void backend_init(napi_env env, napi_value exports);
/* Extracts the backend from the external made by backendOpen; NULL (and a pending exception) if not one. */
struct stor_backend *backend_from_js(napi_env env, napi_value v);
/* Wraps a backend (taking over one reference) in the handle JS passes around. */
napi_value backend_wrap(napi_env env, struct stor_backend *be);
#endif
