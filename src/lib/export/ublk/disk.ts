// A ublk disk (/dev/ublkbN) over a native backend: the control plane of the ublk export. It drives the
// kernel's control commands (ADD_DEV, SET_PARAMS from the backend's own properties, START_DEV;
// STOP_DEV and DEL_DEV at the end; START/END_USER_RECOVERY to take over a disk whose server died)
// and starts the native server (export/ublk.c: one thread per queue, no JavaScript per request).
// Many disks can live in one process: each is one UblkDisk with its own threads and buffers.
// Devices are created with UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE: if this process dies,
// the kernel quiesces the disk and keeps its requests, and a new server can recover it.
import { StorError, usageError } from '../../core/errors.js';
import { eventLevel } from '../events.js';
import {
  native,
  type BackendHandle,
  type BdevProperties,
  type CompletionMode,
  type UblkDevInfo,
  type UblkQueueStats,
  type UblkServerHandle,
} from '../../native.js';

export type UblkLogger = (level: 'info' | 'warn' | 'error', message: string) => void;

export const UBLK_STATE = { DEAD: 0, LIVE: 1, QUIESCED: 2 } as const;
/** The driver's limits (Linux 6.12): ids are minors, depth is a 12-bit tag. */
export const UBLK_MAX_ID = 2 ** 20 - 1;
export const UBLK_MAX_DEPTH = 4096;
/** Per-tag buffer size (and so the largest request): what ublksrv uses too. */
export const UBLK_DEFAULT_MAX_IO = 512 * 1024;

export interface UblkDiskOptions {
  /** Device id; undefined: the kernel picks one. */
  id?: number;
  queues: number;
  depth: number;
  blockSize: 512 | 4096;
  readonly: boolean;
  mode: CompletionMode;
  /** Create with user recovery (default true). */
  recovery?: boolean;
  log?: UblkLogger;
}

const STATE_NAMES = ['dead', 'live', 'quiesced'];
const errnoOf = (e: unknown): number | undefined => (e as { errno?: number }).errno;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Throws the one-line reason when this machine cannot create ublk disks. */
export function assertUblkAvailable(): void {
  const r = native().ublkControlAvailable();
  if (r === 0) return;
  if (r === -2)
    throw new StorError(
      'attach --ublk: /dev/ublk-control does not exist: load the ublk_drv kernel module (modprobe ublk_drv; Linux >= 6.0)',
    );
  if (r === -13 || r === -1)
    throw new StorError('attach --ublk: /dev/ublk-control: permission denied: ublk disks need root (CAP_SYS_ADMIN)');
  throw new StorError(`attach --ublk: cannot open /dev/ublk-control: errno ${-r}`);
}

/** The kernel's view of device `id`, or undefined when there is none. */
export function ublkDeviceInfo(id: number): UblkDevInfo | undefined {
  return native().ublkGetDevInfo(id) ?? undefined;
}

export function ublkStateName(state: number): string {
  return STATE_NAMES[state] ?? `state ${state}`;
}

/** The largest request of a disk over this backend: the tag buffer, bounded by the backend's max-transfer. */
function maxIoBytes(p: BdevProperties): number {
  let m = UBLK_DEFAULT_MAX_IO;
  if (p.maxTransfer > 0) m = Math.min(m, p.maxTransfer);
  return Math.max(4096, Math.floor(m / 4096) * 4096);
}

function checkOptions(p: BdevProperties, o: UblkDiskOptions): void {
  if (o.depth < 1 || o.depth > UBLK_MAX_DEPTH)
    throw usageError('--depth', `${o.depth} is more than ublk's queue depth limit`, `1 to ${UBLK_MAX_DEPTH}`);
  if (o.queues > p.maxQueues)
    throw usageError('--queues', `${o.queues} queues asked, the backend has ${p.maxQueues}`, `1 to ${p.maxQueues}`);
  if (p.capacity % o.blockSize)
    throw usageError('--block-size', `the capacity ${p.capacity} is not a multiple of ${o.blockSize}`, '512 or 4096');
  if (p.requestAlignment > o.blockSize)
    throw usageError(
      '--block-size',
      `the backend needs ${p.requestAlignment}-byte aligned requests`,
      `--block-size ${p.requestAlignment}`,
    );
}

export class UblkDisk {
  private stopped = false;

  private constructor(
    readonly id: number,
    readonly queues: number,
    readonly depth: number,
    readonly capacity: number,
    readonly readonly: boolean,
    private server: UblkServerHandle,
    private readonly backend: BackendHandle,
    private readonly log: UblkLogger,
  ) {}

  /** The block device node. */
  get device(): string {
    return `/dev/ublkb${this.id}`;
  }

  /** Creates and starts a disk: it is usable at /dev/ublkbN when this returns. */
  static create(backend: BackendHandle, o: UblkDiskOptions): UblkDisk {
    const n = native();
    const p = n.bdevProperties(backend);
    checkOptions(p, o);
    const log = o.log ?? (() => {});
    const maxIo = maxIoBytes(p);
    let info: UblkDevInfo;
    try {
      info = n.ublkAddDev({
        id: o.id ?? -1,
        queues: o.queues,
        depth: o.depth,
        maxIoBytes: maxIo,
        recovery: o.recovery ?? true,
      });
    } catch (e) {
      if (errnoOf(e) === 17)
        throw new StorError(`attach --ublk: ublk device ${o.id} exists already`, {
          hint: `stor attach --list shows stor's disks; stor attach --ublk --recover --id ${o.id} takes over one whose server died`,
        });
      throw new StorError(`attach --ublk: cannot add a ublk device: ${(e as Error).message}`, { errno: errnoOf(e) });
    }
    const id = info.id;
    if (info.queues < o.queues)
      log('warn', `the kernel gave ${info.queues} queue(s) of the ${o.queues} asked (one per CPU at most)`);
    const readonly = o.readonly || p.readOnly;
    const cleanupAdded = () => {
      try {
        n.ublkCommand('DEL_DEV', id, 5000);
      } catch {
        /* best effort: the error that got us here is the one to report */
      }
    };
    let server: UblkServerHandle | undefined;
    try {
      const sectorsOf = (bytes: number, dflt: number) => Math.min(bytes > 0 ? Math.floor(bytes / 512) : dflt, 2 ** 22);
      n.ublkSetParams(id, {
        capacity: p.capacity,
        logicalBlockSize: o.blockSize,
        physicalBlockSize: Math.max(o.blockSize, p.requestAlignment),
        ioOpt: p.optimalIoSize > 0 && (p.optimalIoSize & (p.optimalIoSize - 1)) === 0 ? p.optimalIoSize : 0,
        maxSectors: info.maxIoBytes / 512,
        readonly,
        volatileCache: true,
        discardGranularity: Math.max(o.blockSize, p.discardAlignment || 0),
        maxDiscardSectors: p.canDiscard && !readonly ? sectorsOf(p.maxDiscardLength, 2 ** 22) : 0,
        // bounded by the tag buffer: a backend that cannot zero a range gets a write of zeroes from it
        maxWriteZeroesSectors:
          p.canWriteZeroes && !readonly
            ? Math.min(sectorsOf(p.maxWriteZeroesLength, 2 ** 22), info.maxIoBytes / 512)
            : 0,
      });
      server = n.ublkServerCreate(
        backend,
        { id, queues: info.queues, depth: info.depth, maxIoBytes: info.maxIoBytes, readonly, mode: o.mode },
        (kind, _queue, message) => log(eventLevel(kind), message),
      );
      // the kernel waits for every queue's FETCH_REQs, then adds the disk (and reads its partition table)
      n.ublkCommand('START_DEV', id, 30_000);
    } catch (e) {
      if (server) n.ublkServerDestroy(server);
      cleanupAdded();
      throw new StorError(`attach --ublk: cannot start ublk device ${id}: ${(e as Error).message}`, {
        errno: errnoOf(e),
      });
    }
    return new UblkDisk(id, info.queues, info.depth, p.capacity, readonly, server, backend, log);
  }

  /**
   * Takes over device `id` whose server died (the kernel quiesced it and holds its requests):
   * START_USER_RECOVERY, a new server fetching on every queue, END_USER_RECOVERY. The requests the
   * dead server had taken are reissued to this one.
   */
  static async recover(
    id: number,
    backend: BackendHandle,
    o: Omit<UblkDiskOptions, 'id' | 'queues' | 'depth'>,
  ): Promise<UblkDisk> {
    const n = native();
    const log = o.log ?? (() => {});
    const p = n.bdevProperties(backend);
    // the kernel quiesces the disk shortly after the old server's io_uring is gone
    let info = ublkDeviceInfo(id);
    for (let waited = 0; info && info.state === UBLK_STATE.LIVE && waited < 10_000; waited += 100) {
      if (info.pid > 0 && pidAlive(info.pid))
        throw new StorError(`attach --ublk --recover: ublk device ${id} is live, served by pid ${info.pid}`, {
          hint: 'recovery is for a disk whose server died',
        });
      await sleep(100);
      info = ublkDeviceInfo(id);
    }
    if (!info) throw new StorError(`attach --ublk --recover: there is no ublk device ${id}`);
    if (info.state !== UBLK_STATE.QUIESCED)
      throw new StorError(
        `attach --ublk --recover: ublk device ${id} is ${ublkStateName(info.state)}, not quiesced: nothing to recover`,
      );
    checkOptions(p, { ...o, queues: info.queues, depth: info.depth });
    // START_USER_RECOVERY is refused (EBUSY) until the dead process's /dev/ublkcN is closed
    for (let waited = 0; ; waited += 100) {
      try {
        n.ublkCommand('START_USER_RECOVERY', id, 5000);
        break;
      } catch (e) {
        if (errnoOf(e) !== 16 || waited >= 10_000)
          throw new StorError(`attach --ublk --recover: ublk device ${id}: ${(e as Error).message}`, {
            errno: errnoOf(e),
          });
        await sleep(100);
      }
    }
    const readonly = o.readonly || p.readOnly;
    const server = n.ublkServerCreate(
      backend,
      { id, queues: info.queues, depth: info.depth, maxIoBytes: info.maxIoBytes, readonly, mode: o.mode },
      (kind, _queue, message) => log(eventLevel(kind), message),
    );
    try {
      n.ublkCommand('END_USER_RECOVERY', id, 30_000);
    } catch (e) {
      n.ublkServerDestroy(server);
      throw new StorError(`attach --ublk --recover: ublk device ${id}: ${(e as Error).message}`, {
        errno: errnoOf(e),
      });
    }
    return new UblkDisk(id, info.queues, info.depth, p.capacity, readonly, server, backend, log);
  }

  stats(): UblkQueueStats[] {
    return native().ublkServerStats(this.server);
  }

  /**
   * Removes the disk: STOP_DEV (the kernel drains what is in flight through our queues, then fails
   * new I/O), the queue threads end, the backend is flushed, DEL_DEV. Returns whether the disk was
   * still open (then the kernel frees the id once its last user closes it).
   */
  stop(): { stillOpen: boolean } {
    if (this.stopped) return { stillOpen: false };
    this.stopped = true;
    const n = native();
    try {
      n.ublkCommand('STOP_DEV', this.id, 30_000);
    } catch (e) {
      this.log('error', `STOP_DEV of ublk device ${this.id}: ${(e as Error).message}`);
    }
    const left = n.ublkServerWait(this.server, 5000);
    if (left) this.log('warn', `${left} queue thread(s) of ublk device ${this.id} did not end; stopping them`);
    n.ublkServerDestroy(this.server);
    try {
      n.backendFlush(this.backend);
    } catch (e) {
      this.log('error', `flush: ${(e as Error).message}`);
    }
    try {
      n.ublkCommand('DEL_DEV', this.id, 3000);
      return { stillOpen: false };
    } catch (e) {
      if (errnoOf(e) === 110) return { stillOpen: true }; // deleted; the id waits for the last opener
      this.log('error', `DEL_DEV of ublk device ${this.id}: ${(e as Error).message}`);
      return { stillOpen: false };
    }
  }

  /** Ends this server without touching the device, as a crash would: the disk stays, quiesced, recoverable. */
  abandon(): void {
    if (this.stopped) return;
    this.stopped = true;
    native().ublkServerDestroy(this.server);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
