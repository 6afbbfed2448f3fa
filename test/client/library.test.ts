// The client library used directly, as a TypeScript program would: open a vhost-user-blk socket
// (stor serve on mem, qemu-storage-daemon on a tmpfs file) and the in-process mem: target with 2
// queues, event and polled completion; concurrent reads and writes on both queues, zero-copy
// buffers from allocMemRegion, discard and write-zeroes, and what a server dying does to requests.
import { randomBytes } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open, BlkioError, StorError, type BlockDevice, type Completion } from '../../src/lib/index.js';
import { assertSame, allBytes, startServer, waitFor, withServer, type ServerName } from './helpers.js';

const lib = suite('client: library (open, read, write, regions, discard, write-zeroes)');

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

/** Rejects if p has not settled in ms: no library call may hang a test. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, rej) => {
      t = setTimeout(() => rej(new Error(`${what}: not settled after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

async function rejects(p: Promise<unknown>, what: string, check: (e: unknown) => boolean): Promise<void> {
  let err: unknown;
  try {
    await within(5000, what, p);
  } catch (e) {
    err = e;
  }
  assert.ok(err !== undefined, `${what}: resolved, expected a rejection`);
  assert.ok(check(err), `${what}: wrong rejection: ${String(err)}`);
}

/** Everything a device of SIZE with 2 queues must do; `zeroDiscard`: discarded ranges must read as zeros. */
async function exercise(dev: BlockDevice, zeroDiscard: boolean): Promise<void> {
  const p = dev.properties;
  // properties sane
  assert.is(p.capacity, SIZE, 'capacity');
  assert.is(p.numQueues, 2, 'numQueues');
  assert.ok(p.maxQueues >= 2, `maxQueues ${p.maxQueues}`);
  assert.ok(
    p.requestAlignment >= 512 && (p.requestAlignment & (p.requestAlignment - 1)) === 0,
    `requestAlignment ${p.requestAlignment}`,
  );
  assert.ok(p.maxSegments >= 1, `maxSegments ${p.maxSegments}`);
  assert.is(p.readOnly, false, 'readOnly');
  assert.ok(p.canDiscard, 'canDiscard');
  assert.ok(p.canWriteZeroes, 'canWriteZeroes');
  assert.ok(p.optimalIoSize % p.requestAlignment === 0, `optimalIoSize ${p.optimalIoSize}`);
  if (p.driver === 'virtio-blk-vhost-user') {
    assert.ok(p.needsMemRegions, 'needsMemRegions');
    assert.ok(p.maxMemRegions >= 1, `maxMemRegions ${p.maxMemRegions}`);
    assert.ok(p.features.includes('VERSION_1') && p.features.includes('MQ'), `features ${p.features.join(' ')}`);
  }

  // 1. 64 concurrent 64 KiB writes spread over both queues, then 64 concurrent reads, each from
  //    the other queue than its write, then reads and writes of disjoint ranges at the same time.
  const BLK = 64 * 1024;
  const N = 64;
  const blocks = Array.from({ length: N }, () => randomBytes(BLK));
  const at = (i: number) => ((i * 3) % N) * BLK + MiB; // scattered order
  await within(10_000, 'concurrent writes', Promise.all(blocks.map((b, i) => dev.write(at(i), b, { queue: i % 2 }))));
  const back = await within(
    10_000,
    'concurrent reads',
    Promise.all(blocks.map((_, i) => dev.read(at(i), BLK, { queue: (i + 1) % 2 }))),
  );
  back.forEach((b, i) => assertSame(b, blocks[i]!, `block ${i} read back on the other queue`));
  const fresh = Array.from({ length: N / 2 }, () => randomBytes(BLK));
  const mixed = await within(
    10_000,
    'mixed reads and writes',
    Promise.all([
      ...fresh.map((b, i) => dev.write(at(2 * i), b, { queue: 0 }).then(() => undefined)), // even blocks rewritten
      // odd ones read
      ...blocks.map((_, i) => (i % 2 ? dev.read(at(i), BLK, { queue: 1 }) : Promise.resolve(undefined))),
    ]),
  );
  mixed.slice(fresh.length).forEach((b, i) => {
    if (b) assertSame(b, blocks[i]!, `odd block ${i} read while even ones were rewritten`);
  });
  for (let i = 0; i < N / 2; i++)
    assertSame(await dev.read(at(2 * i), BLK, { queue: i % 2 }), fresh[i]!, `even block ${2 * i} after rewrite`);

  // 2. A write larger than a bounce buffer (1 MiB) from ordinary memory, read back in one piece.
  const big = randomBytes(3 * MiB + 512);
  const bigAt = 8 * MiB + 512;
  await within(10_000, 'big write', dev.write(bigAt, big, { queue: 1 }));
  assertSame(
    await within(10_000, 'big read', dev.read(bigAt, big.length, { queue: 0 })),
    big,
    'a 3 MiB + 512 write read back',
  );

  // 3. Zero-copy buffers: write from and read into a region (4 MiB: larger than a bounce buffer).
  const region = dev.allocMemRegion(8 * MiB);
  assert.ok(
    region.size >= 8 * MiB && region.buffer.length >= 8 * MiB,
    `region of ${region.size} bytes, buffer ${region.buffer.length}`,
  );
  const src = region.buffer.subarray(0, 4 * MiB);
  const dst = region.buffer.subarray(4 * MiB, 8 * MiB);
  randomBytes(4 * MiB).copy(src);
  dst.fill(0xee);
  const want = Buffer.from(src);
  await within(10_000, 'region write', dev.write(16 * MiB, src, { queue: 0 }));
  await within(10_000, 'region readInto', dev.readInto(16 * MiB, dst, { queue: 1 }));
  assertSame(dst, want, 'a region buffer read back into a region buffer');
  // ... and concurrently, 1 MiB slices on both queues
  dst.fill(0);
  await within(
    10_000,
    'region slices',
    Promise.all(
      [0, 1, 2, 3].map((k) => dev.readInto(16 * MiB + k * MiB, dst.subarray(k * MiB, (k + 1) * MiB), { queue: k % 2 })),
    ),
  );
  assertSame(dst, want, 'region slices read on both queues');
  // A second region works too (a new memory table / slot for vhost-user).
  const region2 = dev.allocMemRegion(MiB);
  await within(10_000, 'second region read', dev.readInto(16 * MiB, region2.buffer.subarray(0, MiB)));
  assertSame(region2.buffer.subarray(0, MiB), want.subarray(0, MiB), 'read into a second region');

  // 4. write-zeroes and discard: the range reads as zeros, the bytes either side do not change.
  await within(5000, 'flush', dev.flush({ queue: 1 }));
  await within(10_000, 'write-zeroes', dev.writeZeroes(16 * MiB + 4096, 64 * 1024, { queue: 1 }));
  const wz = await dev.read(16 * MiB, 4096 + 64 * 1024 + 4096);
  assertSame(wz.subarray(0, 4096), want.subarray(0, 4096), 'bytes before write-zeroes');
  assert.ok(allBytes(wz.subarray(4096, 4096 + 64 * 1024), 0), 'write-zeroes range reads as zeros');
  assertSame(
    wz.subarray(4096 + 64 * 1024),
    want.subarray(4096 + 64 * 1024, 4096 + 64 * 1024 + 4096),
    'bytes after write-zeroes',
  );
  await within(10_000, 'write-zeroes unmap', dev.writeZeroes(16 * MiB + MiB, MiB, { unmap: true }));
  assert.ok(allBytes(await dev.read(16 * MiB + MiB, MiB), 0), 'write-zeroes (unmap) range reads as zeros');
  const dAt = 2 * MiB + 64 * 1024; // relative to 16 MiB; past the write-zeroes ranges
  await within(10_000, 'discard', dev.discard(16 * MiB + dAt, MiB, { queue: 0 }));
  const d = await dev.read(16 * MiB + dAt - 4096, MiB + 8192);
  assertSame(d.subarray(0, 4096), want.subarray(dAt - 4096, dAt), 'bytes before discard');
  assertSame(d.subarray(4096 + MiB), want.subarray(dAt + MiB, dAt + MiB + 4096), 'bytes after discard');
  if (zeroDiscard) assert.ok(allBytes(d.subarray(4096, 4096 + MiB), 0), 'discarded range reads as zeros');

  // 5. Bad requests reject (not throw synchronously, not hang) with a BlkioError.
  const isBlkio = (e: unknown) => e instanceof BlkioError;
  await rejects(dev.read(SIZE, 512), 'read past the end', isBlkio);
  await rejects(dev.read(SIZE - 512, 1024), 'read across the end', isBlkio);
  await rejects(dev.write(0, Buffer.alloc(100)), 'unaligned write length', isBlkio);
  await rejects(dev.read(100, 512), 'unaligned read offset', isBlkio);
  await rejects(dev.read(0, 512, { queue: 2 }), 'queue 2 of a 2-queue device', (e) => e instanceof StorError);
  // The device still works after the refusals.
  assertSame(await dev.read(at(1), BLK), blocks[1]!, 'a read after refused requests');
}

const COMPLETIONS: Completion[] = ['event', 'poll'];
const VHOST: Array<{ server: ServerName; zeroDiscard: boolean }> = [
  // stor's mem backend punches holes on discard: zeros. qsd's tmpfs file: discard content unspecified.
  { server: 'stor', zeroDiscard: true },
  { server: 'qsd', zeroDiscard: false },
];

for (const { server, zeroDiscard } of VHOST) {
  for (const completion of COMPLETIONS) {
    const backend = server === 'stor' ? 'mem' : 'file on tmpfs';
    lib(
      `vhost-user ${server}/${backend} q2, ${completion} completion: properties sane, concurrent reads/writes on both queues, >1 MiB I/O, allocMemRegion zero-copy, write-zeroes${zeroDiscard ? ' and discard' : ''} read as zeros, bad requests reject, close`,
      async () => {
        await withServer(server, { backend: 'mem', size: SIZE, queues: 2 }, async (s) => {
          const dev = await within(10_000, 'open', open(`vhost-user:${s.socket}`, { numQueues: 2, completion }));
          try {
            assert.is(dev.properties.driver, 'virtio-blk-vhost-user');
            assert.is(dev.properties.target, `vhost-user:${s.socket}`);
            await exercise(dev, zeroDiscard);
          } finally {
            await within(5000, 'close', dev.close());
          }
          await rejects(dev.read(0, 512), 'read after close', (e) => e instanceof StorError);
          // The server must still serve a new client after this one left.
          const again = await within(10_000, 'reopen', open(`vhost-user:${s.socket}`));
          try {
            assert.is((await within(5000, 'read after reopen', again.read(MiB, 4096))).length, 4096);
          } finally {
            await again.close();
          }
        });
      },
    );
  }
}

for (const completion of COMPLETIONS) {
  lib(`in-process mem:${SIZE} q2, ${completion} completion: same checks, discard reads as zeros`, async () => {
    const dev = await open(`mem:${SIZE}`, { numQueues: 2, completion });
    try {
      assert.is(dev.properties.driver, 'mem');
      await exercise(dev, true);
    } finally {
      await dev.close();
    }
  });
}

// Event completion must never lose a wakeup: bursts of concurrent writes on one queue, each burst
// completing by itself (no later request to kick the reaping). qemu-storage-daemon applies
// VIRTIO_F_EVENT_IDX strictly (it calls only when used_event is crossed), so a driver that leaves
// used_event behind last_used after re-arming waits forever.
for (const server of ['stor', 'qsd'] as ServerName[]) {
  lib(
    `vhost-user ${server} q1, event completion: 20 bursts of 200 concurrent 64 KiB writes each complete within 3 s (no lost completion wakeup)`,
    async () => {
      await withServer(server, { backend: 'mem', size: SIZE, queues: 1 }, async (s) => {
        const dev = await within(10_000, 'open', open(`vhost-user:${s.socket}`, { completion: 'event' }));
        try {
          const BLK = 64 * 1024;
          const data = randomBytes(BLK);
          for (let round = 0; round < 20; round++) {
            let done = 0;
            const burst = Array.from({ length: 200 }, (_, i) =>
              dev.write(MiB + (i % 256) * BLK, data).then(() => {
                done++;
              }),
            );
            try {
              await within(3000, `burst ${round}`, Promise.all(burst));
            } catch (e) {
              // Show that the completions were there all along: one more request reaps them.
              const stuck = 200 - done;
              await within(3000, 'a kick', dev.read(0, 512)).catch(() => undefined);
              await new Promise((r) => setTimeout(r, 200));
              assert.unreachable(
                `burst ${round}: ${stuck} of 200 writes not completed after 3 s; after one more request ${200 - done} remain ` +
                  `(${String((e as Error).message)})`,
              );
            }
          }
        } finally {
          await within(5000, 'close', dev.close());
        }
      });
    },
  );
}

// A server that dies must fail what is in flight, promptly, and later requests too.
for (const server of ['stor', 'qsd'] as ServerName[]) {
  lib(
    `vhost-user ${server}/null q2: SIGKILL of the server with 128 MiB of reads in flight rejects every request within 5 s, later requests reject too`,
    async () => {
      const s = await startServer(server, { backend: 'null', size: 64 * 1024 * MiB, queues: 2 });
      try {
        const dev = await within(10_000, 'open', open(`vhost-user:${s.socket}`, { numQueues: 2 }));
        try {
          // Keep both queues busy with 1 MiB reads until the kill.
          let stop = false;
          let completed = 0;
          const errors: unknown[] = [];
          const worker = async (q: number) => {
            for (let off = q * MiB; !stop; off = (off + 2 * MiB) % (64 * 1024 * MiB)) {
              try {
                await dev.read(off, MiB, { queue: q });
                completed++;
              } catch (e) {
                errors.push(e);
                return;
              }
            }
          };
          const workers = Array.from({ length: 32 }, (_, i) => worker(i % 2));
          await waitFor('the first completed reads', () => completed >= 64, 10_000);
          s.srv.proc.kill('SIGKILL');
          const t0 = Date.now();
          try {
            await within(5000, 'in-flight reads after the server was killed', Promise.all(workers));
          } finally {
            stop = true;
          }
          assert.ok(errors.length > 0, `no read failed after the server was killed (${completed} completed)`);
          for (const e of errors) assert.ok(e instanceof BlkioError, `rejection is not a BlkioError: ${String(e)}`);
          assert.ok(Date.now() - t0 < 5000, 'rejections took too long');
          await rejects(dev.read(0, 4096), 'a read after the server died', (e) => e instanceof StorError);
        } finally {
          await within(5000, 'close after the server died', dev.close());
        }
      } finally {
        await s.stop();
      }
    },
  );
}

lib.run();
