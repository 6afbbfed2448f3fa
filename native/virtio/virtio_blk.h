/* virtio-blk request layout (virtio 1.x, 5.2). Shared by every frontend that speaks virtio-blk
 * (vhost-user-blk now, VDUSE later). */
#ifndef STOR_VIRTIO_BLK_H
#define STOR_VIRTIO_BLK_H
#include <stdint.h>

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

struct virtio_blk_outhdr { uint32_t type; uint32_t ioprio; uint64_t sector; };
struct virtio_blk_discard_write_zeroes { uint64_t sector; uint32_t num_sectors; uint32_t flags; };

#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#endif
