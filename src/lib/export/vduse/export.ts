// The VDUSE export's control plane: a backend as a kernel virtio-blk disk (/dev/vdX) on this machine,
// through VDUSE and the vDPA bus. It creates the VDUSE device (/dev/vduse/control through the addon:
// API version, VDUSE_CREATE_DEV with the virtio-blk features and config space, VDUSE_VQ_SETUP), opens
// the native device that answers the kernel and runs the rings (native/export/vduse_blk.c), adds it to
// the vDPA bus with iproute2's `vdpa` tool (so virtio_vdpa binds it and virtio_blk makes a disk), finds
// the disk through sysfs, and removes all of it again in the opposite order. Nothing here runs per I/O.
import { execa } from 'execa';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { StorError } from '../../core/errors.js';
import {
  native,
  type BackendHandle,
  type CompletionMode,
  type VduseDeviceHandle,
  type VduseQueueStats,
} from '../../native.js';
import { VIRTIO_BLK_F, VIRTIO_F, bit, encodeBlkConfig } from '../../proto/virtio-blk.js';
import { attachDir } from '../attached.js';
import { eventLevel } from '../events.js';

export const VDUSE_CONTROL = '/dev/vduse/control';
const MAX_DISCARD_SECTORS = 1 << 22;
/** How long the kernel may take to bind the device and make the disk (a TCG guest is slow). */
const BIND_TIMEOUT_MS = 60_000;
const VDPA_TIMEOUT_MS = 120_000;

export type VduseLog = (level: 'info' | 'warn' | 'error', message: string) => void;

export interface VduseBlkExportOptions {
  /** VDUSE device name: /dev/vduse/NAME and the vDPA device's name. */
  name: string;
  backend: BackendHandle;
  capacity: number;
  readonly: boolean;
  queues: number;
  queueSize: number;
  blockSize: 512 | 4096;
  serial: string;
  mode: CompletionMode;
  spinUs?: number;
  /** The inflight log file that lets a later server reconnect (inflightLogPath); undefined: none. */
  inflightLog?: string;
  log: VduseLog;
}

/**
 * Where a device's inflight log lives (next to its record, so on /run: it lasts as long as the device
 * can). STOR_VDUSE_INFLIGHT=off in the environment: no log (a reconnect then restarts each ring at its
 * used index, as a vhost-user front-end without inflight tracking does — to show what goes wrong).
 */
export function inflightLogPath(name: string): string | undefined {
  const env = process.env.STOR_VDUSE_INFLIGHT;
  if (env === 'off' || env === '0') return undefined;
  return join(attachDir(), `vduse-${name}.inflight`);
}

const HINT_LOAD = 'load the modules: modprobe vduse && modprobe virtio_vdpa (Linux >= 5.15 with CONFIG_VDPA_USER)';

/**
 * Checks that this kernel offers VDUSE and that we may use it: /dev/vduse/control exists (else the
 * vduse module is not loaded or the kernel is too old), we are root, and it speaks API version 0.
 */
export function checkVduse(): void {
  if (!existsSync(VDUSE_CONTROL))
    throw new StorError(`attach --vduse: ${VDUSE_CONTROL} does not exist: this kernel has no VDUSE loaded`, {
      hint: HINT_LOAD,
    });
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new StorError('attach --vduse: needs root (VDUSE devices and the vDPA bus are root-only)', {
      hint: 'run it as root, e.g. with sudo',
    });
  try {
    native().vduseApiVersion();
  } catch (e) {
    const err = e as Error & { errno?: number };
    throw new StorError(`attach --vduse: ${err.message}`, {
      errno: err.errno,
      hint: err.errno === 13 ? 'run it as root, e.g. with sudo' : HINT_LOAD,
    });
  }
}

/** Whether a VDUSE device of this name exists (ours or anyone's). */
export function vduseDeviceExists(name: string): boolean {
  return existsSync(`/dev/vduse/${name}`) || existsSync(`/sys/class/vduse/${name}`);
}

/** Whether the vDPA bus has a device of this name. */
export function vdpaDeviceExists(name: string): boolean {
  return existsSync(`/sys/bus/vdpa/devices/${name}`);
}

/** The block node (/dev/vdX) the kernel made of vDPA device NAME, or undefined while there is none. */
export function vdpaBlockNode(name: string): string | undefined {
  const dir = `/sys/bus/vdpa/devices/${name}`;
  let entries: string[];
  try {
    entries = readdirSync(dir).filter((e) => /^virtio\d+$/.test(e));
  } catch {
    return undefined;
  }
  for (const v of entries) {
    try {
      const disks = readdirSync(join(dir, v, 'block'));
      if (disks.length) return `/dev/${disks[0]}`;
    } catch {
      /* virtio_blk has not probed yet */
    }
  }
  return undefined;
}

/** Where the disk or one of its partitions is mounted (empty: nowhere), and what holds it (dm, md). */
export function diskUsers(node: string): string[] {
  const users: string[] = [];
  const base = node.replace(/^\/dev\//, '');
  const ours = (src: string): boolean =>
    src === node || (src.startsWith(node) && /^p?\d+$/.test(src.slice(node.length)));
  try {
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const [src, at] = line.split(' ');
      if (src && ours(src)) users.push(`mounted on ${at.replace(/\\040/g, ' ')}`);
    }
  } catch {
    /* no /proc: nothing to report */
  }
  try {
    for (const h of readdirSync(`/sys/block/${base}/holders`)) users.push(`held by ${h}`);
  } catch {
    /* no holders directory */
  }
  return users;
}

async function vdpa(args: string[], log?: VduseLog): Promise<void> {
  let r;
  try {
    r = await execa('vdpa', args, { reject: false, timeout: VDPA_TIMEOUT_MS, stdin: 'ignore' });
  } catch (e) {
    throw new StorError(`vdpa ${args.join(' ')}: ${(e as Error).message}`, {
      hint: 'install iproute2 (it ships the vdpa tool)',
    });
  }
  if (r.failed) {
    const notFound = (r as { code?: string }).code === 'ENOENT';
    const why = notFound ? 'the vdpa tool is not installed' : String(r.stderr || r.stdout || r.shortMessage).trim();
    throw new StorError(`vdpa ${args.join(' ')}: ${why}`, {
      hint: notFound ? 'install iproute2 (it ships the vdpa tool)' : undefined,
    });
  }
  log?.('info', `vdpa ${args.join(' ')}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** VDUSE_DESTROY_DEV, retried while the kernel still releases the vDPA device (EBUSY for a moment). */
async function destroyDevice(name: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      native().vduseDestroyDevice(name);
      return;
    } catch (e) {
      const err = e as Error & { errno?: number };
      if (err.errno === 2 || err.errno === 22) return; // gone already
      if (err.errno !== 16 || i >= 100) throw new StorError(`removing VDUSE device ${name}: ${err.message}`);
      await sleep(50);
    }
  }
}

/**
 * Removes a VDUSE device whose server died: answers the kernel while the vDPA device is deleted (so
 * the driver's reset does not wait out the message timeout), then destroys it.
 */
export async function removeLeftover(name: string, queues: number, log: VduseLog): Promise<void> {
  const h = native().vduseDeviceOpen(
    name,
    null,
    { queues: Math.max(1, Math.min(64, queues)), blockSize: 512, readonly: true, serial: '', mode: 'notify' },
    () => {},
  );
  try {
    if (vdpaDeviceExists(name)) await vdpa(['dev', 'del', name], log);
  } finally {
    native().vduseDeviceClose(h);
  }
  await destroyDevice(name);
  rmSync(join(attachDir(), `vduse-${name}.inflight`), { force: true });
}

export class VduseBlkExport {
  readonly options: VduseBlkExportOptions;
  readonly features: bigint;
  private handle?: VduseDeviceHandle;
  private created = false;
  private added = false;
  private blockNode?: string;
  private readonly config: Buffer;

  constructor(options: VduseBlkExportOptions) {
    this.options = options;
    let f =
      bit(VIRTIO_F.VERSION_1) |
      bit(VIRTIO_F.ACCESS_PLATFORM) | // VDUSE refuses a device without it: all memory goes through the IOTLB
      bit(VIRTIO_F.RING_INDIRECT_DESC) |
      bit(VIRTIO_F.RING_EVENT_IDX) |
      bit(VIRTIO_BLK_F.SEG_MAX) |
      bit(VIRTIO_BLK_F.BLK_SIZE) |
      bit(VIRTIO_BLK_F.FLUSH) |
      bit(VIRTIO_BLK_F.MQ) |
      bit(VIRTIO_BLK_F.TOPOLOGY);
    // CONFIG_WCE is not offered: VDUSE refuses it for block devices (the kernel cannot write our
    // config space); FLUSH alone makes the disk write-back, which is what the backends are.
    f |= options.readonly ? bit(VIRTIO_BLK_F.RO) : bit(VIRTIO_BLK_F.DISCARD) | bit(VIRTIO_BLK_F.WRITE_ZEROES);
    this.features = f;
    this.config = encodeBlkConfig({
      capacityBytes: options.capacity,
      blockSize: options.blockSize,
      numQueues: options.queues,
      segMax: Math.min(options.queueSize - 2, 254),
      maxDiscardSectors: MAX_DISCARD_SECTORS,
      maxWriteZeroesSectors: MAX_DISCARD_SECTORS,
      discardSectorAlignment: options.blockSize / 512,
      writeZeroesMayUnmap: true,
    });
  }

  get name(): string {
    return this.options.name;
  }
  /** /dev/vdX once attach() has returned. */
  get node(): string | undefined {
    return this.blockNode;
  }

  /** Creates the VDUSE device and starts answering the kernel (the rings start when the driver is ready). */
  create(): void {
    const o = this.options;
    try {
      native().vduseCreateDevice({
        name: o.name,
        features: this.features,
        queues: o.queues,
        queueSize: o.queueSize,
        config: this.config,
      });
    } catch (e) {
      const err = e as Error & { errno?: number };
      throw new StorError(`creating VDUSE device ${o.name}: ${err.message}`, {
        errno: err.errno,
        hint: err.errno === 17 ? 'the name is taken: choose another --name' : undefined,
      });
    }
    this.created = true;
    if (o.inflightLog) mkdirSync(dirname(o.inflightLog), { recursive: true, mode: 0o755 });
    this.handle = this.open(false);
  }

  private open(reconnect: boolean): VduseDeviceHandle {
    const o = this.options;
    return native().vduseDeviceOpen(
      o.name,
      o.backend,
      {
        queues: o.queues,
        blockSize: o.blockSize,
        readonly: o.readonly,
        serial: o.serial,
        mode: o.mode,
        spinUs: o.spinUs,
        maxDiscardSectors: MAX_DISCARD_SECTORS,
        maxWriteZeroesSectors: MAX_DISCARD_SECTORS,
        queueSize: o.queueSize,
        inflightLog: o.inflightLog ?? '',
        reconnect,
      },
      (kind, queue, message) => this.onEvent(kind, queue, message),
    );
  }

  /**
   * Takes over a device whose server died (the kernel keeps a VDUSE device, its rings and its disk
   * when the server's fd closes; only VDUSE_DESTROY_DEV removes it): resumes its rings from the ring
   * state and the inflight log, and returns its /dev/vdX. Detach then removes it as if created here.
   */
  reconnect(): string {
    const o = this.options;
    const node = vdpaBlockNode(o.name);
    if (!node || !existsSync(node))
      throw new StorError(`reconnect: VDUSE device ${o.name} has no disk (it is not on the vDPA bus)`, {
        hint: `attach it anew: stor attach --vduse --name ${o.name} --backend SPEC`,
      });
    try {
      this.handle = this.open(true);
    } catch (e) {
      const err = e as Error & { errno?: number };
      throw new StorError(`reconnect to VDUSE device ${o.name}: ${err.message}`, {
        errno: err.errno,
        hint: err.errno === 16 ? 'another process has the device open' : undefined,
      });
    }
    this.created = true;
    this.added = true;
    this.blockNode = node;
    return node;
  }

  private onEvent(kind: string, _queue: number, message: string): void {
    this.options.log(eventLevel(kind), `${this.options.name}: ${message}`);
  }

  /** Adds the device to the vDPA bus and waits until the kernel has made the disk; returns /dev/vdX. */
  async attach(): Promise<string> {
    await vdpa(['dev', 'add', 'name', this.options.name, 'mgmtdev', 'vduse'], this.options.log);
    this.added = true;
    const deadline = Date.now() + BIND_TIMEOUT_MS;
    for (;;) {
      const node = vdpaBlockNode(this.options.name);
      if (node && existsSync(node)) {
        this.blockNode = node;
        return node;
      }
      if (Date.now() > deadline)
        throw new StorError(`vDPA device ${this.options.name}: no block device after ${BIND_TIMEOUT_MS / 1000} s`, {
          hint: 'is virtio_vdpa loaded (modprobe virtio_vdpa) and virtio_blk available? dmesg says more',
        });
      await sleep(25);
    }
  }

  stats(): VduseQueueStats[] {
    return this.handle ? native().vduseDeviceStats(this.handle) : [];
  }

  /**
   * Stops serving without removing anything, as if this process had died: the rings drain and stop,
   * the device fd closes, and the kernel keeps the device and its disk for a later reconnect.
   */
  release(): void {
    if (this.handle) native().vduseDeviceClose(this.handle);
    this.handle = undefined;
    this.created = false;
    this.added = false;
  }

  /**
   * Removes the disk: `vdpa dev del` (the kernel drains in-flight I/O and resets the device; the rings
   * stop after their last completion), then the native device is closed and the VDUSE device destroyed.
   */
  async detach(): Promise<void> {
    let firstError: unknown;
    if (this.added) {
      try {
        await vdpa(['dev', 'del', this.options.name], this.options.log);
        this.added = false;
      } catch (e) {
        firstError = e;
      }
    }
    if (this.handle) native().vduseDeviceClose(this.handle);
    if (this.created && !this.added) {
      try {
        await destroyDevice(this.options.name);
        this.created = false;
        if (this.options.inflightLog) rmSync(this.options.inflightLog, { force: true });
      } catch (e) {
        firstError ??= e;
      }
    }
    if (firstError) throw firstError;
  }
}
