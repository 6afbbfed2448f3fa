// The vhost-user-blk servers the guest tests attach to, started the same way for stor and for
// the reference (qemu-storage-daemon), so a failure against one and not the other points at
// the server, and a failure against both points at the harness or the guest.
import { mkdtempSync, openSync, closeSync, ftruncateSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startQsd, startStor, cleanupSocket, type RunningServer } from '../helpers/servers.js';

export type ServerKind = 'stor' | 'qsd';

export interface DiskOptions {
  /** 'file': a sparse image on disk; 'ram': stor's mem: backend, or for qsd a file in /dev/shm. */
  backend: 'file' | 'ram';
  size: number;
  queues?: number;
  readonly?: boolean;
}

export interface Disk {
  server: RunningServer;
  /** Stops the server and removes its image and socket directory. */
  close(): Promise<void>;
}

export async function startDisk(kind: ServerKind, o: DiskOptions): Promise<Disk> {
  const dir = mkdtempSync(join(o.backend === 'ram' && kind === 'qsd' ? '/dev/shm' : tmpdir(), `stor-vm-${kind}-`));
  let server: RunningServer;
  try {
    if (kind === 'stor') {
      server = await startStor({
        backend: o.backend === 'ram' ? { kind: 'mem', size: o.size } : { kind: 'file', path: join(dir, 'disk.img'), create: o.size },
        queues: o.queues, readonly: o.readonly,
      });
    } else {
      // qemu-storage-daemon does not create images: make a sparse one of the right size.
      const img = join(dir, 'disk.img');
      const fd = openSync(img, 'w');
      try { ftruncateSync(fd, o.size); } finally { closeSync(fd); }
      // By default QEMU ignores discard requests (discard=ignore). The helper has no option for
      // it, so the block driver option rides on the file name (QEMU splits options at commas):
      // with discard=unmap, discarded ranges are punched out of the image and read as zeros.
      server = await startQsd({ backend: { kind: 'file', path: `${img},discard=unmap` }, queues: o.queues, readonly: o.readonly });
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    server,
    close: async () => {
      await server.stop();
      cleanupSocket(server.socket);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs fn with a disk, always stopping the server afterwards. */
export async function withDisk<T>(kind: ServerKind, o: DiskOptions, fn: (d: Disk) => Promise<T>): Promise<T> {
  const d = await startDisk(kind, o);
  try { return await fn(d); } finally { await d.close(); }
}
