/* Module entry: every native piece registers its functions here. */
#include "sys/napi_util.h"
#include "sys/sys.h"
#include "bdev/bdev.h"
#include "sys/guard.h"

void vhost_blk_init(napi_env env, napi_value exports);
void vu_client_init(napi_env env, napi_value exports);
void bench_init(napi_env env, napi_value exports);
void client_init(napi_env env, napi_value exports);
void copy_init(napi_env env, napi_value exports);
void vduse_blk_init(napi_env env, napi_value exports);
void ublk_init(napi_env env, napi_value exports);

static napi_value init(napi_env env, napi_value exports) {
  stor_fault_guard_install();
  sys_init(env, exports);
  backend_init(env, exports);
  vhost_blk_init(env, exports);
  vu_client_init(env, exports);
  bench_init(env, exports);
  client_init(env, exports);
  copy_init(env, exports);
  vduse_blk_init(env, exports);
  ublk_init(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
