// The body of `stor bench`'s embedded server: a worker thread that builds a device table with one
// null backend and one vhost-user-blk export, says "ready", and tears both down on "stop". It runs
// in a worker because the client's vhost-user handshake waits synchronously for replies that the
// export's control plane, on its own event loop, must be free to send. Queue threads are native
// either way; only the control plane lives in this thread.
import { parentPort, workerData } from 'node:worker_threads';
import { DeviceTable } from '../../export/table.js';
import type { EmbeddedServerOptions } from './embedded.js';

const o = workerData as EmbeddedServerOptions & { socket: string };
const port = parentPort!;
const table = new DeviceTable((level, message) => port.postMessage({ event: 'log', level, message }));
try {
  table.addBackend('bench-null', { driver: 'null', props: { size: String(o.size) } });
  table.addVhostUserBlkExport('bench', 'bench-null', {
    socket: o.socket,
    queues: o.queues,
    queueSize: 1024,
    blockSize: 512,
    readonly: false,
    serial: 'stor',
    mode: o.mode,
    pollUs: o.pollUs,
  });
  port.postMessage({ event: 'ready' });
} catch (e) {
  const err = e as Error & { hint?: string; exitCode?: number };
  port.postMessage({ event: 'error', message: err.message, hint: err.hint, exitCode: err.exitCode });
  void table.closeAll().finally(() => port.close());
}
port.on('message', (m: unknown) => {
  if (m !== 'stop') return;
  void table.closeAll().then(() => {
    port.postMessage({ event: 'stopped' });
    port.close();
  });
});
