/* What an export's queue thread turns on before it sleeps: the queue loop's arm callback, one policy
 * for the vhost-user-blk and VDUSE exports.
 *   1. The backend, while it has requests in flight: some backends signal their completion fd only
 *      when asked to (the vhost-user client, which reaping without waiting turns off again). Sleeping
 *      on that fd unarmed waits for a kick that never comes: the driver is waiting for the completion.
 *   2. The driver's kicks — unless requests wait for room in a full backend: then only the backend's
 *      next completion can give that room, and new requests stay in the ring until it does.
 * Returns > 0 when work arrived or completed while arming (do not sleep), else 0. */
#ifndef STOR_EXPORT_ARM_H
#define STOR_EXPORT_ARM_H
#include "bdev/bdev.h"
#include "virtio/vring.h"
#include <stdbool.h>

static inline int stor_export_arm(const struct stor_backend_ops *ops, struct stor_bqueue *bq, struct vring *vr,
                                  bool has_kick, bool waiting_for_room) {
  if (ops->arm && ops->inflight(bq) && ops->arm(bq) > 0) return 1;
  if (waiting_for_room || !has_kick) return 0;
  return vring_enable_kicks(vr);
}
#endif
