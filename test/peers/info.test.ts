// blkio-info (libblkio's virtio-blk-vhost-user driver) connects to each server and reads the
// device's configuration space: what it reports must be what the server was asked to serve.
import { statSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blkioInfo, blkioBench, describe, ok, runPeer, vhostUser } from './blkio.js';
import { matrix, label, peer, withTarget, SERVERS } from './matrix.js';

const info = suite('peers: blkio-info');

// Not a power of two, so a server that rounds or defaults its capacity is caught.
const SIZE = 48 * 1024 * 1024 + 128 * 1024;
// qemu-storage-daemon 7.2's vhost-user-blk export has a fixed virtqueue size of 128 and reports
// seg_max = 126; stor's ring limit is given with --queue-size. A segment limit above
// queue size - 2 cannot be honoured (header and status take a descriptor each).
const QSD_QUEUE_SIZE = 128;
// libblkio's default ring is 256 entries, so stor is asked for exactly that.
const STOR_QUEUE_SIZE = 256;

for (const spec of matrix()) {
  info(
    `${label(spec)}: capacity = ${SIZE}, max-queues = ${spec.queues}, 1 <= max-segments <= queue size - 2, ${spec.queues} queues start`,
    async () => {
      const code = await withTarget(
        spec,
        { size: SIZE, image: 'create', extraArgs: { stor: ['--queue-size', String(STOR_QUEUE_SIZE)] } },
        async (t) => {
          if (t.imagePath) {
            // stor creates its image with create=SIZE; qsd is handed a sparse file of SIZE.
            assert.is(statSync(t.imagePath).size, SIZE, 'image file size');
          }
          const props = [
            'capacity',
            'max-queues',
            'num-queues',
            'max-segments',
            'request-alignment',
            'read-only',
            'driver',
          ];
          const { result, values } = await peer(t, () => blkioInfo(t.socket, props));
          assert.ok(ok(result), describe(result));
          assert.is(Number(values['capacity']), SIZE, 'capacity');
          assert.is(Number(values['max-queues']), spec.queues, 'max-queues');
          // num-queues is the client's choice (default 1) and must fit within what the device offers.
          assert.is(Number(values['num-queues']), 1, 'num-queues default');
          const seg = Number(values['max-segments']);
          const queueSize = spec.server === 'qsd' ? QSD_QUEUE_SIZE : STOR_QUEUE_SIZE;
          assert.ok(
            Number.isInteger(seg) && seg >= 1 && seg <= queueSize - 2,
            `max-segments ${values['max-segments']} not in [1, ${queueSize - 2}]`,
          );
          assert.ok(
            Number(values['request-alignment']) >= 512 && Number(values['request-alignment']) % 512 === 0,
            `request-alignment ${values['request-alignment']}`,
          );
          assert.is(values['read-only'], 'false');
          assert.is(values['driver'], 'virtio-blk-vhost-user');

          // Asking the client for as many queues as served must start; one more must be refused.
          const set = await peer(t, () => blkioInfo(t.socket, ['capacity', `num-queues=${spec.queues}`, 'num-queues']));
          assert.ok(ok(set.result), describe(set.result));
          assert.is(Number(set.values['num-queues']), spec.queues);
          const run = await peer(t, () =>
            blkioBench(t.socket, { readwrite: 'randread', iodepth: 4, poll: false, runtimeS: 1, threads: spec.queues }),
          );
          assert.ok(ok(run.result), describe(run.result));
          assert.is(run.out!.threads.length, spec.queues, 'one bench thread per queue');
          for (const [i, th] of run.out!.threads.entries()) assert.ok(th.kiops > 0, `queue ${i} completed no I/O`);
          const over = await peer(t, () =>
            runPeer(
              'blkio-bench',
              ['--runtime=1', `--num-threads=${spec.queues + 1}`, '--readwrite=randread', ...vhostUser(t.socket)],
              15_000,
            ),
          );
          assert.not.ok(
            ok(over),
            `started ${spec.queues + 1} queues on a ${spec.queues}-queue device: ${describe(over)}`,
          );
          assert.match(over.stderr, /Unable to start/);
        },
      );
      assert.is(code, 0, 'server exit code after SIGTERM');
    },
  );
}

// A read-only export is seen as read-only at start: writes are refused before any I/O.
for (const server of SERVERS) {
  info(`${server}/null/q1 --readonly: a writer cannot start, a reader can`, async () => {
    const code = await withTarget({ server, backend: 'null', queues: 1 }, { size: SIZE, readonly: true }, async (t) => {
      const w = await peer(t, () =>
        blkioBench(t.socket, { readwrite: 'randwrite', iodepth: 1, poll: false, runtimeS: 1 }),
      );
      assert.not.ok(ok(w.result), `randwrite ran on a read-only export: ${describe(w.result)}`);
      assert.match(w.result.stderr, /read-only/i);
      const r = await peer(t, () =>
        blkioBench(t.socket, { readwrite: 'randread', iodepth: 1, poll: false, runtimeS: 1 }),
      );
      assert.ok(ok(r.result), describe(r.result));
      assert.ok(r.out!.aggregate.kiops > 0);
    });
    assert.is(code, 0, 'server exit code after SIGTERM');
  });
}

info.run();
