// `stor info --json` must report what libblkio's own driver (blkio-info, virtio-blk-vhost-user)
// reports for the same socket, property by property, against stor serve and qemu-storage-daemon,
// served with 1 and 2 queues and opened with every queue count the device offers.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blkioInfo, describe as describePeer, ok as peerOk } from '../peers/blkio.js';
import { assertOk, json, SERVERS, stor, withServer } from './helpers.js';

const info = suite('client: stor info vs blkio-info');

// Not a power of two, so a capacity that is rounded or defaulted is caught.
const SIZE = 24 * 1024 * 1024 + 64 * 1024;

// Every property libblkio 1.5's virtio-blk-vhost-user driver answers that stor info also prints.
const PROPS = [
  'driver',
  'capacity',
  'request-alignment',
  'optimal-io-alignment',
  'optimal-io-size',
  'max-transfer',
  'max-queues',
  'num-queues',
  'max-segments',
  'buf-alignment',
  'read-only',
  'max-mem-regions',
  'needs-mem-regions',
  'discard-alignment',
  'max-discard-len',
  'max-write-zeroes-len',
];

for (const server of SERVERS) {
  for (const queues of [1, 2]) {
    info(
      `${server}/file served with ${queues} queue(s): stor info --json --queues N equals blkio-info num-queues=N for every N <= ${queues} (${PROPS.join(', ')})`,
      async () => {
        await withServer(server, { backend: 'file', size: SIZE, fill: 0, queues }, async (s) => {
          for (let n = 1; n <= queues; n++) {
            // blkio-info assigns properties left to right and connects at the first query, so
            // num-queues is set after the first (driver) query, then everything is read back.
            const peer = await blkioInfo(s.socket, ['driver', `num-queues=${n}`, ...PROPS.slice(1)]);
            assert.ok(peerOk(peer.result), describePeer(peer.result));
            const r = await stor(['info', `vhost-user:${s.socket}`, '--json', '--queues', String(n)]);
            assertOk(r);
            const mine = json(r);
            for (const p of PROPS) {
              assert.ok(p in mine, `stor info --json has no "${p}": ${r.stdout}`);
              assert.is(
                String(mine[p]),
                peer.values[p],
                `${p} (num-queues ${n}): stor info says ${String(mine[p])}, blkio-info says ${peer.values[p]}`,
              );
            }
            // Both agreeing is not enough: they must agree on what was served.
            assert.is(mine['capacity'], SIZE, 'capacity');
            assert.is(mine['max-queues'], queues, 'max-queues');
            assert.is(mine['num-queues'], n, 'num-queues');
            assert.is(mine['read-only'], false, 'read-only');
            assert.is(mine['target'], `vhost-user:${s.socket}`, 'target');
            const seg = mine['max-segments'] as number;
            assert.ok(Number.isInteger(seg) && seg >= 1, `max-segments ${seg}`);
            const align = mine['request-alignment'] as number;
            assert.ok(
              align >= 512 && (align & (align - 1)) === 0,
              `request-alignment ${align} is not a power of two >= 512`,
            );
          }
        });
      },
    );
  }
}

info.run();
