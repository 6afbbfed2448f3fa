{
  "targets": [
    {
      "target_name": "stor",
      "sources": ["addon.c", "napi_util.c", "sys.c", "backend.c", "vring.c", "vhost_blk.c", "vu_client.c", "bench.c", "guard.c", "client.c", "copy.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
      "cflags_c": ["-std=gnu11"],
      "libraries": ["-luring", "-lpthread"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
