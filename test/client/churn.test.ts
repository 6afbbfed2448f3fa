// Limits under load (issue 14, point 6, the parts one `stor serve` can show): a server with 64 queues
// serves I/O on every one of them; and 1000 connect/disconnect cycles of a front-end (stor's client
// library: a full vhost-user handshake, memory table, rings, then close) leave the server with the
// same open fds and about the same RSS as before, still serving. (Churn on one export while another
// export of the same process stays busy needs `stor daemon`'s several exports.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync } from 'node:fs';
import { BlockDevice } from '../../src/lib/client/device.js';
import { cleanupSocket, startStor, type RunningServer } from '../helpers/servers.js';

const CYCLES = Number(process.env.STOR_CHURN_CYCLES ?? 1000);
const t = suite('limits: 64 queues, connect/disconnect churn');

const openFds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const settle = () => new Promise((r) => setTimeout(r, 300));

async function withServer(queues: number, f: (s: RunningServer) => Promise<void>): Promise<void> {
  const s = await startStor({ backend: { kind: 'mem', size: 64 << 20 }, queues, mode: 'notify' });
  try {
    await f(s);
  } finally {
    await s.stop();
    cleanupSocket(s.socket);
  }
}

t('stor serve --queues 64: the client opens all 64 queues and each writes and reads back its own block', async () => {
  await withServer(64, async (s) => {
    const dev = await BlockDevice.open(`vhost-user:${s.socket}`, { numQueues: 64 });
    try {
      assert.is(dev.properties.numQueues, 64);
      await Promise.all(
        Array.from({ length: 64 }, (_, q) => dev.write(q * 4096, Buffer.alloc(4096, q + 1), { queue: q })),
      );
      for (let q = 0; q < 64; q++) {
        const back = await dev.read(q * 4096, 4096, { queue: (q + 1) % 64 });
        assert.ok(back.equals(Buffer.alloc(4096, q + 1)), `block written on queue ${q}`);
      }
    } finally {
      await dev.close();
    }
  });
});

t(`${CYCLES} connect/disconnect cycles: no fd or memory growth in the server, which still serves`, async () => {
  await withServer(2, async (s) => {
    const cycle = async (i: number) => {
      const dev = await BlockDevice.open(`vhost-user:${s.socket}`, { numQueues: 2 });
      if (i % 50 === 0) await dev.write(0, Buffer.alloc(512, i & 0xff));
      await dev.close();
    };
    for (let i = 0; i < 50; i++) await cycle(i); // warm-up: lazily made buffers, JIT, the allocator
    await settle();
    const fds0 = openFds(s.pid),
      rss0 = s.rssKiB();
    for (let i = 0; i < CYCLES; i++) await cycle(i);
    await settle();
    const fds1 = openFds(s.pid),
      rss1 = s.rssKiB();
    console.log(`  ${CYCLES} cycles: server fds ${fds0} -> ${fds1}, RSS ${rss0} -> ${rss1} KiB`);
    assert.is(fds1, fds0, 'open fds after the churn');
    assert.ok(rss1 - rss0 < 16 * 1024, `RSS grew by ${rss1 - rss0} KiB`);
    const dev = await BlockDevice.open(`vhost-user:${s.socket}`);
    try {
      await dev.write(4096, Buffer.alloc(4096, 0x5a));
      assert.ok((await dev.read(4096, 4096)).equals(Buffer.alloc(4096, 0x5a)), 'still serving');
    } finally {
      await dev.close();
    }
    assert.ok(s.proc.exitCode === null, 'the server is alive');
  });
});

t.run();
