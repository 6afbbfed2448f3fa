// The vhost-user-blk servers the guest tests attach to, started the same way for stor and for
// the reference (qemu-storage-daemon), so a failure against one and not the other points at
// the server, and a failure against both points at the harness or the guest.
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
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
  /** 'file' only: bytes the image starts with (the image is then made here, not by the server). */
  prefill?: Buffer;
}

export interface Disk {
  server: RunningServer;
  /** Host path of the image ('file' backends, and qsd's /dev/shm file for 'ram'). */
  image?: string;
  /** Stops the server and removes its image and socket directory. */
  close(): Promise<void>;
}

export async function startDisk(kind: ServerKind, o: DiskOptions): Promise<Disk> {
  const dir = mkdtempSync(join(o.backend === 'ram' && kind === 'qsd' ? '/dev/shm' : tmpdir(), `stor-vm-${kind}-`));
  const img = join(dir, 'disk.img');
  const makeImage = () => {
    const fd = openSync(img, 'w');
    try {
      ftruncateSync(fd, o.size);
      if (o.prefill) writeSync(fd, o.prefill, 0, o.prefill.length, 0);
    } finally {
      closeSync(fd);
    }
  };
  let server: RunningServer;
  try {
    if (kind === 'stor') {
      if (o.backend === 'ram') {
        server = await startStor({ backend: { kind: 'mem', size: o.size }, queues: o.queues, readonly: o.readonly });
      } else {
        // Let stor create the image (create=SIZE) unless it must hold given bytes.
        if (o.prefill) makeImage();
        server = await startStor({
          backend: { kind: 'file', path: img, ...(o.prefill ? {} : { create: o.size }) },
          queues: o.queues,
          readonly: o.readonly,
        });
      }
    } else {
      // qemu-storage-daemon does not create images: make a sparse one of the right size.
      makeImage();
      // By default QEMU ignores discard requests (discard=ignore): with discard=unmap, discarded
      // ranges are punched out of the image and read as zeros.
      server = await startQsd({
        backend: { kind: 'file', path: img, discard: true },
        queues: o.queues,
        readonly: o.readonly,
      });
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    server,
    image: kind === 'stor' && o.backend === 'ram' ? undefined : img,
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
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}
