// `stor attach --ublk` and `stor attach --vduse` with an rbd: backend, inside the Linux 6.12 test guest
// (the host kernel has neither ublk nor VDUSE). The guest cannot reach a cluster on the host: QEMU runs
// it with no network device (and its initramfs has no virtio_net), so nothing on the host's 127.0.0.1
// is reachable from it. The cluster runs inside the guest instead: a one-node cluster is made on the
// host by the shared start-ceph.sh (mkfs is the slow part, ~15 s natively, minutes under TCG), stopped,
// packed with tar (about 100 KiB: BlueStore's block file is sparse) and unpacked in the guest at the
// same path, where its mon and OSD start again on the guest's loopback (~20 s under TCG). The guest
// needs a name the cluster's CRUSH map accepts (its default "(none)" is refused), so it takes the
// host's, and its loopback up. Then on two images at once: fio randwrite with crc32c verify, 4k and
// 128k at QD16 and QD1, direct I/O, through /dev/ublkb0 and /dev/vdX; no I/O error in dmesg; SIGTERM
// detaches both cleanly (exit 0, no device, no record left).
import { execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CEPH_SCRIPTS, startCephCluster, type CephCluster } from '../../tools/ceph.js';
import { STOR_BIN } from '../helpers/paths.js';
import { assertGuestOk, liveGuests, runGuest } from '../vm/harness.js';

const t = suite('rbd: stor attach --ublk / --vduse on rbd: inside a Linux guest');
let cluster: CephCluster | undefined;
let tarball: Buffer;

t.before(async () => {
  cluster = await startCephCluster({ CEPH_BLOCK_SIZE: '1G' });
  await cluster.rbd(['create', '--size', '64M', 'rbd/vduse']);
  execFileSync('bash', [join(CEPH_SCRIPTS, 'stop-ceph.sh'), cluster.dir], { stdio: 'ignore', timeout: 60_000 });
  tarball = execFileSync('tar', ['--sparse', '-C', cluster.dir, '-czf', '-', '.'], { maxBuffer: 256 << 20 });
});

t.after(async () => {
  await cluster?.stop();
});

const script = (dir: string): string => String.raw`set -uo pipefail
export STOR_RUN_DIR=/tmp/run
STOR="node ${STOR_BIN}"
D=${dir}
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; dmesg | tail -20; tail -5 $D/log/osd.0.log; exit 1; }

step "the cluster, unpacked and started inside the guest"
hostname ${hostname()}
ip link set lo up || fail "lo up"
mkdir -p $D && tar -xzSf "$STOR_VM_SHARE/ceph.tgz" -C $D || fail "unpack"
rm -f $D/run/*.pid
setsid ceph-mon -f -c $D/ceph.conf -i a </dev/null >$D/log/mon.guest 2>&1 &
setsid ceph-osd -f -c $D/ceph.conf -i 0 </dev/null >$D/log/osd.guest 2>&1 &
for i in $(seq 1 40); do timeout 30 rbd -c $D/ceph.conf info rbd/test >/dev/null 2>&1 && break; sleep 2; done
timeout 30 rbd -c $D/ceph.conf info rbd/vduse >/dev/null 2>&1 || fail "the cluster did not come up in the guest"

# attach KIND OUT ARGS...: stor attach in the background; sets APID and DEV
attach() {
  local out=$1; shift
  $STOR attach "$@" --json >"$out" 2>"$out.err" &
  APID=$!
  for i in $(seq 1 1800); do grep -q '"ready"' "$out" && break; kill -0 $APID 2>/dev/null || break; sleep 0.1; done
  grep -q '"ready"' "$out" || { cat "$out" "$out.err"; fail "attach $*: no ready line"; }
  DEV=$(sed -n 's/.*"event":"ready".*"device":"\([^"]*\)".*/\1/p' "$out" | head -1)
  [ -b "$DEV" ] || fail "attach $*: ready names $DEV, which is not a block device"
  echo "$* is $DEV"
}
step "attach --ublk rbd:rbd/test and --vduse rbd:rbd/vduse"
attach /tmp/u --ublk --id 0 --queues 1 --backend "rbd:rbd/test,conf=$D/ceph.conf,connect-timeout=60"
U=$APID; UDEV=$DEV
attach /tmp/v --vduse --name rbdv --backend "rbd:rbd/vduse,conf=$D/ceph.conf,connect-timeout=60"
V=$APID; VDEV=$DEV
[ "$(cat /sys/block/$(basename $UDEV)/size)" = 524288 ] || fail "$UDEV is not 256 MiB"
[ "$(cat /sys/block/$(basename $VDEV)/size)" = 131072 ] || fail "$VDEV is not 64 MiB"

step "fio randwrite verify=crc32c 4k/128k x QD16/QD1, direct, on both disks at once"
for d in $UDEV $VDEV; do
  n=$(basename $d)
  timeout 400 fio --filename=$d --direct=1 --ioengine=libaio --rw=randwrite --verify=crc32c --verify_fatal=1 \
    --name=4k-qd16 --bs=4k --iodepth=16 --offset=0 --size=2M \
    --name=128k-qd16 --bs=128k --iodepth=16 --offset=4M --size=8M \
    --name=4k-qd1 --bs=4k --iodepth=1 --offset=16M --size=256k \
    --name=128k-qd1 --bs=128k --iodepth=1 --offset=20M --size=2M \
    --output=/tmp/fio-$n.out >/dev/null 2>&1 &
  eval fio_$n=$!
done
for d in $UDEV $VDEV; do
  n=$(basename $d)
  eval wait \$fio_$n || { cat /tmp/fio-$n.out; fail "fio verify on $d"; }
  cp /tmp/fio-$n.out "$STOR_VM_RESULTS/fio-$n.txt"
done

step "a pattern written through the ublk disk, to read from the image after detach"
head -c 1M /dev/urandom > /tmp/pat
dd if=/tmp/pat of=$UDEV bs=1M seek=100 oflag=direct conv=fsync status=none || fail "dd to $UDEV"

step "detach both with SIGTERM"
kill -TERM $U $V
wait $U; rc=$?; [ $rc = 0 ] || { cat /tmp/u /tmp/u.err; fail "attach --ublk exited $rc on SIGTERM"; }
wait $V; rc=$?; [ $rc = 0 ] || { cat /tmp/v /tmp/v.err; fail "attach --vduse exited $rc on SIGTERM"; }
grep -q '"stopped"' /tmp/u && grep -q '"stopped"' /tmp/v || fail "no stopped line"
[ ! -e $UDEV ] && [ ! -e $VDEV ] || fail "a device is left: $(ls $UDEV $VDEV 2>/dev/null)"
[ ! -e /dev/vduse/rbdv ] || fail "the VDUSE device is left"
[ -z "$(ls /tmp/run/attach 2>/dev/null)" ] || fail "records left: $(ls /tmp/run/attach)"
dmesg > "$STOR_VM_RESULTS/dmesg.txt"
if grep -iE 'I/O error|blk_update_request|Buffer I/O' "$STOR_VM_RESULTS/dmesg.txt"; then fail "the kernel logged I/O errors"; fi

step "the pattern is in the image: read back with stor's client after the disk is gone"
$STOR read "rbd:rbd/test,conf=$D/ceph.conf,connect-timeout=60" --offset $((100 << 20)) --length 1M -o /tmp/back \
  || fail "stor read from the image"
cmp /tmp/back /tmp/pat || fail "the image does not hold what was written through the ublk disk"
echo PASS
`;

t('attach --ublk and --vduse on rbd: images in the guest: fio verify, no I/O error, clean detach', async () => {
  const g = await runGuest({
    script: script(cluster!.dir),
    files: { 'ceph.tgz': tarball },
    memoryMiB: 2048,
    timeoutMs: 600_000,
  });
  try {
    assertGuestOk(g, 'attach on rbd in the guest');
    const fios = readdirSync(g.resultsDir).filter((f) => f.startsWith('fio-'));
    assert.equal(fios.sort(), ['fio-ublkb0.txt', 'fio-vda.txt']);
    for (const f of fios) {
      const fio = readFileSync(join(g.resultsDir, f), 'utf8');
      assert.is((fio.match(/err= 0/g) ?? []).length, 4, fio);
    }
  } finally {
    g.cleanup();
  }
  assert.is(liveGuests(), 0, 'no QEMU left running');
});

t.run();
