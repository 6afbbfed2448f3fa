/* Copies between flat buffers and iovec lists (declared in bdev/bdev.h, where the request model is).
 * Kept apart from the N-API glue so that programs without Node (the fuzz targets) can link them. */
#include "bdev/bdev.h"
#include <string.h>

size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len) {
  size_t done = 0;
  for (int i = 0; i < n && done < len; i++) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    size_t take = iov[i].iov_len - skip;
    if (take > len - done) take = len - done;
    memcpy((char *)buf + done, (char *)iov[i].iov_base + skip, take);
    done += take;
    skip = 0;
  }
  return done;
}

size_t buf_to_iov(const struct iovec *iov, int n, size_t skip, const void *buf, size_t len) {
  size_t done = 0;
  for (int i = 0; i < n && done < len; i++) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    size_t take = iov[i].iov_len - skip;
    if (take > len - done) take = len - done;
    memcpy((char *)iov[i].iov_base + skip, (const char *)buf + done, take);
    done += take;
    skip = 0;
  }
  return done;
}

void iov_memset(const struct iovec *iov, int n, int c) {
  for (int i = 0; i < n; i++) memset(iov[i].iov_base, c, iov[i].iov_len);
}
