// Read-only disks and discard, as a Linux guest's virtio-blk driver sees them, against
// qemu-storage-daemon (the reference) and stor serve.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { assertGuestOk, liveGuests, runGuest } from './harness.js';
import { withDisk, type ServerKind } from './servers.js';

const MiB = 2 ** 20;
const KINDS: ServerKind[] = ['qsd', 'stor'];

// The disk starts with 1 MiB of known bytes. The guest must see it read-only, read those
// bytes, and have every write refused with an error (bounded by timeout, so a hang fails
// instead of stalling), leaving the bytes as they were.
const READONLY = String.raw`set -uo pipefail
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
step read-only flag
ro=$(cat /sys/block/vda/ro)
[ "$ro" = 1 ] || fail "/sys/block/vda/ro is $ro, want 1"
step reads work
sum=$(dd if=/dev/vda bs=1M count=1 iflag=direct status=none | sha256sum | cut -d' ' -f1)
[ "$sum" = "$EXPECT_SHA" ] || fail "the first MiB reads back with sha256 $sum, want $EXPECT_SHA"
step a direct write is refused
timeout 30 dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct status=none 2>/tmp/err
rc=$?
echo "dd: exit $rc: $(cat /tmp/err)"
[ $rc = 124 ] && fail "a write to the read-only disk hung"
[ $rc = 0 ] && fail "a direct write to the read-only disk succeeded"
step mkfs.ext4 is refused
timeout 60 mkfs.ext4 -q -F /dev/vda >/tmp/err 2>&1
rc=$?
echo "mkfs.ext4: exit $rc: $(head -c 300 /tmp/err)"
[ $rc = 124 ] && fail "mkfs.ext4 on the read-only disk hung"
[ $rc = 0 ] && fail "mkfs.ext4 on the read-only disk succeeded"
step contents unchanged
sum=$(dd if=/dev/vda bs=1M count=1 iflag=direct status=none | sha256sum | cut -d' ' -f1)
[ "$sum" = "$EXPECT_SHA" ] || fail "the first MiB changed: sha256 $sum, want $EXPECT_SHA"
echo PASS
`;

// Discard on a RAM-backed disk: blkdiscard of a range and of the whole device, then fstrim on
// ext4. Discarded ranges must read back as zeros and the bytes around them must not change.
const DISCARD = String.raw`set -euo pipefail
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
rd() { dd if=/dev/vda bs=1M skip="$1" count="$2" iflag=direct status=none; }
step discard offered
max=$(cat /sys/block/vda/queue/discard_max_bytes)
[ "$max" -gt 0 ] || fail "the disk offers no discard (discard_max_bytes=0)"
echo "discard_max_bytes=$max granularity=$(cat /sys/block/vda/queue/discard_granularity)"
step write 8 MiB of random data
head -c 8M /dev/urandom > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=1M oflag=direct status=none
cmp <(rd 0 8) /tmp/pat || fail "the data written does not read back"
step blkdiscard 1 MiB at 1 MiB and 2 MiB at 5 MiB
blkdiscard -o 1MiB -l 1MiB /dev/vda
blkdiscard -o 5MiB -l 2MiB /dev/vda
cmp <(rd 1 1) <(head -c 1M /dev/zero) || fail "the range discarded at 1 MiB does not read back as zeros"
cmp <(rd 5 2) <(head -c 2M /dev/zero) || fail "the range discarded at 5 MiB does not read back as zeros"
cmp <(rd 0 1) <(head -c 1M /tmp/pat) || fail "the data before the discarded range changed"
cmp <(rd 2 3) <(tail -c +$((2 * 1048576 + 1)) /tmp/pat | head -c 3M) || fail "the data between the discarded ranges changed"
cmp <(rd 7 1) <(tail -c 1M /tmp/pat) || fail "the data after the discarded ranges changed"
step blkdiscard of the whole device
blkdiscard /dev/vda
cmp <(rd 0 8) <(head -c 8M /dev/zero) || fail "the device does not read back as zeros after blkdiscard"
step fstrim on ext4
mkfs.ext4 -q -F -E nodiscard /dev/vda
mkdir -p /tmp/m
mount /dev/vda /tmp/m
head -c 16M /dev/urandom > /tmp/m/junk
sync
rm /tmp/m/junk
sync
fstrim -v /tmp/m
umount /tmp/m
e2fsck -fn /dev/vda
echo PASS
`;

const t = suite('vm: read-only disks and discard under a Linux guest');

for (const kind of KINDS) {
  t(
    `${kind} serve --readonly: the guest sees /sys/block/vda/ro = 1, reads work, writes fail cleanly, nothing changes`,
    async () => {
      const prefill = randomBytes(MiB);
      const sha = createHash('sha256').update(prefill).digest('hex');
      await withDisk(kind, { backend: 'file', size: 64 * MiB, readonly: true, prefill }, async (disk) => {
        const r = await runGuest({
          script: READONLY,
          vhostUserBlk: [{ socket: disk.server.socket }],
          env: { EXPECT_SHA: sha },
          memoryMiB: 512,
          timeoutMs: 180_000,
        });
        try {
          assertGuestOk(r, `read-only disk from ${kind}`);
        } finally {
          r.cleanup();
        }
        // What the host holds is what it held: the server wrote nothing.
        const head = readFileSync(disk.image!).subarray(0, MiB);
        assert.ok(head.equals(prefill), `${kind} changed a read-only image`);
      });
      assert.is(liveGuests(), 0, 'no QEMU left running');
    },
  );

  t(
    `${kind} serve on RAM: blkdiscard ranges and the whole device read back as zeros, fstrim on ext4 succeeds`,
    async () => {
      await withDisk(kind, { backend: 'ram', size: 128 * MiB }, async (disk) => {
        const r = await runGuest({
          script: DISCARD,
          vhostUserBlk: [{ socket: disk.server.socket }],
          memoryMiB: 512,
          timeoutMs: 180_000,
        });
        try {
          assertGuestOk(r, `discard on ${kind}`);
        } finally {
          r.cleanup();
        }
      });
      assert.is(liveGuests(), 0, 'no QEMU left running');
    },
  );
}

t.run();
