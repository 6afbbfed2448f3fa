/* The few librados/librbd C functions the rbd backend calls, declared here as function-pointer types
 * and loaded with dlopen when an rbd: backend is first opened. Why not #include <rbd/librbd.h> and
 * link -lrbd: the addon must build and run on machines without Ceph (librbd-dev is not a build
 * dependency, librbd1 is not a runtime one); only opening an rbd: backend needs librbd.so.1, and its
 * absence is then one clear error instead of an addon that fails to load. The declarations follow
 * Ceph's librados.h / librbd.h (stable C ABI since Luminous; rbd_aio_write_zeroes since Octopus, and
 * optional here). */
#ifndef STOR_RBD_API_H
#define STOR_RBD_API_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef void *rados_t;
typedef void *rados_ioctx_t;
typedef void *rbd_image_t;
typedef void *rbd_completion_t;
typedef void (*rbd_callback_t)(rbd_completion_t c, void *arg);

/* librbd.h's rbd_image_info_t (layout fixed by the ABI; rbd_stat takes its size as a check) */
typedef struct {
  uint64_t size;
  uint64_t obj_size;
  uint64_t num_objs;
  int order;
  char block_name_prefix[24];
  int64_t parent_pool;
  char parent_name[96];
} stor_rbd_image_info;

/* librbd.h's rbd_image_watcher_t */
typedef struct {
  char *addr;
  int64_t id;
  uint64_t cookie;
} stor_rbd_image_watcher;

#define STOR_RBD_LOCK_MODE_EXCLUSIVE    0
#define STOR_RBD_FEATURE_EXCLUSIVE_LOCK (1ull << 2)

struct stor_rbd_api {
  /* librados */
  int (*rados_create)(rados_t *cluster, const char *id);
  int (*rados_conf_read_file)(rados_t cluster, const char *path);
  int (*rados_conf_parse_env)(rados_t cluster, const char *var);
  int (*rados_conf_set)(rados_t cluster, const char *option, const char *value);
  int (*rados_conf_get)(rados_t cluster, const char *option, char *buf, size_t len);
  int (*rados_connect)(rados_t cluster);
  void (*rados_shutdown)(rados_t cluster);
  int (*rados_ioctx_create)(rados_t cluster, const char *pool, rados_ioctx_t *io);
  void (*rados_ioctx_destroy)(rados_ioctx_t io);
  void (*rados_ioctx_set_namespace)(rados_ioctx_t io, const char *nspace);
  /* librbd: images */
  int (*rbd_create)(rados_ioctx_t io, const char *name, uint64_t size, int *order);
  int (*rbd_open)(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap);
  int (*rbd_open_read_only)(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap);
  int (*rbd_close)(rbd_image_t image);
  int (*rbd_stat)(rbd_image_t image, stor_rbd_image_info *info, size_t infosize);
  int (*rbd_get_features)(rbd_image_t image, uint64_t *features);
  int (*rbd_snap_set)(rbd_image_t image, const char *snap);
  int (*rbd_flush)(rbd_image_t image);
  int (*rbd_lock_acquire)(rbd_image_t image, int lock_mode);
  int (*rbd_lock_release)(rbd_image_t image);
  int (*rbd_lock_get_owners)(rbd_image_t image, int *lock_mode, char **owners, size_t *max_owners);
  void (*rbd_lock_get_owners_cleanup)(char **owners, size_t n);
  /* NULL before Mimic: every lock owner then counts as alive */
  int (*rbd_watchers_list)(rbd_image_t image, stor_rbd_image_watcher *watchers, size_t *max_watchers);
  void (*rbd_watchers_list_cleanup)(stor_rbd_image_watcher *watchers, size_t n);
  /* librbd: asynchronous I/O */
  int (*rbd_aio_create_completion)(void *arg, rbd_callback_t cb, rbd_completion_t *c);
  ssize_t (*rbd_aio_get_return_value)(rbd_completion_t c);
  void (*rbd_aio_release)(rbd_completion_t c);
  int (*rbd_aio_readv)(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, rbd_completion_t c);
  int (*rbd_aio_writev)(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, rbd_completion_t c);
  int (*rbd_aio_flush)(rbd_image_t image, rbd_completion_t c);
  int (*rbd_aio_discard)(rbd_image_t image, uint64_t off, uint64_t len, rbd_completion_t c);
  /* NULL when librbd is older than Octopus: write-zeroes is then not offered */
  int (*rbd_aio_write_zeroes)(rbd_image_t image, uint64_t off, size_t len, rbd_completion_t c, int zero_flags,
                              int op_flags);
};

#endif
