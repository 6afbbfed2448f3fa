#!/usr/bin/env bash
# Prepares the Linux guest the kernel-level tests boot under QEMU (tools/vm.ts):
#   ${STOR_CACHE:-<repo>/.cache}/vm/<kernel-version>/{vmlinuz,initramfs.cpio,modules.list}
#   ${STOR_CACHE:-<repo>/.cache}/vm/current -> <kernel-version>
# The kernel is bookworm-backports' 6.12 (bookworm's 6.1 has neither ublk nor VDUSE), fetched
# with apt-get download and unpacked with dpkg -x: nothing is installed on the host. The
# initramfs holds busybox and the decompressed modules the guest needs; its /init loads them,
# mounts the host root read-only over virtio-9p and chroots into it, so the guest runs the
# host's programs (mkfs.ext4, fio, vdpa, node...). Run as root; idempotent; quiet when done.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${STOR_CACHE:-$ROOT/.cache}
VM=$CACHE/vm
log() { printf '[vm-setup] %s\n' "$*"; }
die() { printf 'test/vm/setup.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get is needed)"
export DEBIAN_FRONTEND=noninteractive

# Bump when /init or the module list changes, so cached initramfs images are rebuilt.
INIT_REV=6

# Modules the guest loads at boot. Their dependencies (including soft ones, e.g. ext4 -> crc32c)
# are added by modprobe --show-depends below, in load order.
WANT=(virtio_blk ext4 netfs 9pnet 9pnet_virtio 9p ublk_drv vhost_iotlb vdpa vduse virtio_vdpa)

# 1. Host programs the guest runs through the shared root, and the tools this script uses.
#    -t bookworm keeps every dependency on bookworm (trixie is pinned low but present).
PKGS=(qemu-system-x86 qemu-utils busybox-static cpio kmod xz-utils e2fsprogs fio util-linux iproute2 coreutils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq -t bookworm --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Which kernel: the package linux-image-amd64 from bookworm-backports depends on.
#    (An explicit STOR_VM_KERNEL_PKG skips the lookup, e.g. to pin a version.)
pkg=${STOR_VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
  pkg=$(apt-cache depends linux-image-amd64/bookworm-backports 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
fi
if [ -z "$pkg" ]; then
  # A cached kernel is still good when apt cannot answer (e.g. sources not set up yet).
  [ -e "$VM/current/ready" ] && exit 0
  die "cannot find linux-image-amd64 in bookworm-backports (run scripts/setup-debian.sh, which adds the suite)"
fi
KVER=${pkg#linux-image-}
OUT=$VM/$KVER
if [ -f "$OUT/ready" ] && [ "$(cat "$OUT/ready")" = "$INIT_REV" ]; then
  [ "$(readlink "$VM/current" 2>/dev/null)" = "$KVER" ] || ln -sfn "$KVER" "$VM/current"
  exit 0
fi

log "building the guest for kernel $KVER"
mkdir -p "$VM"
WORK=$(mktemp -d "$VM/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEB=$VM/$pkg.deb
if [ ! -f "$DEB" ]; then
  log "apt-get download $pkg/bookworm-backports"
  # apt-get download drops privileges to _apt: give it a directory it can write.
  DL=$(mktemp -d); chown _apt "$DL" 2>/dev/null || chmod 777 "$DL"
  ( cd "$DL" && apt-get download -qq "$pkg/bookworm-backports" )
  mv "$DL"/"$pkg"_*.deb "$DEB"; rm -rf "$DL"
fi
log "unpacking"
dpkg -x "$DEB" "$WORK/x"
MODDIR=$WORK/x/lib/modules/$KVER
[ -d "$MODDIR" ] || die "$DEB has no /lib/modules/$KVER"
# The package ships no modules.dep (the postinst makes it): make one for the unpacked tree.
depmod -b "$WORK/x" "$KVER"

# 3. The load order: each wanted module after its dependencies, each once.
order=()
declare -A seen=()
for m in "${WANT[@]}"; do
  deps=$(modprobe -d "$WORK/x" -S "$KVER" --show-depends "$m") || die "module $m not found in $pkg"
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue   # "builtin X" lines need nothing
    name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    order+=("$path")
  done <<<"$deps"
done

# 4. The initramfs tree: busybox, the modules (decompressed) and /init.
IR=$WORK/initramfs
mkdir -p "$IR"/{bin,sbin,dev,proc,sys,mnt,lib/modules,etc}
cp /bin/busybox "$IR/bin/busybox"
for a in sh mount umount mkdir insmod poweroff sleep cat echo chroot sync ls ln; do ln -s busybox "$IR/bin/$a"; done
: > "$IR/modules.list"
for path in "${order[@]}"; do
  name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
  case "$path" in
    *.xz) xz -dc "$path" > "$IR/lib/modules/$name" ;;
    *.zst) zstd -qdc "$path" > "$IR/lib/modules/$name" ;;
    *) cp "$path" "$IR/lib/modules/$name" ;;
  esac
  echo "$name" >> "$IR/modules.list"
done

cat > "$IR/init" <<'INIT'
#!/bin/sh
# stor test guest. Loads modules, mounts the host root (read-only, tag hostroot) and the
# run's share (read-write, tag storvm), runs /run/stor-vm/run.sh chrooted into the host root,
# writes its exit status to the share (the exit code of QEMU says nothing), and powers off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
timeout=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in stor.timeout=*) timeout=${arg#stor.timeout=} ;; esac
done
# Watchdog: even if the host side of the harness is gone, the guest powers itself off.
if [ "$timeout" -gt 0 ]; then ( sleep "$timeout"; echo "stor-vm: guest watchdog fired after ${timeout}s" >/dev/console; poweroff -f ) & fi
fail() { echo "stor-vm: $*" >/dev/console; sleep 1; poweroff -f; }
for m in $(cat /modules.list); do
  insmod "/lib/modules/$m" || echo "stor-vm: insmod $m failed" >/dev/console
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /mnt || fail "cannot mount the host root over 9p"
mount -t tmpfs tmp /mnt/tmp
mount -t tmpfs run /mnt/run
mount -t proc proc /mnt/proc
mount -t sysfs sys /mnt/sys
mount -t devtmpfs dev /mnt/dev
mkdir -p /mnt/dev/pts /mnt/dev/shm /mnt/run/stor-vm
mount -t devpts devpts /mnt/dev/pts
# devtmpfs lacks the links udev would make; bash's <(...) needs /dev/fd.
ln -sf /proc/self/fd /mnt/dev/fd
ln -sf /proc/self/fd/0 /mnt/dev/stdin
ln -sf /proc/self/fd/1 /mnt/dev/stdout
ln -sf /proc/self/fd/2 /mnt/dev/stderr
mount -t tmpfs shm /mnt/dev/shm
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=524288,cache=none storvm /mnt/run/stor-vm || fail "cannot mount the run share over 9p"
echo "stor-vm: guest up" >/dev/console
chroot /mnt /bin/bash /run/stor-vm/run.sh </dev/null >/dev/console 2>&1
status=$?
echo "$status" > /mnt/run/stor-vm/status
sync
umount /mnt/run/stor-vm
echo "stor-vm: exit status $status" >/dev/console
poweroff -f
INIT
chmod 755 "$IR/init"

# 5. Pack (uncompressed: the kernel unpacks it without a decompressor, fast under TCG).
STAGE=$WORK/out
mkdir -p "$STAGE"
( cd "$IR" && find . -print0 | cpio --null -o -H newc --quiet ) > "$STAGE/initramfs.cpio"
cp "$WORK/x/boot/vmlinuz-$KVER" "$STAGE/vmlinuz"
cp "$IR/modules.list" "$STAGE/modules.list"
echo "$INIT_REV" > "$STAGE/ready"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
ln -sfn "$KVER" "$VM/current"
# Guests of kernels no longer current are dead weight (18 MiB each).
for d in "$VM"/*/; do
  d=${d%/}
  case "${d##*/}" in "$KVER"|current) ;; *) [ -f "$d/ready" ] && rm -rf "$d" ;; esac
done
# The .deb (100 MiB) is only needed to rebuild, and downloads again in seconds.
rm -f "$DEB"
log "guest ready: $OUT"
