// `stor daemon`'s ublk and VDUSE disks inside the Linux 6.12 test guest (#13 point 2, #14 point 4),
// managed with SPDK's own rpc.py (vendored, built by setup; stor's rpc.py plugin adds the vduse_*
// commands): two file bdevs, a ublk disk (ublk_create_target + ublk_start_disk) and a VDUSE disk
// (vduse_create_blk_device) made over JSON-RPC; fio randwrite --verify=crc32c on both while the daemon
// is SIGKILLed and started again with the same --state — the ublk disk comes back through user
// recovery on the same id and the VDUSE disk through reconnect (same name, its inflight log), so fio
// sees only a pause: it finishes with no error and the kernel logs no I/O error. Then SPDK's result
// shapes and error codes (a duplicate, a missing bdev, an unknown id, a bdev in use, a mounted disk),
// rpc.py save_config / load_config round-tripping the "ublk" and "vduse" subsystems, stops and deletes over
// JSON-RPC leaving no /dev/ublkb*, no VDUSE device, no vDPA device and no record, and a SIGTERM that
// removes the disks load_config brought back and keeps them in the state.
// Without the takeover at start the test fails: replaying ublk_start_disk as a creation, the restarted
// daemon stops on the disk the kernel kept (-17 File exists); replaying vduse_create_blk_device as a
// creation (the dead daemon's device removed first, as for any leftover) hangs under fio's I/O.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, STOR_BIN } from '../helpers/paths.js';
import { requireSpdk } from '../../tools/spdk.js';
import { assertGuestOk, liveGuests, runGuest } from './harness.js';

const SCRIPT = String.raw`set -uo pipefail
export STOR_RUN_DIR=/tmp/run PYTHONPATH="$PLUGIN_DIR"
STOR="node $STOR_BIN"
R=$STOR_VM_RESULTS
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; tail -20 /tmp/d*.err; dmesg | tail -20; exit 1; }
# one rpc.py for every call (python starts slowly under TCG): rpc.py --server reads one command line at a
# time, makes a new connection for each and ends its output with **STATUS=0 or 1
coproc RPCS { python3 "$SPDK_RPC" --server 2>&1; }
# rpc ARGS...: one rpc.py command on the daemon's socket; its output in $OUT, its status returned
rpc() {
  printf -- '-s /tmp/rpc.sock %s\n' "$*" >&"${'$'}{RPCS[1]}"
  OUT=""
  local line
  while IFS= read -r line <&"${'$'}{RPCS[0]}"; do
    case "$line" in '**STATUS=0') return 0 ;; '**STATUS=1') return 1 ;; esac
    OUT+="$line"$'\n'
  done
  fail "rpc.py --server has gone"
}
vrpc() { rpc --plugin stor_rpc_plugin "$@"; }
# startd OUT: the daemon in the background with the one --state; sets DPID
startd() {
  $STOR daemon -r /tmp/rpc.sock -S /tmp/v --state /tmp/state.json --json >"$1" 2>"$1.err" &
  DPID=$!
  for i in $(seq 1 900); do grep -q '"ready"' "$1" && return 0; kill -0 $DPID 2>/dev/null || break; sleep 0.1; done
  cat "$1" "$1.err"; fail "daemon: no ready line"
}
# expect CODE NAME ARGS...: the call fails with that JSON-RPC code; its reply is kept in results
expect() {
  local code=$1 name=$2; shift 2
  rpc "$@" && fail "$name succeeded: $OUT"
  printf '%s' "$OUT" > "$R/err-$name.txt"
  grep -q "\"code\": $code," "$R/err-$name.txt" || fail "$name: not code $code: $OUT"
}
writes() { awk '{print $5}' /sys/block/$1/stat; }
mkdir -p /tmp/v /tmp/mnt
truncate -s 64M /tmp/u.img /tmp/w.img

step "daemon; two file bdevs, a ublk disk and a VDUSE disk over rpc.py"
startd /tmp/d0.out
rpc bdev_aio_create /tmp/u.img U0 512 || fail "bdev_aio_create U0: $OUT"
rpc bdev_aio_create /tmp/w.img W0 512 || fail "bdev_aio_create W0: $OUT"
rpc bdev_malloc_create -b M0 16 512 || fail "bdev_malloc_create: $OUT"
expect -19 start-before-target ublk_start_disk U0 3
rpc ublk_create_target -m 0x3 || fail "ublk_create_target: $OUT"
expect -32603 target-twice ublk_create_target
rpc ublk_start_disk U0 3 -q 2 -d 64 || fail "ublk_start_disk: $OUT"
[ "$OUT" = $'3\n' ] || fail "ublk_start_disk answered '$OUT', want 3"
vrpc vduse_create_blk_device vd0 W0 -q 1 -s 128 || fail "vduse_create_blk_device: $OUT"
[ "$OUT" = $'vd0\n' ] || fail "vduse_create_blk_device answered '$OUT', want vd0"
rpc ublk_get_disks && printf '%s' "$OUT" > $R/ublk_get_disks.json
vrpc vduse_get_devices && printf '%s' "$OUT" > $R/vduse_get_devices.json
VD=$(sed -n 's/.*"block_device": "\([^"]*\)".*/\1/p' $R/vduse_get_devices.json)
[ -b /dev/ublkb3 ] || fail "no /dev/ublkb3"
[ -b "$VD" ] || fail "vduse_get_devices names '$VD', not a block device"
ls /tmp/run/attach > $R/records.txt

step "errors: duplicates, a missing bdev, unknown ids, bdevs in use"
expect -16 ublk-dup ublk_start_disk M0 3
expect -19 ublk-nobdev ublk_start_disk Nope 4
expect -19 ublk-stop-unknown ublk_stop_disk 9
expect -19 ublk-get-unknown ublk_get_disks -n 9
expect -17 vduse-dup --plugin stor_rpc_plugin vduse_create_blk_device vd0 M0
expect -19 vduse-nobdev --plugin stor_rpc_plugin vduse_create_blk_device vd1 Nope
expect -19 vduse-delete-unknown --plugin stor_rpc_plugin vduse_delete_blk_device nope
expect -16 bdev-used-by-ublk bdev_aio_delete U0
expect -16 bdev-used-by-vduse bdev_aio_delete W0

step "fio randwrite + crc32c verify on both disks"
fio_on() {
  timeout -k 10 200 fio --name=$1 --filename=$2 --rw=randwrite --bs=4k --size=16M --direct=1 --ioengine=libaio \
    --iodepth=16 --rate_iops=500 --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never --output=$R/fio-$1.txt
}
fio_on ublk /dev/ublkb3 & FU=$!
fio_on vduse $VD & FV=$!
for i in $(seq 1 300); do [ $(writes ublkb3) -gt 300 ] && [ $(writes $(basename $VD)) -gt 300 ] && break; sleep 0.2; done
kill -0 $FU && kill -0 $FV || fail "a fio ended before the kill"
step "SIGKILL the daemon (pid $DPID) with both fios writing"
kill -9 $DPID
gone() { ! [ -d /proc/$DPID ] || grep -q '^State:.*zombie' /proc/$DPID/status 2>/dev/null; }
for i in $(seq 1 600); do gone && break; sleep 0.1; done
gone || fail "the SIGKILLed daemon has not exited after 60 s"
wait $DPID 2>/dev/null
[ -b /dev/ublkb3 ] && [ -b $VD ] || fail "a disk went with the daemon"
wu=$(writes ublkb3); wv=$(writes $(basename $VD))
step "restart with the same --state"
startd /tmp/d1.out
grep -q '"device":"/dev/ublkb3"' /tmp/d1.out && grep -q "\"device\":\"$VD\"" /tmp/d1.out || { cat /tmp/d1.out; fail "the ready line does not list both disks"; }
grep -h 'recovered /dev/ublkb3' /tmp/d1.out.err || fail "no ublk recovery in the log"
grep -h 'vd0: reconnected' /tmp/d1.out.err || fail "no VDUSE reconnect in the log"
wait $FU; ru=$?; wait $FV; rv=$?
grep -h 'err=' $R/fio-ublk.txt $R/fio-vduse.txt
[ $ru = 0 ] && [ $rv = 0 ] || fail "fio exited $ru (ublk) and $rv (vduse) across the restart"
[ $(writes ublkb3) -gt $wu ] && [ $(writes $(basename $VD)) -gt $wv ] || fail "no write completed after the restart"
dmesg > $R/dmesg.txt
grep -iE 'I/O error|blk_update_request|Buffer I/O|critical medium' $R/dmesg.txt && fail "the kernel logged I/O errors"

step "a mounted disk is not stopped"
mkfs.ext4 -q /dev/ublkb3 && mount /dev/ublkb3 /tmp/mnt || fail "mkfs/mount ublkb3"
expect -16 ublk-stop-mounted ublk_stop_disk 3
expect -32603 destroy-target-mounted ublk_destroy_target
umount /tmp/mnt
mkfs.ext4 -q $VD && mount $VD /tmp/mnt || fail "mkfs/mount $VD"
expect -16 vduse-delete-mounted --plugin stor_rpc_plugin vduse_delete_blk_device vd0
umount /tmp/mnt

step "save_config / load_config round trip"
rpc save_config && printf '%s' "$OUT" > $R/saved.json || fail "save_config: $OUT"
rpc ublk_stop_disk 3 || fail "ublk_stop_disk: $OUT"
vrpc vduse_delete_blk_device vd0 || fail "vduse_delete_blk_device: $OUT"
rpc ublk_destroy_target || fail "ublk_destroy_target: $OUT"
ls /dev/ublkb* 2>/dev/null && fail "a /dev/ublkb* is left after ublk_stop_disk"
[ -e /dev/vduse/vd0 ] || [ -e /sys/bus/vdpa/devices/vd0 ] && fail "the VDUSE/vDPA device is left after the delete"
[ -z "$(ls /tmp/run/attach 2>/dev/null)" ] || fail "records left: $(ls /tmp/run/attach)"
for b in U0 W0; do rpc bdev_aio_delete $b || fail "bdev_aio_delete $b: $OUT"; done
rpc bdev_malloc_delete M0 || fail "bdev_malloc_delete: $OUT"
rpc load_config -j $R/saved.json || fail "rpc.py load_config: $OUT"
[ -b /dev/ublkb3 ] && [ -e /sys/bus/vdpa/devices/vd0 ] || fail "load_config did not bring the disks back"
rpc ublk_get_disks && printf '%s' "$OUT" > $R/ublk_get_disks-reloaded.json

step "SIGTERM removes the disks and keeps the state"
kill -TERM $DPID; wait $DPID; rc=$?
[ $rc = 0 ] || fail "the daemon exited $rc on SIGTERM"
ls /dev/ublkb* 2>/dev/null && fail "a /dev/ublkb* is left"
[ -e /dev/vduse/vd0 ] || [ -e /sys/bus/vdpa/devices/vd0 ] && fail "a VDUSE/vDPA device is left"
[ -z "$(ls /tmp/run/attach 2>/dev/null)" ] || fail "records left: $(ls /tmp/run/attach)"
cp /tmp/state.json $R/state.json
echo PASS
`;

const t = suite('vm: stor daemon’s ublk and VDUSE disks, across SIGKILL + restart with --state');

const read = (dir: string, f: string): string => readFileSync(join(dir, f), 'utf8');

t('rpc.py makes a ublk and a VDUSE disk; fio verify on both survives a daemon SIGKILL + --state restart', async () => {
  const r = await runGuest({
    script: SCRIPT,
    env: { STOR_BIN, SPDK_RPC: requireSpdk().rpc, PLUGIN_DIR: join(ROOT, 'tools', 'rpc-plugin') },
    memoryMiB: 1024,
    timeoutMs: 240_000,
  });
  try {
    assertGuestOk(r, 'daemon ublk + VDUSE across a restart');
    const d = r.resultsDir;
    for (const f of ['fio-ublk.txt', 'fio-vduse.txt'])
      assert.match(read(d, f), /: \(groupid=0, jobs=1\): err= 0/, `${f}: fio without error`);
    // SPDK's shapes
    assert.equal(JSON.parse(read(d, 'ublk_get_disks.json')), [
      { ublk_device: '/dev/ublkb3', id: 3, queue_depth: 64, num_queues: 2, bdev_name: 'U0' },
    ]);
    const [v] = JSON.parse(read(d, 'vduse_get_devices.json')) as Array<Record<string, unknown>>;
    assert.equal(
      { ...v, block_device: undefined },
      {
        name: 'vd0',
        vduse_device: '/dev/vduse/vd0',
        block_device: undefined,
        bdev_name: 'W0',
        num_queues: 1,
        queue_size: 128,
        readonly: false,
        serial: 'vd0',
      },
    );
    assert.match(String(v.block_device), /^\/dev\/vd[a-z]+$/);
    // the messages say what was wrong
    assert.match(read(d, 'err-ublk-dup.txt'), /Device or resource busy: ublk id 3 is in use/);
    assert.match(read(d, 'err-bdev-used-by-ublk.txt'), /U0 is in use by ublk disk 3/);
    assert.match(read(d, 'err-bdev-used-by-vduse.txt'), /W0 is in use by VDUSE device vd0/);
    assert.match(read(d, 'err-ublk-stop-mounted.txt'), /\/dev\/ublkb3 is mounted on \/tmp\/mnt/);
    assert.match(read(d, 'err-vduse-delete-mounted.txt'), /\/dev\/vd[a-z]+ is mounted on \/tmp\/mnt/);
    assert.equal(read(d, 'records.txt').split('\n').filter(Boolean), [
      'ublk-3.json',
      'vduse-vd0.inflight',
      'vduse-vd0.json',
    ]);
    // save_config as spdk_tgt writes the ublk subsystem, and stor's vduse one
    const saved = JSON.parse(read(d, 'saved.json')) as {
      subsystems: Array<{ subsystem: string; config: Array<{ method: string; params: unknown }> }>;
    };
    const sub = (name: string) => saved.subsystems.find((s) => s.subsystem === name)?.config;
    assert.equal(sub('ublk'), [
      { method: 'ublk_create_target', params: { cpumask: '3' } },
      { method: 'ublk_start_disk', params: { bdev_name: 'U0', ublk_id: 3, num_queues: 2, queue_depth: 64 } },
    ]);
    assert.equal(sub('vduse'), [
      {
        method: 'vduse_create_blk_device',
        params: { name: 'vd0', bdev_name: 'W0', num_queues: 1, queue_size: 128, readonly: false, serial: 'vd0' },
      },
    ]);
    assert.equal(JSON.parse(read(d, 'ublk_get_disks-reloaded.json')), JSON.parse(read(d, 'ublk_get_disks.json')));
    // a clean stop keeps the state: what load_config brought back
    const state = JSON.parse(read(d, 'state.json')) as typeof saved;
    for (const name of ['ublk', 'vduse'])
      assert.equal(
        state.subsystems.find((s) => s.subsystem === name)?.config,
        sub(name),
        `the state's ${name} subsystem after SIGTERM`,
      );
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0, 'no QEMU left running');
});

t.run();
