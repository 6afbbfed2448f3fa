#!/bin/sh
# Builds the libFuzzer targets (native/fuzz/fuzz_*.c) with clang, ASan and UBSan into
# native/fuzz/build/. Needs clang with the libFuzzer runtime (Debian: clang-14 libclang-rt-14-dev,
# installed by scripts/setup-debian.sh). Prints the built programs' paths.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
native=$(dirname "$here")
out="$here/build"
cc=${CLANG:-}
if [ -z "$cc" ]; then
  for c in clang clang-14 clang-15 clang-16 clang-19; do
    if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
  done
fi
[ -n "$cc" ] || { echo "fuzz: no clang found: run scripts/setup-debian.sh (clang-14, libclang-rt-14-dev)" >&2; exit 2; }
mkdir -p "$out"
flags="-std=gnu11 -g -O1 -D_GNU_SOURCE -DNAPI_VERSION=8 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -I$native -I/usr/include/node"
common="$native/virtio/vring.c $native/virtio/virtio_blk.c $native/virtio/inflight.c $native/virtio/virtq_serve.c
  $native/sys/iov.c"
for src in "$here"/fuzz_*.c; do
  name=$(basename "$src" .c)
  # shellcheck disable=SC2086
  "$cc" $flags -o "$out/$name" "$src" $common
  echo "$out/$name"
done
