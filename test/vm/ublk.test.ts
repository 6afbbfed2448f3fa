// `stor attach --ublk` inside the Linux 6.12 test guest (the host kernel has no ublk): stor runs in
// the guest from the host root and serves /dev/ublkbN to the guest's own block layer. Checks are
// batched into two boots (node starts slowly under TCG):
//   1. the data path and lifecycle: mem: with 1 queue (fio crc32c verify, 4k/128k x QD1/QD16, direct),
//      file: with 2 queues (ext4, checksums, e2fsck -fn, the image intact after detach), a bridge to
//      `stor serve` in the guest through vhost-user:, `attach --list`, an id in use, and SIGTERM
//      leaving no /dev/ublkb* and no record;
//   2. user recovery: fio randwrite+verify while the server is SIGKILLed twice and recovered with
//      `--recover --id N` each time: fio finishes clean and the kernel logs no I/O error.
// Discard, write-zeroes, flush, read-only disks and data at chosen offsets are the export
// conformance group's (test/export/conformance.test.ts), which runs them on ublk in its own guest.
// And on the host (no ublk there): no /dev/ublk-control -> one line saying to load ublk_drv, exit 1;
// the depth limit (exit 2) and an unopenable backend (exit 1), which are checked before the kernel is.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { STOR_BIN } from '../helpers/paths.js';
import { assertGuestOk, liveGuests, runGuest } from './harness.js';

const PRELUDE = String.raw`set -uo pipefail
STOR="node ${STOR_BIN}"
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
# waits for the ready line of an attach writing JSON to $1
waitready() { for i in $(seq 1 900); do grep -q '"ready"' "$1" && return 0; sleep 0.1; done; return 1; }
`;

const DATA_PATH =
  PRELUDE +
  String.raw`
truncate -s 256M /tmp/f1.img
step "start three disks and a vhost-user server, all at once"
$STOR serve --socket /tmp/vu.sock --backend mem:64M --json > /tmp/serve.out 2>&1 &
serve=$!
$STOR attach --ublk --backend mem:64M --id 0 --queues 1 --json > /tmp/a0 2>/tmp/e0 & a0=$!
$STOR attach --ublk --backend file:/tmp/f1.img --id 1 --queues 2 --json > /tmp/a1 2>/tmp/e1 & a1=$!
for i in 0 1; do waitready /tmp/a$i || { cat /tmp/a$i /tmp/e$i; fail "no ready line from attach $i"; }; done
for i in $(seq 1 300); do [ -S /tmp/vu.sock ] && break; sleep 0.1; done
$STOR attach --ublk --backend vhost-user:/tmp/vu.sock --id 4 --json > /tmp/a4 2>/tmp/e4 & a4=$!
$STOR attach --ublk --backend mem:64M --id 0 > /tmp/bad-id 2>&1 & bi=$!
wait $bi; rc=$?; echo "id in use: exit $rc: $(cat /tmp/bad-id)"
[ $rc = 1 ] || fail "attaching an id in use exited $rc, want 1"
grep -q 'exists already' /tmp/bad-id || fail "id in use: no 'exists already'"
waitready /tmp/a4 || { cat /tmp/a4 /tmp/e4; fail "the bridge has no ready line"; }
cat /tmp/a0 /tmp/a1 /tmp/a4
grep -q '"device":"/dev/ublkb0"' /tmp/a0 || fail "ready line of id 0 does not name /dev/ublkb0"
grep -q '"queues":2' /tmp/a1 || fail "ready line of id 1 does not say 2 queues"

step "attach --list shows the three disks"
$STOR attach --list | tee /tmp/list
[ "$(grep -c '^ublk ' /tmp/list)" = 3 ] || fail "attach --list does not show 3 ublk disks"

step "capacity and queues"
[ "$(cat /sys/block/ublkb0/size)" = 131072 ] || fail "ublkb0 has $(cat /sys/block/ublkb0/size) sectors"
[ "$(ls /sys/block/ublkb0/mq | wc -l)" = 1 ] || fail "ublkb0 does not have 1 queue"
[ "$(ls /sys/block/ublkb1/mq | wc -l)" = 2 ] || fail "ublkb1 does not have 2 queues"

step "mem, 1 queue: fio crc32c verify, 4k and 128k, QD1 and QD16, direct"
{
  printf '[global]\nfilename=/dev/ublkb0\nsize=4M\ndirect=1\nioengine=libaio\n'
  printf 'rw=randwrite\nverify=crc32c\ndo_verify=1\nverify_fatal=1\nstonewall\n'
  for bs in 4k 128k; do for qd in 1 16; do printf '[%s-qd%s]\nbs=%s\niodepth=%s\n' $bs $qd $bs $qd; done; done
} > /tmp/verify.fio
fio --eta=never --output="$STOR_VM_RESULTS/fio-mem.txt" /tmp/verify.fio || { cat "$STOR_VM_RESULTS/fio-mem.txt"; fail "fio on ublkb0"; }
grep -E 'groupid|IOPS=' "$STOR_VM_RESULTS/fio-mem.txt"

step "file, 2 queues: ext4, files, e2fsck"
mkfs.ext4 -q -F /dev/ublkb1 || fail mkfs
mkdir -p /tmp/m && mount /dev/ublkb1 /tmp/m || fail mount
mkdir /tmp/m/data
for i in $(seq -w 1 20); do head -c $(( (RANDOM % 400 + 20) * 1024 )) /dev/urandom > /tmp/m/data/f$i; done
(cd /tmp/m && sha256sum data/f* > /tmp/sums)
fio --name=ext4 --filename=/tmp/m/fio.dat --size=4M --bs=4k --iodepth=16 --rw=randwrite --direct=1 --ioengine=libaio \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never --output="$STOR_VM_RESULTS/fio-ext4.txt" || { cat "$STOR_VM_RESULTS/fio-ext4.txt"; fail "fio on ext4"; }
rm /tmp/m/fio.dat
umount /tmp/m
e2fsck -fn /dev/ublkb1 || fail "e2fsck on ublkb1"
mount /dev/ublkb1 /tmp/m && (cd /tmp/m && sha256sum --quiet -c /tmp/sums) || fail "checksums differ after remount"
umount /tmp/m

step "bridge: ublk over vhost-user to stor serve"
head -c 8M /dev/urandom > /tmp/pat8
dd if=/tmp/pat8 of=/dev/ublkb4 bs=128k oflag=direct status=none || fail "write through the bridge"
cmp <(dd if=/dev/ublkb4 bs=1M count=8 iflag=direct status=none) /tmp/pat8 || fail "the bridge reads back other data"
fio --name=bridge --filename=/dev/ublkb4 --size=4M --bs=4k --iodepth=16 --rw=randwrite --direct=1 --ioengine=libaio \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never --output="$STOR_VM_RESULTS/fio-bridge.txt" || { cat "$STOR_VM_RESULTS/fio-bridge.txt"; fail "fio through the bridge"; }

step "SIGTERM: every disk goes, every attach exits 0"
kill -TERM $a0 $a1 $a4
for p in $a0 $a1 $a4; do wait $p; rc=$?; [ $rc = 0 ] || fail "attach $p exited $rc on SIGTERM"; done
cat /tmp/a1
grep -q '"event":"stopped"' /tmp/a1 || fail "no stopped line"
ls /dev/ublkb* 2>/dev/null && fail "a /dev/ublkb* is left after SIGTERM"
[ -z "$(ls /run/stor/attach 2>/dev/null)" ] || fail "records left in /run/stor/attach: $(ls /run/stor/attach)"
kill -TERM $serve; wait $serve
e2fsck -fn /tmp/f1.img || fail "the image does not hold a clean ext4 after detach"
echo PASS
`;

const RECOVERY =
  PRELUDE +
  String.raw`
truncate -s 256M /tmp/disk.img
step attach
$STOR attach --ublk --backend file:/tmp/disk.img --id 3 --json > /tmp/o0 2>/tmp/e0 &
p=$!
waitready /tmp/o0 || { cat /tmp/o0 /tmp/e0; fail "no ready line"; }
step "fio randwrite + crc32c verify, paced so that it outlives two crashes"
fio --name=rec --filename=/dev/ublkb3 --rw=randwrite --bs=4k --size=48M --direct=1 --ioengine=libaio --iodepth=16 \
  --rate_iops=800 --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never --output="$STOR_VM_RESULTS/fio-rec.txt" &
f=$!
for round in 1 2; do
  sleep 4
  kill -0 $f 2>/dev/null || fail "fio ended before crash $round"
  step "SIGKILL the server (crash $round) and recover"
  kill -9 $p
  # a zombie has exited; anything else is still in the kernel
  gone() { ! [ -d /proc/$p ] || grep -q '^State:.*zombie' /proc/$p/status 2>/dev/null; }
  for i in $(seq 1 600); do gone && break; sleep 0.1; done
  gone || fail "the SIGKILLed server has not exited after 60 s (stuck in the kernel)"
  wait $p 2>/dev/null
  $STOR attach --ublk --recover --id 3 --json > /tmp/o$round 2>/tmp/e$round &
  p=$!
  waitready /tmp/o$round || { cat /tmp/o$round /tmp/e$round; fail "recovery $round has no ready line"; }
  grep -q '"recovered":true' /tmp/o$round || fail "recovery $round: not a recovered disk"
done
step "fio finishes"
wait $f; rc=$?
grep -E 'err=|IOPS=' "$STOR_VM_RESULTS/fio-rec.txt"
[ $rc = 0 ] || { cat "$STOR_VM_RESULTS/fio-rec.txt"; fail "fio exited $rc across the crashes"; }
kill -TERM $p; wait $p; rc=$?; [ $rc = 0 ] || fail "attach exited $rc on SIGTERM"
ls /dev/ublkb* 2>/dev/null && fail "a /dev/ublkb* is left"
dmesg > "$STOR_VM_RESULTS/dmesg.txt"
if grep -iE 'I/O error|blk_update_request|Buffer I/O' "$STOR_VM_RESULTS/dmesg.txt"; then fail "the kernel logged I/O errors"; fi
echo PASS
`;

const t = suite('vm: stor attach --ublk under a Linux guest');

t('host without ublk_drv: one line saying to load it, exit 1', async () => {
  if (existsSync('/dev/ublk-control')) return; // this host has ublk: the guest tests cover it
  const r = await execa(process.execPath, [STOR_BIN, 'attach', '--ublk', '--backend', 'mem:64M'], { reject: false });
  assert.is(r.exitCode, 1, r.stderr);
  assert.is(r.stdout, '');
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^stor: .*\/dev\/ublk-control.*ublk_drv/);
});

const stor = (...args: string[]) => execa(process.execPath, [STOR_BIN, ...args], { reject: false });

t(
  'bad inputs before the kernel: depth above 4096 is a usage error, an unopenable backend a runtime error',
  async () => {
    const depth = await stor('attach', '--ublk', '--backend', 'mem:64M', '--depth', '8192');
    assert.is(depth.exitCode, 2, depth.stderr);
    assert.match(depth.stderr, /^stor: --depth: 8192 .*\n {2}accepted: 1 to 4096/);
    const missing = await stor('attach', '--ublk', '--backend', 'file:/nonexistent/x.img');
    assert.is(missing.exitCode, 1, missing.stderr);
    assert.match(missing.stderr, /^stor: cannot open backend: .*\/nonexistent\/x\.img/);
    const recover = await stor('attach', '--ublk', '--recover');
    assert.is(recover.exitCode, 2, recover.stderr);
    assert.match(recover.stderr, /--recover: needs the device id/);
  },
);

t('mem (1 queue) + file (2 queues) + vhost-user bridge: fio verify, ext4, id in use, teardown', async () => {
  const r = await runGuest({ script: DATA_PATH, memoryMiB: 1024, timeoutMs: 400_000 });
  try {
    assertGuestOk(r, 'ublk data path');
    const fio = readFileSync(join(r.resultsDir, 'fio-mem.txt'), 'utf8');
    assert.is(
      (fio.match(/: \(groupid=\d+, jobs=1\): err= 0/g) ?? []).length,
      4,
      `four fio jobs without error:\n${fio}`,
    );
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0, 'no QEMU left running');
});

t('user recovery: the server SIGKILLed twice under fio randwrite+verify, recovered each time: no error', async () => {
  const r = await runGuest({ script: RECOVERY, memoryMiB: 768, timeoutMs: 400_000 });
  try {
    assertGuestOk(r, 'ublk recovery');
    const fio = readFileSync(join(r.resultsDir, 'fio-rec.txt'), 'utf8');
    assert.match(fio, /rec: \(groupid=0, jobs=1\): err= 0/);
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0, 'no QEMU left running');
});

t.run();
