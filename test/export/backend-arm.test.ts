// A queue thread must turn on its backend's completion notifications before it sleeps while requests
// are in flight. Some backends only signal their completion fd when asked to (the vhost-user client:
// reaping turns the ring's interrupts off, arming turns them back on); a queue thread that sleeps on
// that fd without arming it waits for a kick that never comes, since the driver is itself waiting for
// the completion. The vhost-user export is put in front of a vhost-user client backend (the library
// allows it; `stor serve` only takes null/mem/file) and driven in notify mode, where every idle moment
// is a sleep, and in adaptive mode with no spin budget.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open, type BlockDevice } from '../../src/lib/client/device.js';
import { VhostUserBlkServer } from '../../src/lib/export/vhost-user/server.js';
import type { CompletionMode } from '../../src/lib/native.js';
import { runBounded } from '../helpers/run.js';
import { STOR_BIN } from '../helpers/paths.js';
import { startStor, cleanupSocket } from '../helpers/servers.js';
import { tempDir } from '../client/helpers.js';

const t = suite('vhost-user export over a backend that notifies only when armed (the vhost-user client)');
let dir = '';

t.before(() => {
  dir = tempDir('backend-arm');
});
t.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface BenchJob {
  error: number;
  read: { total_ios: number };
  write: { total_ios: number };
}

// The driver is another process (`stor bench`): the client library's handshake waits synchronously,
// so it cannot talk to a server on its own event loop.
for (const mode of ['notify', 'adaptive'] as CompletionMode[]) {
  t(`${mode} mode: verified random reads and writes through the bridge, QD16 and QD1, all complete`, async () => {
    const inner = await startStor({ backend: { kind: 'mem', size: 16 << 20 } });
    let backend: BlockDevice | undefined;
    let server: VhostUserBlkServer | undefined;
    const logged: string[] = [];
    try {
      backend = await open(`vhost-user:${inner.socket}`, { queueSize: 256 });
      const socketPath = join(dir, `${mode}.sock`);
      server = new VhostUserBlkServer({
        socketPath,
        backend: backend.backend,
        queues: 1,
        queueSize: 256,
        blockSize: 512,
        readonly: false,
        serial: 'bridge',
        mode,
        log: (level, message) => logged.push(`${level}: ${message}`),
        pollUs: 0, // adaptive: no spin window, so idle moments are sleeps as in notify mode
      });
      server.listen();
      for (const iodepth of ['16', '1']) {
        const args = ['bench', `vhost-user:${socketPath}`, '--json', '--rw', 'randrw', '--verify', '--size', '4M'];
        args.push('--iodepth', iodepth, '--completion', 'notify', '--ramp', '0s', '--runtime', '1s');
        // without arming, the first request that reaches the backend while the thread sleeps never
        // completes: bench then waits until it is killed
        const r = await runBounded(process.execPath, [STOR_BIN, ...args], 30_000);
        const say = `QD${iodepth}: exit ${r.code}${r.timedOut ? ' (killed after 30 s: hung)' : ''}\n${r.stderr}${r.stdout.slice(0, 2000)}\nserver: ${logged.join('\n')}`;
        assert.is(r.code, 0, say);
        const job = (JSON.parse(r.stdout) as { jobs: BenchJob[] }).jobs[0];
        assert.is(job.error, 0, `QD${iodepth}: no request failed`);
        assert.ok(job.read.total_ios > 0 && job.write.total_ios > 0, `QD${iodepth}: reads and writes completed`);
      }
    } finally {
      await server?.close();
      await backend?.close();
      await inner.stop();
      cleanupSocket(inner.socket);
    }
  });
}

t.run();
