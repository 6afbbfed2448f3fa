{
  "targets": [
    {
      "target_name": "stor",
      "sources": [
        "addon.c",
        "sys/napi_util.c", "sys/sys.c", "sys/guard.c", "sys/iov.c",
        "bdev/bdev.c", "bdev/null.c", "bdev/mem.c", "bdev/file.c", "bdev/image_lock.c", "bdev/vhost_user.c",
        "bdev/fault.c",
        "bdev/rbd.c",
        "virtio/vring.c", "virtio/virtio_blk.c",
        "virtio/inflight.c",
        "export/queue_loop.c", "export/vhost_user_blk.c",
        "export/vduse_blk.c",
        "export/ublk.c",
        "export/js_events.c",
        "virtio/virtq_serve.c", "export/virtq_thread.c",
        "engine/client.c", "engine/copy.c", "engine/bench.c"
      ],
      "include_dirs": ["."],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
      "cflags_c": ["-std=gnu11"],
      "libraries": ["-luring", "-lpthread", "-ldl"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
