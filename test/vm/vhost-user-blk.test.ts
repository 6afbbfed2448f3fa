// QEMU as a real client of a vhost-user-blk server: a Linux guest's virtio-blk driver puts an
// ext4 filesystem and fio's verified random writes on the disk, then a second guest connects
// to the same, still running server and finds the data intact. Run against qemu-storage-daemon
// first (a failure there is the harness's or the guest's) and then against stor serve.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertGuestOk, liveGuests, runGuest } from './harness.js';
import { withDisk, type ServerKind } from './servers.js';

const SIZE = 512 * 2 ** 20;

// Guest 1: capacity, ext4 with ~60 MiB of random files (checksums kept), fsck, remount and
// compare, then fio with crc32c verification on a file in that filesystem.
const FIRST = String.raw`set -euo pipefail
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
step capacity and queues
sectors=$(cat /sys/block/vda/size)
[ "$sectors" = "$EXPECT_SECTORS" ] || fail "/sys/block/vda/size is $sectors, want $EXPECT_SECTORS"
queues=$(ls /sys/block/vda/mq | wc -l)
[ "$queues" = "$EXPECT_QUEUES" ] || fail "the guest uses $queues virtqueues, want $EXPECT_QUEUES"
step mkfs.ext4
mkfs.ext4 -q -F /dev/vda
mkdir -p /tmp/m
mount /dev/vda /tmp/m
mkdir /tmp/m/data
step write 50 files of random sizes
kib=0
for i in $(seq -w 1 50); do
  n=$(( RANDOM % 2400 + 50 ))
  kib=$(( kib + n ))
  head -c $(( n * 1024 )) /dev/urandom > /tmp/m/data/f$i
done
echo "wrote $(( kib / 1024 )) MiB"
(cd /tmp/m && sha256sum data/f* > "$STOR_VM_RESULTS/sums")
umount /tmp/m
step e2fsck
e2fsck -fn /dev/vda
step remount and compare checksums
mount /dev/vda /tmp/m
(cd /tmp/m && sha256sum --quiet -c "$STOR_VM_RESULTS/sums") || fail "checksums differ after remount"
step "fio randwrite, crc32c verify: bs 4k and 64k, iodepth 1 and 16"
# One fio run with four jobs one after the other (stonewall): fio starts slowly under TCG.
{
  printf '[global]\nfilename=/tmp/m/fio.dat\nsize=32M\nruntime=40\ndirect=1\nioengine=libaio\n'
  printf 'rw=randwrite\nverify=crc32c\ndo_verify=1\nverify_fatal=1\nstonewall\n'
  for bs in 4k 64k; do for qd in 1 16; do printf '[%s-qd%s]\nbs=%s\niodepth=%s\n' $bs $qd $bs $qd; done; done
} > /tmp/verify.fio
out="$STOR_VM_RESULTS/fio.txt"
if ! fio --eta=never --output="$out" /tmp/verify.fio; then
  cat "$out"; fail "fio reported an error or a verify failure"
fi
grep -E '^[0-9a-z-]+: \(groupid|IOPS=' "$out"
rm /tmp/m/fio.dat
(cd /tmp/m && sha256sum --quiet -c "$STOR_VM_RESULTS/sums") || fail "checksums differ after fio"
umount /tmp/m
step e2fsck after fio
e2fsck -fn /dev/vda
echo PASS
`;

// Guest 2, a new QEMU against the same server: the filesystem and every file are as left.
const SECOND = String.raw`set -euo pipefail
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
step capacity
sectors=$(cat /sys/block/vda/size)
[ "$sectors" = "$EXPECT_SECTORS" ] || fail "/sys/block/vda/size is $sectors, want $EXPECT_SECTORS"
step e2fsck
e2fsck -fn /dev/vda
step mount and compare checksums
mkdir -p /tmp/m
mount /dev/vda /tmp/m
(cd /tmp/m && sha256sum --quiet -c "$STOR_VM_SHARE/sums") || fail "checksums differ in the second guest"
umount /tmp/m
echo PASS
`;

const cases: Array<{ kind: ServerKind; queues: number }> = [
  { kind: 'qsd', queues: 1 },
  { kind: 'qsd', queues: 2 },
  { kind: 'stor', queues: 1 },
  { kind: 'stor', queues: 2 },
];

const vub = suite('vm: vhost-user-blk under a Linux guest');

for (const { kind, queues } of cases) {
  vub(
    `${kind} serve (file, 512 MiB, ${queues} queue${queues > 1 ? 's' : ''}): ext4 + fio verify in a guest, data intact in a second guest`,
    async () => {
      await withDisk(kind, { backend: 'file', size: SIZE, queues }, async (disk) => {
        const env = { EXPECT_SECTORS: String(SIZE / 512), EXPECT_QUEUES: String(queues) };
        const disks = [{ socket: disk.server.socket, queues }];
        const first = await runGuest({ script: FIRST, vhostUserBlk: disks, env, memoryMiB: 1024, timeoutMs: 420_000 });
        try {
          assertGuestOk(first, `first guest against ${kind}`);
          assert.ok(
            disk.server.proc.exitCode === null,
            `${kind} exited after the first guest powered off:\n${disk.server.output()}`,
          );
          const sums = readFileSync(join(first.resultsDir, 'sums'), 'utf8');
          assert.is(sums.trim().split('\n').length, 50, 'checksums of 50 files recorded');
          const fio = readFileSync(join(first.resultsDir, 'fio.txt'), 'utf8');
          assert.is(
            (fio.match(/: \(groupid=\d+, jobs=1\): err= 0/g) ?? []).length,
            4,
            `four fio jobs without error:\n${fio}`,
          );
          const second = await runGuest({
            script: SECOND,
            vhostUserBlk: disks,
            env,
            memoryMiB: 512,
            timeoutMs: 180_000,
            files: { sums },
          });
          try {
            assertGuestOk(second, `second guest against the same ${kind}`);
          } finally {
            second.cleanup();
          }
        } finally {
          first.cleanup();
        }
      });
      assert.is(liveGuests(), 0, 'no QEMU left running');
    },
  );
}

vub.run();
