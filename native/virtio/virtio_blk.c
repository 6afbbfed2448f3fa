/* The transport-free virtio-blk request handler (see virtio_blk.h): header and direction checks,
 * sector ranges against the capacity with overflow in mind, read-only, discard / write-zeroes
 * segments and limits, GET_ID, and the mapping to and from stor_req. Written for stor after the
 * idea of QEMU's block/export/virtio-blk-handler.c: vhost-user-blk and VDUSE share it. */
#include "virtio/virtio_blk.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SECTOR 512u

static void hlog(const struct virtio_blk_handler *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hlog(const struct virtio_blk_handler *h, const char *fmt, ...) {
  if (!h->log) return;
  char msg[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  h->log(h->log_ctx, msg);
}

static void count_status(const struct virtio_blk_handler *h, uint8_t status) {
  if (!h->stats || status == VIRTIO_BLK_S_OK) return;
  if (status == VIRTIO_BLK_S_UNSUPP)
    h->stats->unsupported++;
  else
    h->stats->errors++;
}

static enum virtio_blk_process_result finish(struct virtio_blk_req *vr, uint8_t status) {
  count_status(vr->h, status);
  vr->done(vr, status, vr->status ? vr->used_len : 0);
  return VIRTIO_BLK_REQ_DONE;
}

static const char *op_name(uint8_t op) {
  switch (op) {
  case STOR_OP_READ: return "read";
  case STOR_OP_WRITE: return "write";
  case STOR_OP_FLUSH: return "flush";
  default: return "discard/zero";
  }
}

static void on_backend_complete(struct stor_req *r) {
  struct virtio_blk_req *vr = (struct virtio_blk_req *)r; /* req is the first member */
  if (r->result < 0) {
    hlog(vr->h, "backend %s at offset %llu length %llu failed: %s", op_name(r->op), (unsigned long long)r->offset,
         (unsigned long long)r->length, strerror(-r->result));
    finish(vr, VIRTIO_BLK_S_IOERR);
  } else {
    finish(vr, VIRTIO_BLK_S_OK);
  }
}

/* [sector, sector + len) inside the capacity, with overflow in mind. */
static bool range_ok(const struct virtio_blk_handler *h, uint64_t sector, uint64_t len) {
  uint64_t cap = h->be->props.capacity;
  if (sector > cap / SECTOR) return false;
  return len <= cap - sector * SECTOR;
}

enum virtio_blk_process_result virtio_blk_process(const struct virtio_blk_handler *h, struct virtio_blk_req *vr,
                                                  virtio_blk_done_fn done, struct iovec *iov, int n_out, int n_in,
                                                  uint64_t out_len, uint64_t in_len) {
  struct iovec *out = iov, *in = iov + n_out;
  struct virtio_blk_stats *st = h->stats;
  vr->h = h;
  vr->done = done;
  vr->status = NULL;
  vr->used_len = 0;
  if (st) st->requests++;

  /* The status byte is the last byte of the last device-writable buffer. */
  if (in_len < 1) {
    hlog(h, "request (head %u) has no device-writable status byte; returned with length 0", vr->head);
    return finish(vr, VIRTIO_BLK_S_IOERR);
  }
  struct iovec *last = &in[n_in - 1];
  vr->status = (uint8_t *)last->iov_base + last->iov_len - 1;
  vr->used_len = 1;
  /* data iovecs that are writable: everything but the status byte */
  int n_in_data = n_in;
  size_t in_data_len = in_len - 1;
  struct iovec saved_last = *last;
  if (last->iov_len == 1)
    n_in_data--;
  else
    last->iov_len--;

  struct virtio_blk_outhdr hdr;
  if (out_len < sizeof hdr || iov_to_buf(out, n_out, 0, &hdr, sizeof hdr) != sizeof hdr) {
    *last = saved_last;
    hlog(h, "request (head %u) has a %llu-byte header, needs 16", vr->head, (unsigned long long)out_len);
    return finish(vr, VIRTIO_BLK_S_IOERR);
  }
  size_t out_data_len = out_len - sizeof hdr;
  struct stor_req *r = &vr->req;
  memset(r, 0, sizeof *r);
  r->complete = on_backend_complete;

  switch (hdr.type) {
  case VIRTIO_BLK_T_IN:
  case VIRTIO_BLK_T_OUT: {
    bool is_read = hdr.type == VIRTIO_BLK_T_IN;
    size_t len = is_read ? in_data_len : out_data_len;
    /* data must travel in the direction the request type says */
    if (is_read ? out_data_len != 0 : in_data_len != 0) {
      hlog(h, "%s request (head %u) carries %zu bytes in the wrong direction", is_read ? "read" : "write", vr->head,
           is_read ? out_data_len : in_data_len);
      return finish(vr, VIRTIO_BLK_S_IOERR);
    }
    if (len % SECTOR) {
      hlog(h, "%s of %zu bytes is not a multiple of 512", is_read ? "read" : "write", len);
      return finish(vr, VIRTIO_BLK_S_IOERR);
    }
    if (!range_ok(h, hdr.sector, len)) {
      hlog(h, "%s at sector %llu length %zu is past the end (capacity %llu sectors)", is_read ? "read" : "write",
           (unsigned long long)hdr.sector, len, (unsigned long long)(h->be->props.capacity / SECTOR));
      return finish(vr, VIRTIO_BLK_S_IOERR);
    }
    if (!is_read && h->readonly) {
      hlog(h, "write at sector %llu refused: device is read-only", (unsigned long long)hdr.sector);
      return finish(vr, VIRTIO_BLK_S_IOERR);
    }
    if (len == 0) return finish(vr, VIRTIO_BLK_S_OK);
    r->op = is_read ? STOR_OP_READ : STOR_OP_WRITE;
    r->offset = hdr.sector * SECTOR;
    r->length = len;
    if (is_read) {
      r->iov = in;
      r->niov = n_in_data;
      vr->used_len = (uint32_t)len + 1;
      if (st) {
        st->reads++;
        st->bytes_read += len;
      }
    } else {
      /* skip the header bytes at the front of the readable iovecs */
      size_t skip = sizeof hdr;
      int first = 0;
      while (first < n_out && skip >= out[first].iov_len) {
        skip -= out[first].iov_len;
        first++;
      }
      out[first].iov_base = (char *)out[first].iov_base + skip;
      out[first].iov_len -= skip;
      r->iov = out + first;
      r->niov = n_out - first;
      if (st) {
        st->writes++;
        st->bytes_written += len;
      }
    }
    return VIRTIO_BLK_REQ_SUBMIT;
  }
  case VIRTIO_BLK_T_FLUSH:
    if (st) st->flushes++;
    r->op = STOR_OP_FLUSH;
    return VIRTIO_BLK_REQ_SUBMIT;
  case VIRTIO_BLK_T_GET_ID: {
    if (st) st->get_id++;
    size_t n = in_data_len < VIRTIO_BLK_ID_BYTES ? in_data_len : VIRTIO_BLK_ID_BYTES;
    buf_to_iov(in, n_in_data, 0, h->serial, n);
    vr->used_len = (uint32_t)n + 1;
    return finish(vr, VIRTIO_BLK_S_OK);
  }
  case VIRTIO_BLK_T_DISCARD:
  case VIRTIO_BLK_T_WRITE_ZEROES: {
    bool discard = hdr.type == VIRTIO_BLK_T_DISCARD;
    struct virtio_blk_discard_write_zeroes seg;
    /* max_discard_seg = max_write_zeroes_seg = 1 in the config space: exactly one segment */
    if (out_data_len != sizeof seg) {
      hlog(h, "%s request carries %zu bytes of segments, expected exactly one 16-byte segment",
           discard ? "discard" : "write-zeroes", out_data_len);
      return finish(vr, VIRTIO_BLK_S_UNSUPP);
    }
    iov_to_buf(out, n_out, sizeof hdr, &seg, sizeof seg);
    uint64_t len = (uint64_t)seg.num_sectors * SECTOR;
    uint32_t max = discard ? h->max_discard_sectors : h->max_write_zeroes_sectors;
    bool in_range = range_ok(h, seg.sector, len);
    if (h->readonly || !in_range || seg.num_sectors > max || (discard && seg.flags) ||
        (!discard && (seg.flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))) {
      hlog(h, "%s of sector %llu count %u refused (%s)", discard ? "discard" : "write-zeroes",
           (unsigned long long)seg.sector, seg.num_sectors,
           h->readonly             ? "read-only"
           : !in_range             ? "past the end"
           : seg.num_sectors > max ? "too large"
                                   : "bad flags");
      return finish(vr, VIRTIO_BLK_S_IOERR);
    }
    if (len == 0) return finish(vr, VIRTIO_BLK_S_OK);
    if (st) {
      if (discard)
        st->discards++;
      else
        st->write_zeroes++;
    }
    r->op = discard ? STOR_OP_DISCARD : STOR_OP_WRITE_ZEROES;
    r->flags = (!discard && (seg.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)) ? STOR_REQ_F_UNMAP : 0;
    r->offset = seg.sector * SECTOR;
    r->length = len;
    return VIRTIO_BLK_REQ_SUBMIT;
  }
  default: hlog(h, "unsupported request type %u", hdr.type); return finish(vr, VIRTIO_BLK_S_UNSUPP);
  }
}
