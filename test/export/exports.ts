// The exports the conformance group runs over, one Export descriptor each: how to start it on a
// backend fixture, what it promises (seg_max, serial), and the drivers that reach it. vhost-user-blk
// from `stor serve` (a child process through the one launcher) and the same export from
// qemu-storage-daemon, the reference, for the checks that are about the protocol; and the kernel
// exports, `stor attach --ublk` and `stor attach --vduse`, run inside the one test guest (guest.ts),
// reached through the kernel's block device.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { QueueCounters } from '../../src/lib/native.js';
import { cleanupSocket, startQsd, startStor, type RunningServer } from '../helpers/servers.js';
import { BackendFixture, type BackendKind } from './backends.js';
import { LibraryDriver, VirtqDriver, type DiskDriver } from './drivers.js';
import { GuestBackendFixture, KernelDiskDriver, kernelGuest, kernelGuestUnavailable } from './guest.js';

export interface ExportOptions {
  queues: number;
  readonly: boolean;
  /** Serial for GET_ID, when the export takes one. */
  serial: string;
}

export interface RunningExport {
  /** Where a driver reaches it: a vhost-user socket, or a device node in the test guest. */
  readonly endpoint: string;
  /** What GET_ID must return. */
  readonly serial: string;
  /** seg_max the export must advertise. */
  readonly segMax: number;
  /** The server's log so far, appended to a failure. */
  output(): string;
  alive(): boolean;
  /** Stops it; an export that counts per queue (stor attach's stopped line) says what each served. */
  stop(): Promise<QueueCounters[] | void>;
}

/** A way to drive I/O into an export. The export takes one driver at a time: each is opened, used, closed. */
export interface DriverKind {
  readonly name: string;
  /** Requests reach the export unchecked (see DiskDriver.raw). */
  readonly raw: boolean;
  open(e: RunningExport, queues: number): Promise<DiskDriver>;
}

/**
 * What a check can reach: vhost-user-blk is driven with raw virtio requests; ublk and VDUSE only
 * through the kernel's block layer, which sends what an application asks for and nothing odd.
 */
export type ExportKind = 'vhost-user' | 'ublk' | 'vduse';

export interface Export {
  /** Short and unique: the test names carry it. */
  readonly name: string;
  readonly kind: ExportKind;
  /** Why it cannot be tested on this machine, or undefined. */
  unavailable?(): string | undefined;
  /** How long starting it and one check may take (ms). */
  readonly timeouts: { start: number; check: number };
  /** A reference implementation (not stor): only protocol checks run against it. */
  readonly reference: boolean;
  /** The backends this export is tested over. */
  readonly backends: readonly BackendKind[];
  /** The drivers the checks run through, in this order. */
  readonly drivers: readonly DriverKind[];
  /** A backend fixture for this export (some servers need mem as a tmpfs file). */
  fixture(kind: BackendKind, size: number): BackendFixture;
  start(b: BackendFixture, o: ExportOptions): Promise<RunningExport>;
}

/**
 * Opens a driver, retrying for a while: a vhost-user back-end notices the previous front-end's
 * disconnect asynchronously and refuses a second one until then.
 */
async function openWithRetry(what: string, open: () => Promise<DiskDriver>): Promise<DiskDriver> {
  const deadline = Date.now() + 3000;
  for (;;) {
    try {
      return await open();
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The test driver; its rings are ringSize entries, so a request of seg_max segments fits. */
const virtqDriver = (ringSize: number): DriverKind => ({
  name: 'virtq',
  raw: true,
  open: (e, queues) => openWithRetry('virtq test driver', async () => VirtqDriver.open(e.endpoint, queues, ringSize)),
});
const libraryDriver: DriverKind = {
  name: 'library',
  raw: false,
  open: (e, queues) => openWithRetry('stor client library', () => LibraryDriver.open(e.endpoint, queues)),
};

/** A vhost-user-blk server started by the launcher. */
function vhostUserExport(srv: RunningServer, serial: string, segMax: number): RunningExport {
  return {
    endpoint: srv.socket,
    serial,
    segMax,
    output: () => srv.output(),
    alive: () => srv.proc.exitCode === null && srv.proc.signalCode === null,
    stop: async () => {
      await srv.stop(5000);
      cleanupSocket(srv.socket);
    },
  };
}

/** `stor serve`: seg_max is min(queue size - 2, 254), its default queue size is 1024. */
export const STOR_VHOST_USER: Export = {
  name: 'vhost-user-blk (stor serve)',
  kind: 'vhost-user',
  timeouts: { start: 20_000, check: 15_000 },
  reference: false,
  backends: ['null', 'mem', 'file', 'file-direct'],
  drivers: [virtqDriver(256), libraryDriver],
  fixture: (kind, size) => new BackendFixture(kind, size),
  async start(b, o) {
    const srv = await startStor({
      backend: b.launcherSpec(),
      queues: o.queues,
      readonly: o.readonly,
      extraArgs: ['--serial', o.serial],
    });
    return vhostUserExport(srv, o.serial, 254);
  },
};

/**
 * qemu-storage-daemon 7.2: a fixed virtqueue size of 128 (seg_max 126), and GET_ID answers
 * "vhost_user_blk" whatever the node is called. Discards only reach the image with discard=unmap.
 */
export const QSD_VHOST_USER: Export = {
  name: 'vhost-user-blk (qemu-storage-daemon)',
  kind: 'vhost-user',
  timeouts: { start: 20_000, check: 15_000 },
  reference: true,
  backends: ['file'],
  // stor's library against qemu-storage-daemon is test/client's business
  drivers: [virtqDriver(128)],
  fixture: (kind, size) => new BackendFixture(kind, size, true),
  async start(b, o) {
    const srv = await startQsd({
      backend: b.launcherSpec({ qsdDiscard: true }),
      queues: o.queues,
      readonly: o.readonly,
    });
    return vhostUserExport(srv, 'vhost_user_blk', 126);
  },
};

/** The kernel block device: opened once per export, its sysfs read then. */
const kernelDriver: DriverKind = {
  name: 'kernel block device',
  raw: false,
  open: async (e) => KernelDiskDriver.open(await kernelGuest(), e.endpoint),
};

/**
 * `stor attach --ublk|--vduse` in the test guest. seg_max is what the kernel's queue takes: ublk
 * lets a request have any number of segments (65535), VDUSE's virtio-blk has stor's seg_max for
 * its default queue size of 128 (126). Only VDUSE carries a serial (GET_ID).
 */
function kernelExport(kind: 'ublk' | 'vduse'): Export {
  return {
    name: `${kind === 'ublk' ? 'ublk' : 'VDUSE'} (stor attach --${kind})`,
    kind,
    reference: false,
    unavailable: kernelGuestUnavailable,
    // the first start boots the guest
    timeouts: { start: 180_000, check: 60_000 },
    backends: ['null', 'mem', 'file'],
    drivers: [kernelDriver],
    fixture: (k, size) => new GuestBackendFixture(k, size),
    async start(b, o) {
      const g = await kernelGuest();
      const { backend, stage } = await (b as GuestBackendFixture).attachSpec(g);
      const args = [`--${kind}`, '--backend', backend, '--queues', String(o.queues)];
      if (o.readonly) args.push('--readonly');
      if (kind === 'vduse') args.push('--serial', o.serial);
      const log = g.file(`attach-${kind}`);
      const a = await g.call('attach', { args, stage, log }, 120_000);
      const n = a.attach as number;
      return {
        endpoint: a.device as string,
        serial: o.serial,
        segMax: kind === 'ublk' ? 65535 : 126,
        output: () => {
          try {
            return readFileSync(join(g.share, log), 'utf8');
          } catch {
            return '';
          }
        },
        alive: () => g.attachExit(n) === undefined,
        stop: async () => {
          const r = await g.call('detach', { attach: n }, 60_000);
          if (r.code !== 0) throw new Error(`stor attach --${kind} exited ${String(r.code ?? r.signal)} on SIGTERM`);
          const stopped = readFileSync(join(g.share, log), 'utf8')
            .split('\n')
            .find((l) => l.includes('"event":"stopped"'));
          if (!stopped) throw new Error(`stor attach --${kind}: no stopped line`);
          return (JSON.parse(stopped) as { queues: QueueCounters[] }).queues;
        },
      };
    },
  };
}

export const STOR_UBLK = kernelExport('ublk');
export const STOR_VDUSE = kernelExport('vduse');

export const EXPORTS: readonly Export[] = [STOR_VHOST_USER, QSD_VHOST_USER, STOR_UBLK, STOR_VDUSE];
