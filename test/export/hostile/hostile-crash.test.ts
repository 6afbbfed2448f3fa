// Hostile front-ends that CRASH or HANG `stor serve` (found while writing the bad-input tests; see
// the report). These tests state the required behaviour and fail until the server is fixed.
// Each case gets its own server so that a crash or hang cannot take other tests down; every case
// runs over a mem and a file backend.
import { ftruncateSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../../../src/lib/native.js';
import { VIRTIO_BLK_S, VIRTIO_BLK_T } from '../../../src/lib/proto/virtio-blk.js';
import { Harness, sleep, within, type BackendKind } from './hostile-helpers.js';

for (const backend of ['mem', 'file'] as BackendKind[]) {
  const t = suite(`hostile front-end must not crash or hang the server (${backend} backend)`);

  t(
    'guest memory shrunk after SET_MEM_TABLE (memfd truncated to 0, then a kick) -> server survives (no SIGBUS)',
    async () => {
      const h = new Harness(backend);
      h.stopTimeoutMs = 1500;
      await within(20_000, 'start', h.start());
      try {
        await within(
          20_000,
          'case',
          (async () => {
            const m = h.mark();
            const s = h.open();
            let sealed = false;
            try {
              // After truncation our own mapping faults too, so we touch nothing: the kick alone makes
              // the queue thread read avail->idx from the now missing page.
              try {
                ftruncateSync(s.mem.fd, 0);
              } catch (e) {
                // A fixed server may seal the memfd against shrinking (F_SEAL_SHRINK): then the request works.
                if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
                sealed = true;
              }
              if (sealed) {
                const c = await s.q0.run({ type: VIRTIO_BLK_T.IN, sector: 0, inLen: 4096 }, 3000);
                assert.is(c.status, VIRTIO_BLK_S.OK);
              } else {
                s.q0.kick();
                await sleep(1000);
                assert.ok(
                  h.alive(),
                  `server died: ${h.server.proc.signalCode ?? h.server.proc.exitCode}; output:\n${h.since(m)}`,
                );
              }
            } finally {
              s.close();
            }
            await h.waitDisconnected(m);
            await h.proveHealthy();
          })(),
        );
      } finally {
        await h.stop();
      }
    },
  );

  t('call fd that cannot take a write (blocking eventfd at its maximum count) -> server does not hang', async () => {
    const h = new Harness(backend);
    h.stopTimeoutMs = 1500;
    await within(20_000, 'start', h.start());
    try {
      await within(
        20_000,
        'case',
        (async () => {
          const m = h.mark();
          const s = h.open();
          const call = native().eventfd(0, false); // blocking, as a careless front-end would make it
          try {
            // 0xfffffffffffffffe is the largest count: any further write(1) blocks until someone reads.
            (native().eventfdWrite as unknown as (fd: number, v: bigint) => void)(call, 0xfffffffffffffffen);
            s.fe.setVringCall(0, call);
            const c = await s.q0.run({ type: VIRTIO_BLK_T.IN, sector: 0, inLen: 512 }, 3000);
            assert.is(c.status, VIRTIO_BLK_S.OK);
          } finally {
            native().close(call);
            s.close();
          }
          // The front-end is gone and nobody will ever read that eventfd: the server must still end
          // the session and serve the next front-end.
          await h.waitDisconnected(m);
          await h.proveHealthy();
        })(),
      );
    } finally {
      await h.stop();
    }
  });

  t.run();
}
