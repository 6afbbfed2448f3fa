#!/usr/bin/env bash
# Sets up a Debian 12 (bookworm) machine for stor, as root, idempotently:
# apt sources (bookworm-backports, trixie pinned low), build tools, real peers
# (QEMU, qemu-storage-daemon, libblkio and its example programs, fio, SPDK's spdk_tgt), then npm ci
# (which builds the native addon). Safe to run again; each step skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${STOR_CACHE:-$ROOT/.cache}
log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then echo "setup-debian.sh: run as root (apt-get is needed)" >&2; exit 2; fi
export DEBIAN_FRONTEND=noninteractive

# 1. Suites. Trixie is pinned low *before* it is added, so nothing is ever upgraded from it
#    by accident (an unpinned trixie pulls libc6 2.41 into bookworm).
if [ ! -f /etc/apt/preferences.d/stor-trixie-low ]; then
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/stor-trixie-low
fi
if [ ! -f /etc/apt/sources.list.d/stor-extra.sources ]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-http://deb.debian.org/debian}
  cat > /etc/apt/sources.list.d/stor-extra.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f "$CACHE/.apt-updated"
fi
mkdir -p "$CACHE"
if [ ! -f "$CACHE/.apt-updated" ]; then
  log "apt-get update"
  apt-get update -qq
  touch "$CACHE/.apt-updated"
fi

# 2. Packages from bookworm. -t bookworm keeps every dependency on bookworm.
PKGS=(build-essential pkg-config clang-format liburing-dev qemu-system-x86 qemu-system-common qemu-utils
      busybox-static cpio e2fsprogs fio xz-utils util-linux iproute2 kmod procps psmisc chromium
      clang-14 libclang-rt-14-dev) # clang + the libFuzzer runtime: the fuzz targets (native/fuzz)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq -t bookworm --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2b. Ceph 16.2 (Pacific) from bookworm for the rbd backend's tests and benchmark: a one-node cluster
#     (ceph-mon, ceph-osd; ceph-common has the ceph/rbd CLIs and librbd1), the librbd/librados headers
#     (the addon loads librbd with dlopen and does not need them, but they document the ABI it declares),
#     and qemu-block-extra for qemu-storage-daemon's rbd driver. -t bookworm: nothing from trixie, whose
#     Ceph would pull its libc.
CEPH_PKGS=(ceph-mon ceph-osd ceph-common librbd-dev librados-dev qemu-block-extra)
missing=()
for p in "${CEPH_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]} (Ceph for the rbd tests)"
  apt-get install -y -qq -t bookworm --no-install-recommends "${missing[@]}" >/dev/null
fi

# 3. libblkio 1.5 from trixie, as .deb files (depends on nothing newer than bookworm has).
if ! dpkg-query -W -f='${Status}' libblkio-dev 2>/dev/null | grep -q 'ok installed'; then
  log "installing libblkio from trixie"
  tmp=$(mktemp -d); chown _apt "$tmp" 2>/dev/null || chmod 777 "$tmp"; ( cd "$tmp" && apt-get download -qq libblkio1/trixie libblkio-dev/trixie )
  apt-get install -y -qq --no-install-recommends "$tmp"/libblkio1_*.deb "$tmp"/libblkio-dev_*.deb >/dev/null
  rm -rf "$tmp"
fi

# 4. libblkio's example programs, built from the sources libblkio-dev ships.
BIN=$CACHE/peers/bin
mkdir -p "$BIN"
EX=/usr/share/doc/libblkio-dev/examples
for prog in blkio-info blkio-copy blkio-bench; do
  src=$EX/$prog.c
  [ -f "$src" ] || { [ -f "$src.gz" ] && src=$src.gz; }
  if [ ! -x "$BIN/$prog" ] || [ "$src" -nt "$BIN/$prog" ]; then
    log "building $prog"
    if [[ $src == *.gz ]]; then gzip -dc "$src" > "$CACHE/peers/$prog.c"; else cp "$src" "$CACHE/peers/$prog.c"; fi
    gcc -O2 -o "$BIN/$prog" "$CACHE/peers/$prog.c" -lblkio -lpthread
  fi
done

# 4b. SPDK's spdk_tgt and rpc.py (the peer of `stor rpc` and `stor daemon` tests), built offline from the
#     vendored tarball next to this repository (STOR_SPDK_VENDOR overrides where that is) into
#     $CACHE/spdk; build.sh is a no-op when its stamp matches. tools/spdk.ts finds the result there.
# The shared peers directory (vendored SPDK, Ceph scripts): STOR_SHARED, ../shared beside the repo, or
# /work/shared (a clone elsewhere, e.g. CI's); linked into the cache so tests find it (tools/paths.ts).
SHARED=${STOR_SHARED:-$ROOT/../shared}
[ -d "$SHARED" ] || SHARED=/work/shared
if [ -d "$SHARED" ]; then mkdir -p "$CACHE" && ln -sfn "$(cd "$SHARED" && pwd)" "$CACHE/shared"; fi
SPDK_VENDOR=${STOR_SPDK_VENDOR:-$SHARED/vendor/spdk}
if [ -f "$SPDK_VENDOR/build.sh" ]; then
  log "SPDK (spdk_tgt + rpc.py) from $SPDK_VENDOR"
  bash "$SPDK_VENDOR/build.sh" "$CACHE/spdk" >/dev/null
else
  echo "setup-debian.sh: $SPDK_VENDOR/build.sh not found (set STOR_SPDK_VENDOR to the vendored SPDK directory)" >&2
  exit 1
fi

# 5. The QEMU guest for kernel-level tests (kernel, modules, initramfs), cached by kernel version.
if [ -x test/vm/setup.sh ]; then test/vm/setup.sh; fi

# 6. Node dependencies and the native addon (npm ci runs node-gyp through the install script).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -f native/build/Release/stor.node ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -d dist ] || [ -n "$(find src -newer dist -name '*.ts' 2>/dev/null | head -1)" ]; then
  log "npm run build"
  npm run --silent build
fi
log "ready"
