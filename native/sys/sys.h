#ifndef STOR_SYS_H
#define STOR_SYS_H
#include <node_api.h>
void sys_init(napi_env env, napi_value exports);
#endif
