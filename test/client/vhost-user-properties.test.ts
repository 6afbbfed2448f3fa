// The vhost-user client backend owns its properties: C derives every one from the negotiated virtio
// features and the config space (bdevProperties on the device's backend handle), and the library's
// properties are those. Checked against stor serve with a 4 KiB block size and 2 queues (opened with
// 1), a read-only stor serve, and qemu-storage-daemon.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open, StorError } from '../../src/lib/index.js';
import { native, type BdevProperties } from '../../src/lib/native.js';
import { VIRTIO_BLK_F, VIRTIO_F, featureNames, hasBit } from '../../src/lib/proto/virtio-blk.js';
import { cleanupSocket, startQsd, startStor, type RunningServer } from '../helpers/servers.js';

const t = suite('client: the vhost-user backend reports every property from the device (C)');
const SIZE = 32 << 20;
let srv: RunningServer | undefined;
t.after.each(async () => {
  if (srv) {
    await srv.stop();
    cleanupSocket(srv.socket);
    srv = undefined;
  }
});

/** The properties the library shows must be the backend's own. */
function assertSameAsBackend(p: Record<string, unknown>, c: BdevProperties): void {
  for (const k of [
    'capacity',
    'requestAlignment',
    'bufAlignment',
    'optimalIoAlignment',
    'optimalIoSize',
    'maxTransfer',
    'maxQueues',
    'maxSegments',
    'readOnly',
    'canDiscard',
    'canWriteZeroes',
    'discardAlignment',
    'maxDiscardLength',
    'maxWriteZeroesLength',
    'maxMemRegions',
    'needsMemRegions',
  ] as const)
    assert.is(p[k], c[k], `${k}: the device says ${String(p[k])}, its backend ${String(c[k])}`);
  assert.equal(p.features, featureNames(c.virtioFeatures), 'features are the negotiated ones the backend holds');
}

t(
  'stor serve, 4 KiB blocks, 2 queues, opened with 1: block size, queue count, limits and features come from C',
  async () => {
    srv = await startStor({
      backend: { kind: 'mem', size: SIZE },
      queues: 2,
      extraArgs: ['--block-size', '4096', '--queue-size', '256'],
    });
    const dev = await open(`vhost-user:${srv.socket}`, { numQueues: 1 });
    try {
      const c = native().bdevProperties(dev.backend);
      assert.is(c.capacity, SIZE);
      assert.is(c.requestAlignment, 4096, 'blk_size from the config space');
      assert.is(c.optimalIoAlignment, 4096);
      assert.is(c.maxQueues, 2, 'num_queues from the config space, not the queues this client set up');
      assert.is(c.maxSegments, 254, 'seg_max (queue size 256 - 2)');
      assert.is(c.discardAlignment, 4096, 'discard_sector_alignment × 512');
      assert.is(c.maxDiscardLength, (1 << 22) * 512, 'max_discard_sectors × 512');
      assert.is(c.maxWriteZeroesLength, (1 << 22) * 512);
      assert.is(c.canDiscard, true);
      assert.is(c.maxMemRegions, 32, "stor serve's 32 memory slots (GET_MAX_MEM_SLOTS), as blkio-info reports them");
      assert.is(c.needsMemRegions, true);
      assert.ok(
        hasBit(c.virtioFeatures, VIRTIO_F.VERSION_1) && hasBit(c.virtioFeatures, VIRTIO_BLK_F.MQ),
        `features ${c.virtioFeatures}`,
      );
      assertSameAsBackend(dev.properties as unknown as Record<string, unknown>, c);
    } finally {
      await dev.close();
    }
  },
);

t('a read-only stor serve: read-only, no discard, no write-zeroes, from the RO feature', async () => {
  srv = await startStor({ backend: { kind: 'mem', size: SIZE }, readonly: true });
  const dev = await open(`vhost-user:${srv.socket}`);
  try {
    const c = native().bdevProperties(dev.backend);
    assert.equal([c.readOnly, c.canDiscard, c.canWriteZeroes], [true, false, false]);
    assertSameAsBackend(dev.properties as unknown as Record<string, unknown>, c);
  } finally {
    await dev.close();
  }
});

t(
  'qemu-storage-daemon: the same derivation, and more queues than the device has is a usage error (exit 2)',
  async () => {
    srv = await startQsd({ backend: { kind: 'null', size: SIZE } });
    const dev = await open(`vhost-user:${srv.socket}`);
    try {
      const c = native().bdevProperties(dev.backend);
      assert.is(c.capacity, SIZE);
      assert.is(c.maxQueues, 1);
      assertSameAsBackend(dev.properties as unknown as Record<string, unknown>, c);
    } finally {
      await dev.close();
    }
    try {
      await open(`vhost-user:${srv.socket}`, { numQueues: 2 });
      assert.unreachable('2 queues on a 1-queue device');
    } catch (e) {
      assert.instance(e, StorError);
      assert.is((e as StorError).exitCode, 2);
      assert.match((e as Error).message, /numQueues: 2 queues asked, the device has 1/);
    }
  },
);

t.run();
