// The guest kernel offers what later issues build on: ublk (stor attach --ublk), VDUSE and the
// vDPA bus (stor attach --vduse). Checked once here so a missing module is reported as such,
// not as a mysterious failure of those tests.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { assertGuestOk, liveGuests, runGuest } from './harness.js';

const CHECK = String.raw`missing=0
miss() { echo "MISSING: $*"; missing=1; }
echo "kernel $(uname -r)"
[ -c /dev/ublk-control ] || miss "/dev/ublk-control (module ublk_drv not loaded?)"
[ -c /dev/vduse/control ] || miss "/dev/vduse/control (module vduse not loaded?)"
for m in ublk_drv vduse vdpa virtio_vdpa vhost_iotlb virtio_blk ext4; do
  [ -d /sys/module/$m ] || miss "kernel module $m"
done
if ! command -v vdpa >/dev/null; then
  miss "the vdpa tool (iproute2) on the host root"
elif ! out=$(vdpa mgmtdev show 2>&1); then
  miss "vdpa mgmtdev show failed: $out"
else
  echo "$out"
  echo "$out" | grep -q '^vduse' || miss "vduse in 'vdpa mgmtdev show'"
fi
for p in mkfs.ext4 e2fsck fio blkdiscard fstrim fallocate taskset stty sha256sum node; do
  command -v $p >/dev/null || miss "program $p on the host root (run test/vm/setup.sh)"
done
exit $missing
`;

const k = suite('vm: guest kernel facilities');

k(
  'the guest has /dev/ublk-control, /dev/vduse/control, vduse in `vdpa mgmtdev show`, and the test programs',
  async () => {
    const r = await runGuest({ script: CHECK, memoryMiB: 512, timeoutMs: 90_000 });
    try {
      const missing = r.console.split('\n').filter((l) => l.startsWith('MISSING: '));
      assert.equal(missing, [], `the guest lacks:\n${missing.join('\n')}`);
      assertGuestOk(r, 'kernel facility check');
    } finally {
      r.cleanup();
    }
    assert.is(liveGuests(), 0, 'no QEMU left running');
  },
);

k.run();
