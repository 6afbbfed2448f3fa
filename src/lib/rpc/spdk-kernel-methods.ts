// The kernel-disk methods of `stor daemon`: a daemon's bdevs as ublk disks (/dev/ublkbN) and as VDUSE
// virtio-blk disks (/dev/vdX), managed over JSON-RPC next to the bdev and vhost methods.
// ublk: SPDK 26.05's methods with its parameter names, defaults, result shapes and error codes
// (lib/ublk/ublk_rpc.c): ublk_create_target (cpumask, disable_user_copy accepted), ublk_destroy_target,
// ublk_start_disk (result: the id), ublk_recover_disk, ublk_stop_disk, ublk_get_disks, and a "ublk"
// subsystem in save_config as spdk_tgt writes it. VDUSE: SPDK has none, so these are stor's own, in
// the same style (vduse_create_blk_device, vduse_delete_blk_device, vduse_get_devices; parameters
// named like SPDK's: name, bdev_name, num_queues, queue_size, readonly, serial) in a "vduse" subsystem.
// Where stor differs from SPDK it is stricter: a disk that is mounted or held open exclusively is not
// stopped (-16, the caller unmounts first), and its bdev cannot be deleted while it serves (-16).
// Restart: while the daemon replays its saved configuration at start (`restoring`), a disk the kernel
// still has from a daemon that died is taken over instead of created — ublk through user recovery
// (START_USER_RECOVERY ... END_USER_RECOVERY on the same id: the kernel reissues what it held), VDUSE
// through reconnect (the same name, the rings resumed from the inflight log the dead daemon kept) —
// so a client sees a pause. Each disk has a record under /run/stor/attach (as `stor attach` writes):
// `stor attach --list` shows it, and a restart checks that a leftover disk is this daemon's kind.
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { StorError } from '../core/errors.js';
import type { CompletionMode, DeviceTable } from '../export/table.js';
import { readAttached, removeAttached, saveAttached, type AttachedRecord } from '../export/attached.js';
import { assertUblkAvailable, ublkDeviceInfo, UblkDisk } from '../export/ublk/disk.js';
import {
  checkVduse,
  diskUsers,
  inflightLogPath,
  removeLeftover,
  VduseBlkExport,
  vduseDeviceExists,
} from '../export/vduse/export.js';
import { SPIN_US_DEFAULT } from '../core/completion.js';
import { JsonRpcError, RPC_ERROR } from './jsonrpc.js';
import type { RpcHandler, RpcLogger } from './server.js';
import type { SpdkConfigCall } from './spdk-client.js';
import { decode, errnoError, type BdevRecord } from './spdk-methods.js';

const E = { ENOENT: 2, EIO: 5, EBUSY: 16, EEXIST: 17, ENODEV: 19, EINVAL: 22 } as const;
const STRERROR: Record<number, string> = {
  2: 'No such file or directory',
  16: 'Device or resource busy',
  22: 'Invalid argument',
};
/** SPDK's ublk defaults and limits (UBLK_DEV_NUM_QUEUE, UBLK_DEV_QUEUE_DEPTH, UBLK_DEV_MAX_*). */
export const UBLK_RPC = { defaultQueues: 1, defaultDepth: 128, maxQueues: 32, maxDepth: 1024 } as const;
/** VDUSE defaults (those of `stor attach --vduse`). */
export const VDUSE_RPC = { defaultQueues: 1, defaultQueueSize: 128, maxQueues: 64, maxQueueSize: 32768 } as const;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const DECODE_FAILED = (): JsonRpcError => new JsonRpcError(RPC_ERROR.INTERNAL_ERROR, 'spdk_json_decode_object failed');
/** ublk_create_target / ublk_destroy_target answer -32603 with strerror, whatever went wrong. */
const targetError = (errno: number, detail?: string): JsonRpcError =>
  new JsonRpcError(RPC_ERROR.INTERNAL_ERROR, (STRERROR[errno] ?? `errno ${errno}`) + (detail ? `: ${detail}` : ''));

interface UblkEntry {
  disk: UblkDisk;
  bdev: string;
  /** What was asked (save_config writes it, as spdk_tgt does); the disk may have fewer queues. */
  queues: number;
  depth: number;
}

interface VduseParams {
  name: string;
  bdev: string;
  queues: number;
  queueSize: number;
  readonly: boolean;
  serial: string;
}
interface VduseEntry extends VduseParams {
  exp: VduseBlkExport;
  node: string;
}

export interface SpdkKernelMethodsOptions {
  /** The daemon's bdev of this name (its block size, how it was made), or undefined. */
  bdev(name: string): BdevRecord | undefined;
  completion?: CompletionMode;
  log: RpcLogger;
  onChange?: () => void;
}

/** Who uses a disk in a way that stopping it would break: mounts, holders, an exclusive opener. */
export function kernelDiskUsers(node: string): string[] {
  const users = diskUsers(node);
  if (users.length) return users;
  try {
    closeSync(openSync(node, fsc.O_RDONLY | fsc.O_EXCL | fsc.O_NONBLOCK));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EBUSY') users.push('open exclusively (mounted or in use)');
  }
  return users;
}

/** A failure of the export code as SPDK would report it: -errno with strerror, stor's detail after it. */
function exportError(e: unknown): JsonRpcError {
  if (e instanceof JsonRpcError) return e;
  if (e instanceof StorError) {
    if (e.errno !== undefined && e.errno > 0) return errnoError(e.errno, e.message);
    if (/exists already/.test(e.message)) return errnoError(E.EEXIST, e.message);
    if (e.exitCode === 2) return errnoError(E.EINVAL, e.message);
    return errnoError(E.EIO, e.message);
  }
  const errno = (e as { errno?: number }).errno;
  return errnoError(errno !== undefined && errno > 0 ? errno : E.EIO, (e as Error).message);
}

export class SpdkKernelMethods {
  /**
   * Set by the daemon while it replays its saved configuration at start: a ublk id or VDUSE name the
   * kernel still has from this daemon's dead predecessor is taken over (recovery, reconnect) instead
   * of created.
   */
  restoring = false;
  private ublkTarget?: { cpumask: string };
  private readonly ublk = new Map<number, UblkEntry>();
  private readonly vduse = new Map<string, VduseEntry>();
  private readonly log: RpcLogger;

  constructor(
    private readonly table: DeviceTable,
    private readonly o: SpdkKernelMethodsOptions,
  ) {
    this.log = o.log;
  }

  /** The methods, for SpdkMethods' table (and so rpc_get_methods). */
  handlers(): Array<[string, RpcHandler]> {
    return [
      ['ublk_create_target', (p) => this.ublkCreateTarget(p)],
      ['ublk_destroy_target', () => this.ublkDestroyTarget()],
      ['ublk_start_disk', (p) => this.ublkStartDisk(p)],
      ['ublk_recover_disk', (p) => this.ublkRecoverDisk(p)],
      ['ublk_stop_disk', (p) => this.ublkStopDisk(p)],
      ['ublk_get_disks', (p) => this.ublkGetDisks(p)],
      // stor's own: SPDK has no VDUSE target
      ['vduse_create_blk_device', (p) => this.vduseCreate(p)],
      ['vduse_delete_blk_device', (p) => this.vduseDelete(p)],
      ['vduse_get_devices', (p) => this.vduseGet(p)],
    ];
  }

  /** framework_get_subsystems' entries, after bdev and vhost_blk. */
  subsystems(): Array<{ subsystem: string; depends_on: string[] }> {
    return [
      { subsystem: 'ublk', depends_on: ['bdev'] },
      { subsystem: 'vduse', depends_on: ['bdev'] },
    ];
  }

  /** framework_get_config of one of those subsystems; undefined for any other name. */
  config(subsystem: string): SpdkConfigCall[] | undefined {
    if (subsystem === 'ublk') {
      const calls: SpdkConfigCall[] = [];
      if (this.ublkTarget) calls.push({ method: 'ublk_create_target', params: { cpumask: this.ublkTarget.cpumask } });
      for (const [id, u] of this.ublk)
        calls.push({
          method: 'ublk_start_disk',
          params: { bdev_name: u.bdev, ublk_id: id, num_queues: u.queues, queue_depth: u.depth },
        });
      return calls;
    }
    if (subsystem === 'vduse')
      return [...this.vduse.values()].map((v) => ({
        method: 'vduse_create_blk_device',
        params: {
          name: v.name,
          bdev_name: v.bdev,
          num_queues: v.queues,
          queue_size: v.queueSize,
          readonly: v.readonly,
          serial: v.serial,
        },
      }));
    return undefined;
  }

  /** Whether a bdev serves a kernel disk (and which), for bdev_get_bdevs and deletes. */
  userOf(bdev: string): string | undefined {
    for (const [id, u] of this.ublk) if (u.bdev === bdev) return `ublk disk ${id}`;
    for (const v of this.vduse.values()) if (v.bdev === bdev) return `VDUSE device ${v.name}`;
    return undefined;
  }

  // ---- ublk ----

  private ublkCreateTarget(p: unknown): boolean {
    const q = decode(p, { cpumask: { kind: 'string' }, disable_user_copy: { kind: 'boolean' } }, () =>
      targetError(E.EINVAL),
    );
    if (this.ublkTarget) throw targetError(E.EBUSY, 'the ublk target exists already');
    let cpumask = '1';
    if (q.cpumask !== undefined) {
      // spdk_cpuset_parse's forms: a hex mask (0x optional) or a list in brackets; stor's queue
      // threads are not pinned, so the mask is kept for save_config only
      const m = q.cpumask as string;
      if (/^(0x)?[0-9a-f]+$/i.test(m) && /[1-9a-f]/i.test(m)) cpumask = m.replace(/^0x/i, '').toLowerCase();
      else if (/^\[\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*\]$/.test(m)) cpumask = m;
      else throw targetError(E.EINVAL, `cpumask ${m}`);
    }
    try {
      assertUblkAvailable();
    } catch (e) {
      const why = (e as Error).message.replace(/^attach --ublk: /, '');
      throw targetError(/does not exist/.test(why) ? E.ENOENT : E.EINVAL, why);
    }
    this.ublkTarget = { cpumask };
    this.log('info', 'ublk_create_target: ublk target created');
    this.o.onChange?.();
    return true;
  }

  private async ublkDestroyTarget(): Promise<boolean> {
    if (!this.ublkTarget) throw targetError(E.ENOENT, 'there is no ublk target');
    // SPDK stops every disk; stor refuses while one is in use, and stops none
    for (const u of this.ublk.values()) {
      const users = kernelDiskUsers(u.disk.device);
      if (users.length)
        throw targetError(E.EBUSY, `${u.disk.device} is ${users.join(', ')}: unmount it, then destroy the target`);
    }
    for (const id of [...this.ublk.keys()]) this.stopUblk(id);
    this.ublkTarget = undefined;
    this.log('info', 'ublk_destroy_target: ublk target destroyed');
    this.o.onChange?.();
    return true;
  }

  private async ublkStartDisk(p: unknown): Promise<number> {
    const q = decode(
      p,
      {
        bdev_name: { kind: 'string', required: true },
        ublk_id: { kind: 'uint', required: true },
        num_queues: { kind: 'uint' },
        queue_depth: { kind: 'uint' },
      },
      DECODE_FAILED,
    );
    const id = q.ublk_id as number;
    if (id > 0xffffffff) throw DECODE_FAILED();
    if (!this.ublkTarget) throw errnoError(E.ENODEV, 'no ublk target: call ublk_create_target first');
    if (this.ublk.has(id)) throw errnoError(E.EBUSY, `ublk id ${id} is in use`);
    const r = this.o.bdev(q.bdev_name as string);
    if (!r) throw errnoError(E.ENODEV, `no bdev named ${q.bdev_name as string}`);
    let queues = (q.num_queues as number | undefined) ?? UBLK_RPC.defaultQueues;
    let depth = (q.queue_depth as number | undefined) ?? UBLK_RPC.defaultDepth;
    if (queues === 0 || depth === 0) throw errnoError(E.EINVAL, 'num_queues and queue_depth must be at least 1');
    if (depth > UBLK_RPC.maxDepth) {
      this.log('warn', `ublk_start_disk: queue depth ${depth} of ublk ${id} set to the maximum ${UBLK_RPC.maxDepth}`);
      depth = UBLK_RPC.maxDepth;
    }
    if (queues > UBLK_RPC.maxQueues) {
      this.log('warn', `ublk_start_disk: ${queues} queues of ublk ${id} set to the maximum ${UBLK_RPC.maxQueues}`);
      queues = UBLK_RPC.maxQueues;
    }
    const info = ublkDeviceInfo(id);
    if (info) {
      const leftover = this.restoring ? this.leftoverOf('ublk', String(id), r.name) : undefined;
      if (!leftover)
        throw errnoError(
          E.EEXIST,
          `ublk device ${id} exists in the kernel${info.pid > 0 ? ` (server pid ${info.pid})` : ''}; ublk_recover_disk takes over one whose server died`,
        );
      this.log('info', `ublk_start_disk: ublk device ${id} is left from pid ${leftover.pid}: recovering it`);
      return this.recoverUblk(r, id, queues, depth);
    }
    const b = this.table.claimBackend(r.name, `ublk disk ${id}`);
    let disk: UblkDisk;
    try {
      disk = UblkDisk.create(b.handle, {
        id,
        queues,
        depth,
        blockSize: r.blockSize as 512 | 4096,
        readonly: Boolean(r.readonly),
        mode: this.o.completion ?? 'adaptive',
        log: (level, message) => this.log(level, `ublk ${id}: ${message}`),
      });
    } catch (e) {
      this.table.releaseBackend(r.name, `ublk disk ${id}`);
      throw exportError(e);
    }
    this.ublk.set(id, { disk, bdev: r.name, queues, depth });
    this.saveUblkRecord(id);
    this.log('info', `ublk_start_disk: ${disk.device} on bdev ${r.name} (${disk.queues} queue(s), depth ${depth})`);
    this.o.onChange?.();
    return id;
  }

  private async ublkRecoverDisk(p: unknown): Promise<number> {
    const q = decode(
      p,
      { bdev_name: { kind: 'string', required: true }, ublk_id: { kind: 'uint', required: true } },
      DECODE_FAILED,
    );
    const id = q.ublk_id as number;
    if (!this.ublkTarget) throw errnoError(E.ENODEV, 'no ublk target: call ublk_create_target first');
    if (this.ublk.has(id)) throw errnoError(E.EBUSY, `ublk id ${id} is in use`);
    const r = this.o.bdev(q.bdev_name as string);
    if (!r) throw errnoError(E.ENODEV, `no bdev named ${q.bdev_name as string}`);
    const info = ublkDeviceInfo(id);
    if (!info) throw errnoError(E.ENODEV, `there is no ublk device ${id}`);
    return this.recoverUblk(r, id, info.queues, info.depth);
  }

  private async recoverUblk(r: BdevRecord, id: number, queues: number, depth: number): Promise<number> {
    if (r.method === 'bdev_malloc_create')
      this.log('warn', `ublk ${id}: recovered onto malloc bdev ${r.name}, which starts empty: the disk's data is gone`);
    const b = this.table.claimBackend(r.name, `ublk disk ${id}`);
    let disk: UblkDisk;
    try {
      disk = await UblkDisk.recover(id, b.handle, {
        blockSize: r.blockSize as 512 | 4096,
        readonly: Boolean(r.readonly),
        mode: this.o.completion ?? 'adaptive',
        log: (level, message) => this.log(level, `ublk ${id}: ${message}`),
      });
    } catch (e) {
      this.table.releaseBackend(r.name, `ublk disk ${id}`);
      throw exportError(e);
    }
    this.ublk.set(id, { disk, bdev: r.name, queues, depth });
    this.saveUblkRecord(id);
    this.log('info', `ublk ${id}: recovered ${disk.device} on bdev ${r.name}: reissued requests are being served`);
    this.o.onChange?.();
    return id;
  }

  private ublkStopDisk(p: unknown): boolean {
    const q = decode(p, { ublk_id: { kind: 'uint', required: true } }, DECODE_FAILED);
    const id = q.ublk_id as number;
    const u = this.ublk.get(id);
    if (!u) throw errnoError(E.ENODEV, `no ublk disk ${id}`);
    const users = kernelDiskUsers(u.disk.device);
    if (users.length)
      throw errnoError(E.EBUSY, `${u.disk.device} is ${users.join(', ')}: unmount it first (stor does not force it)`);
    this.stopUblk(id);
    this.o.onChange?.();
    return true;
  }

  private stopUblk(id: number): void {
    const u = this.ublk.get(id)!;
    this.ublk.delete(id);
    this.table.releaseHeld(u.bdev);
    const { stillOpen } = u.disk.stop();
    if (stillOpen) this.log('warn', `${u.disk.device} is still open: the kernel frees ublk id ${id} when it is closed`);
    this.table.releaseBackend(u.bdev, `ublk disk ${id}`);
    removeAttached('ublk', String(id));
    this.log('info', `ublk_stop_disk: ${u.disk.device} (bdev ${u.bdev}) stopped`);
  }

  private ublkGetDisks(p: unknown): unknown {
    const q = decode(p, { ublk_id: { kind: 'uint' } }, DECODE_FAILED);
    const json = (id: number, u: UblkEntry) => ({
      ublk_device: u.disk.device,
      id,
      queue_depth: u.disk.depth,
      num_queues: u.disk.queues,
      bdev_name: u.bdev,
    });
    // as SPDK: ublk_id 0 is "not given" (every disk)
    const id = q.ublk_id as number | undefined;
    if (id) {
      const u = this.ublk.get(id);
      if (!u) throw errnoError(E.ENODEV);
      return [json(id, u)];
    }
    return [...this.ublk].map(([i, u]) => json(i, u));
  }

  private saveUblkRecord(id: number): void {
    const u = this.ublk.get(id)!;
    const b = this.table.backend(u.bdev);
    const prev = readAttached('ublk', String(id));
    saveAttached({
      transport: 'ublk',
      name: String(id),
      node: u.disk.device,
      backend: b.spec,
      pid: process.pid,
      capacity: u.disk.capacity,
      queues: u.disk.queues,
      options: {
        queueSize: u.disk.depth,
        blockSize: this.o.bdev(u.bdev)?.blockSize ?? 512,
        readonly: u.disk.readonly,
        completion: this.o.completion ?? 'adaptive',
        daemon: true,
        bdev: u.bdev,
      },
      createdAt: prev?.createdAt ?? new Date().toISOString(),
    });
  }

  /**
   * The record of a kernel disk a dead stor daemon left, on this bdev's backend: what makes a restart
   * take it over. undefined when there is none, or it is someone else's (a live process, another backend).
   */
  private leftoverOf(transport: 'ublk' | 'vduse', name: string, bdev: string): AttachedRecord | undefined {
    const rec = readAttached(transport, name);
    if (!rec || rec.options.daemon !== true) return undefined;
    if (rec.alive && rec.pid !== process.pid) return undefined;
    const spec = this.table.backend(bdev).spec;
    if (rec.backend !== spec) {
      this.log('warn', `${transport} ${name} was served from ${rec.backend}, not ${spec}: not taken over`);
      return undefined;
    }
    return rec;
  }

  // ---- VDUSE (stor's own) ----

  private async vduseCreate(p: unknown): Promise<string> {
    const q = decode(
      p,
      {
        name: { kind: 'string', required: true },
        bdev_name: { kind: 'string', required: true },
        num_queues: { kind: 'uint' },
        queue_size: { kind: 'uint' },
        readonly: { kind: 'boolean' },
        serial: { kind: 'string' },
      },
      DECODE_FAILED,
    );
    const name = q.name as string;
    if (!NAME.test(name))
      throw errnoError(E.EINVAL, `'${name}' is not a device name (letters, digits, . _ -, up to 64)`);
    if (this.vduse.has(name)) throw errnoError(E.EEXIST, `VDUSE device ${name} exists already`);
    const r = this.o.bdev(q.bdev_name as string);
    if (!r) throw errnoError(E.ENODEV, `no bdev named ${q.bdev_name as string}`);
    const v: VduseParams = {
      name,
      bdev: r.name,
      queues: (q.num_queues as number | undefined) ?? VDUSE_RPC.defaultQueues,
      queueSize: (q.queue_size as number | undefined) ?? VDUSE_RPC.defaultQueueSize,
      readonly: Boolean(q.readonly) || Boolean(r.readonly),
      serial: (q.serial as string | undefined) ?? name.slice(0, 20),
    };
    if (v.queues < 1 || v.queues > VDUSE_RPC.maxQueues)
      throw errnoError(E.EINVAL, `num_queues ${v.queues}: 1 to ${VDUSE_RPC.maxQueues}`);
    if (v.queueSize < 2 || v.queueSize > VDUSE_RPC.maxQueueSize || v.queueSize & (v.queueSize - 1))
      throw errnoError(E.EINVAL, `queue_size ${v.queueSize}: a power of 2 from 2 to ${VDUSE_RPC.maxQueueSize}`);
    if (Buffer.byteLength(v.serial) > 20) throw errnoError(E.EINVAL, `serial '${v.serial}' is longer than 20 bytes`);
    try {
      checkVduse();
    } catch (e) {
      throw errnoError(E.ENODEV, (e as Error).message.replace(/^attach --vduse: /, ''));
    }
    let reconnect = false;
    if (vduseDeviceExists(name)) {
      const rec = readAttached('vduse', name);
      const leftover = this.restoring ? this.leftoverOf('vduse', name, r.name) : undefined;
      if (leftover) reconnect = true;
      else if (rec && !rec.alive) {
        // left by a stor that died, and not to be taken over: removed, as `stor attach --vduse` does
        this.log('warn', `${name}: left behind by stor pid ${rec.pid} (dead): removing it`);
        try {
          await removeLeftover(name, rec.queues, (level, message) => this.log(level, message));
        } catch (e) {
          throw exportError(e);
        }
        removeAttached('vduse', name);
      } else
        throw errnoError(
          E.EEXIST,
          `a VDUSE device named ${name} exists${rec ? ` (stor pid ${rec.pid})` : ' (not made by stor)'}`,
        );
    }
    const b = this.table.claimBackend(r.name, `VDUSE device ${name}`);
    const exp = new VduseBlkExport({
      name,
      backend: b.handle,
      capacity: b.info.capacity,
      readonly: v.readonly,
      queues: v.queues,
      queueSize: v.queueSize,
      blockSize: r.blockSize as 512 | 4096,
      serial: v.serial,
      mode: this.o.completion ?? 'adaptive',
      spinUs: SPIN_US_DEFAULT,
      inflightLog: inflightLogPath(name),
      log: (level, message) => this.log(level, message),
    });
    const rec = (node: string): AttachedRecord => ({
      transport: 'vduse',
      name,
      node,
      backend: b.spec,
      pid: process.pid,
      capacity: b.info.capacity,
      queues: v.queues,
      options: {
        queueSize: v.queueSize,
        blockSize: r.blockSize,
        readonly: v.readonly,
        serial: v.serial,
        completion: this.o.completion ?? 'adaptive',
        daemon: true,
        bdev: r.name,
      },
      createdAt: readAttached('vduse', name)?.createdAt ?? new Date().toISOString(),
    });
    let node: string;
    try {
      if (reconnect) {
        node = exp.reconnect();
        this.log('info', `${name}: reconnected to ${node}`);
      } else {
        exp.create();
        saveAttached(rec('')); // before the disk exists: a crash from here on leaves a record to clean up by
        node = await exp.attach();
      }
    } catch (e) {
      if (!reconnect) {
        try {
          await exp.detach();
        } catch (e2) {
          this.log('error', `${name}: removing what was made: ${(e2 as Error).message}`);
        }
        removeAttached('vduse', name);
      } else exp.release();
      this.table.releaseBackend(r.name, `VDUSE device ${name}`);
      throw exportError(e);
    }
    saveAttached(rec(node));
    this.vduse.set(name, { ...v, exp, node });
    this.log('info', `vduse_create_blk_device: ${name} → ${node} on bdev ${r.name}`);
    this.o.onChange?.();
    return name;
  }

  private async vduseDelete(p: unknown): Promise<boolean> {
    const q = decode(p, { name: { kind: 'string', required: true } }, DECODE_FAILED);
    const v = this.vduse.get(q.name as string);
    if (!v) throw errnoError(E.ENODEV, `no VDUSE device ${q.name as string}`);
    const users = kernelDiskUsers(v.node);
    if (users.length)
      throw errnoError(E.EBUSY, `${v.node} is ${users.join(', ')}: unmount it first (stor does not force it)`);
    await this.deleteVduse(v.name);
    this.o.onChange?.();
    return true;
  }

  private async deleteVduse(name: string): Promise<void> {
    const v = this.vduse.get(name)!;
    this.vduse.delete(name);
    this.table.releaseHeld(v.bdev);
    try {
      await v.exp.detach();
    } finally {
      this.table.releaseBackend(v.bdev, `VDUSE device ${name}`);
      removeAttached('vduse', name);
    }
    this.log('info', `vduse_delete_blk_device: ${name} (${v.node}) removed`);
  }

  private vduseGet(p: unknown): unknown {
    const q = decode(p, { name: { kind: 'string' } }, DECODE_FAILED);
    const json = (v: VduseEntry) => ({
      name: v.name,
      vduse_device: `/dev/vduse/${v.name}`,
      block_device: v.node,
      bdev_name: v.bdev,
      num_queues: v.queues,
      queue_size: v.queueSize,
      readonly: v.readonly,
      serial: v.serial,
    });
    if (q.name !== undefined) {
      const v = this.vduse.get(q.name as string);
      if (!v) throw errnoError(E.ENODEV);
      return [json(v)];
    }
    return [...this.vduse.values()].map(json);
  }

  // ---- the daemon's lifecycle ----

  diskCount(): number {
    return this.ublk.size + this.vduse.size;
  }

  /** Every disk, for the daemon's ready line. */
  list(): Array<{ transport: 'ublk' | 'vduse'; name: string; device: string; bdev: string }> {
    return [
      ...[...this.ublk].map(([id, u]) => ({
        transport: 'ublk' as const,
        name: String(id),
        device: u.disk.device,
        bdev: u.bdev,
      })),
      ...[...this.vduse.values()].map((v) => ({
        transport: 'vduse' as const,
        name: v.name,
        device: v.node,
        bdev: v.bdev,
      })),
    ];
  }

  /** A clean stop (SIGTERM): every disk removed (in-flight requests drain); a disk still in use is said. */
  async closeAll(): Promise<void> {
    for (const v of [...this.vduse.values()].reverse()) {
      const users = kernelDiskUsers(v.node);
      if (users.length) this.log('error', `${v.node} is still ${users.join(', ')}: its users will see I/O errors`);
      try {
        await this.deleteVduse(v.name);
      } catch (e) {
        this.log('error', `${v.name}: ${(e as Error).message}`);
      }
    }
    for (const id of [...this.ublk.keys()].reverse()) {
      const u = this.ublk.get(id)!;
      const users = kernelDiskUsers(u.disk.device);
      if (users.length)
        this.log('error', `${u.disk.device} is still ${users.join(', ')}: its users will see I/O errors`);
      this.stopUblk(id);
    }
    this.ublkTarget = undefined;
  }

  /**
   * Stops serving without removing any disk, as a crash would (a start whose replay failed): ublk
   * disks stay quiesced and VDUSE devices keep their rings, for the next start to take over.
   */
  abandonAll(): void {
    for (const v of this.vduse.values()) {
      v.exp.release();
      this.table.releaseBackend(v.bdev, `VDUSE device ${v.name}`);
    }
    this.vduse.clear();
    for (const [id, u] of this.ublk) {
      u.disk.abandon();
      this.table.releaseBackend(u.bdev, `ublk disk ${id}`);
    }
    this.ublk.clear();
  }
}
