// The SPDK methods `stor daemon` serves, over one DeviceTable: bdevs (malloc → mem:, null → null:,
// aio/uring → file:), vhost-blk controllers (vhost-user-blk exports listening on SOCKET_DIR/CTRLR), the
// method list and version, and the configuration (framework_get_subsystems/framework_get_config, which
// rpc.py's save_config and load_config are built from, plus save_config/load_config as methods).
// Parameter names, result shapes and error codes are SPDK 26.05's, as its spdk_tgt answers them:
// a parameter object SPDK cannot decode is -32603 "spdk_json_decode_object failed" for bdev methods and
// -32602 "Invalid argument" for vhost ones; a failure is the negative errno with its strerror text
// (-17 File exists, -19 No such device, ...). Where stor differs it says so in the message: a bdev an
// export uses is not hot-removed as SPDK would, its delete is refused with -16 (Device or resource busy).
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { StorError } from '../core/errors.js';
import type { Spec } from '../core/spec.js';
import type { CompletionMode, DeviceTable } from '../export/table.js';
import { JsonRpcError, RPC_ERROR } from './jsonrpc.js';
import type { RpcHandler, RpcLogger } from './server.js';
import type { SpdkConfig, SpdkConfigCall } from './spdk-client.js';
import { rbdBdevModule } from './spdk-rbd-methods.js';
import { faultBdevModule } from './spdk-fault-methods.js';
import { SpdkKernelMethods } from './spdk-kernel-methods.js';

export const STRERROR: Record<number, string> = {
  1: 'Operation not permitted',
  2: 'No such file or directory',
  5: 'Input/output error',
  12: 'Cannot allocate memory',
  13: 'Permission denied',
  16: 'Device or resource busy',
  17: 'File exists',
  19: 'No such device',
  21: 'Is a directory',
  22: 'Invalid argument',
  28: 'No space left on device',
  36: 'File name too long',
  95: 'Operation not supported',
};
export const E = {
  EPERM: 1,
  ENOENT: 2,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENAMETOOLONG: 36,
  EOPNOTSUPP: 95,
} as const;

/** SPDK's errno-style failure: code -errno, message strerror(errno) (and stor's detail after it). */
export function errnoError(errno: number, detail?: string): JsonRpcError {
  const text = STRERROR[errno] ?? `errno ${errno}`;
  return new JsonRpcError(-errno, detail ? `${text}: ${detail}` : text);
}

export const DECODE_FAILED = (): JsonRpcError =>
  new JsonRpcError(RPC_ERROR.INTERNAL_ERROR, 'spdk_json_decode_object failed');

/** 'strmap': an object of string values, or null for an empty one (SPDK's rbd config maps). */
type Kind = 'string' | 'uint' | 'int' | 'boolean' | 'uuid' | 'strmap';
export interface Field {
  kind: Kind;
  required?: boolean;
}

/** SPDK's spdk_json_decode_object: an object, only known keys, required ones present, each of its type. */
export function decode(
  params: unknown,
  fields: Record<string, Field>,
  fail: () => JsonRpcError,
): Record<string, unknown> {
  if (params === undefined) params = {};
  if (typeof params !== 'object' || params === null || Array.isArray(params)) throw fail();
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    const f = fields[k];
    if (!f) throw fail();
    const ok =
      f.kind === 'string'
        ? typeof v === 'string'
        : f.kind === 'boolean'
          ? typeof v === 'boolean'
          : f.kind === 'strmap'
            ? v === null ||
              (typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string'))
            : f.kind === 'uuid'
              ? typeof v === 'string' && /^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(v)
              : typeof v === 'number' && Number.isSafeInteger(v) && (f.kind === 'int' || v >= 0);
    if (!ok) throw fail();
    out[k] = v;
  }
  for (const [k, f] of Object.entries(fields)) if (f.required && !(k in out)) throw fail();
  return out;
}

const BDEV_CREATE_COMMON: Record<string, Field> = {
  name: { kind: 'string', required: true },
  block_size: { kind: 'uint', required: true },
  num_blocks: { kind: 'uint', required: true },
  uuid: { kind: 'uuid' },
  physical_block_size: { kind: 'uint' },
  md_size: { kind: 'uint' },
  dif_type: { kind: 'int' },
  dif_is_head_of_md: { kind: 'boolean' },
  dif_pi_format: { kind: 'uint' },
};
const MALLOC_FIELDS: Record<string, Field> = {
  ...BDEV_CREATE_COMMON,
  name: { kind: 'string' },
  optimal_io_boundary: { kind: 'uint' },
  md_interleave: { kind: 'boolean' },
  numa_id: { kind: 'int' },
};
const NULL_FIELDS: Record<string, Field> = {
  ...BDEV_CREATE_COMMON,
  preferred_write_granularity: { kind: 'uint' },
  preferred_write_alignment: { kind: 'uint' },
  optimal_write_size: { kind: 'uint' },
  preferred_unmap_granularity: { kind: 'uint' },
  preferred_unmap_alignment: { kind: 'uint' },
};
const AIO_FIELDS: Record<string, Field> = {
  name: { kind: 'string', required: true },
  filename: { kind: 'string', required: true },
  block_size: { kind: 'uint' },
  readonly: { kind: 'boolean' },
  fallocate: { kind: 'boolean' },
  uuid: { kind: 'uuid' },
  nowait: { kind: 'boolean' },
};
const URING_FIELDS: Record<string, Field> = {
  name: { kind: 'string', required: true },
  filename: { kind: 'string', required: true },
  block_size: { kind: 'uint' },
  uuid: { kind: 'uuid' },
};
const NAME_ONLY: Record<string, Field> = { name: { kind: 'string', required: true } };

type CreateMethod = 'bdev_malloc_create' | 'bdev_null_create' | 'bdev_aio_create' | 'bdev_uring_create';
const PRODUCT: Record<CreateMethod, string> = {
  bdev_malloc_create: 'Malloc disk',
  bdev_null_create: 'Null disk',
  bdev_aio_create: 'AIO disk',
  bdev_uring_create: 'URING bdev',
};

/** What SPDK knows about a bdev and stor's table does not: how it was made, its block size and uuid. */
export interface BdevRecord {
  name: string;
  /** its create method: one of this file's, or a module's (then `module` says how it shows) */
  method: CreateMethod | string;
  blockSize: number;
  numBlocks: number;
  uuid: string;
  filename?: string;
  readonly?: boolean;
  module?: ModuleBdev;
}

/** How a bdev made by a module outside this file shows in bdev_get_bdevs and save_config. */
export interface ModuleBdev {
  productName: string;
  /** bdev_get_bdevs' driver_specific */
  driverSpecific(): Record<string, unknown>;
  /** the parameters of the create call save_config writes for it */
  configParams(): Record<string, unknown>;
  /** what differs from the defaults (read, write, unmap, flush, write_zeroes as the bdev is writable) */
  ioTypes?: Record<string, boolean>;
}

/** What a bdev module (in its own file, e.g. spdk-rbd-methods.ts) may do with the bdevs of this table. */
export interface SpdkBdevHost {
  readonly table: DeviceTable;
  readonly log: RpcLogger;
  bdev(name: string): BdevRecord | undefined;
  /**
   * Opens spec in the table as bdev r.name and records it; EEXIST for a name taken, EINVAL for a
   * capacity that is not a multiple of the block size, the table's error as SPDK's otherwise.
   */
  addBdev(r: Omit<BdevRecord, 'numBlocks'>, spec: Spec): BdevRecord;
  /**
   * Stacks a fault-injection wrapper (DeviceTable.wrapBackend) on bdev `base` as bdev r.name, with the
   * base's block size and size; EEXIST for a name taken, ENODEV for no such base.
   */
  wrapBdev(r: Omit<BdevRecord, 'numBlocks' | 'blockSize'>, base: string, kind: string): BdevRecord;
  /** The wrapper stacked on this bdev (its claim), if any. */
  claimedBy(name: string): string | undefined;
  /** What bdev_get_bdevs says this bdev supports (supported_io_types). */
  ioTypes(name: string): Record<string, boolean>;
  /** Deletes a bdev made by method: ENODEV for another's, EBUSY while a controller uses it. */
  removeBdev(name: string, method: string): void;
  /** Tells the daemon the configuration changed (e.g. to persist --state). */
  changed(): void;
}

/** A bdev module: its methods, and the calls save_config puts before every bdev (e.g. rbd clusters). */
export interface SpdkBdevModule {
  methods: Array<[string, RpcHandler]>;
  configPrelude?(): SpdkConfigCall[];
}

export interface SpdkMethodsOptions {
  /** Where vhost-blk controllers' sockets go (spdk_tgt -S): controller N listens on socketDir/N. */
  socketDir: string;
  /** stor's version, for spdk_get_version. */
  version: string;
  /** Controllers' defaults (SPDK has no such parameters; stor takes num_queues, queue_size, completion too). */
  queues?: number;
  queueSize?: number;
  completion?: CompletionMode;
  log?: RpcLogger;
  /** Called after every change to the table (e.g. to persist save_config). */
  onChange?: () => void;
}

/** Methods a saved SPDK configuration may hold that set options stor does not have: skipped with a note on load. */
const SKIPPED_ON_LOAD =
  /(_set_options|_set_hotplug|^bdev_wait_for_examine|^bdev_examine|_set_scheduler|_set_coalescing)$/;

export class SpdkMethods {
  private readonly bdevs = new Map<string, BdevRecord>();
  private readonly modules: SpdkBdevModule[] = [];
  readonly methods = new Map<string, RpcHandler>();
  private readonly log: RpcLogger;
  /** ublk disks and VDUSE devices (spdk-kernel-methods.ts). */
  readonly kernel: SpdkKernelMethods;

  constructor(
    private readonly table: DeviceTable,
    private readonly o: SpdkMethodsOptions,
  ) {
    this.log = o.log ?? (() => {});
    const m: Array<[string, RpcHandler]> = [
      ['rpc_get_methods', (p) => this.rpcGetMethods(p)],
      ['spdk_get_version', (p) => this.spdkGetVersion(p)],
      ['bdev_get_bdevs', (p) => this.bdevGetBdevs(p)],
      ['bdev_malloc_create', (p) => this.bdevCreate('bdev_malloc_create', p)],
      ['bdev_malloc_delete', (p) => this.bdevDelete('bdev_malloc_create', p)],
      ['bdev_null_create', (p) => this.bdevCreate('bdev_null_create', p)],
      ['bdev_null_delete', (p) => this.bdevDelete('bdev_null_create', p)],
      ['bdev_aio_create', (p) => this.bdevCreate('bdev_aio_create', p)],
      ['bdev_aio_delete', (p) => this.bdevDelete('bdev_aio_create', p)],
      ['bdev_uring_create', (p) => this.bdevCreate('bdev_uring_create', p)],
      ['bdev_uring_delete', (p) => this.bdevDelete('bdev_uring_create', p)],
      ['vhost_create_blk_controller', (p) => this.vhostCreate(p)],
      ['vhost_get_controllers', (p) => this.vhostGet(p)],
      ['vhost_delete_controller', (p) => this.vhostDelete(p)],
      ['framework_get_subsystems', (p) => this.frameworkGetSubsystems(p)],
      ['framework_get_config', (p) => this.frameworkGetConfig(p)],
      ['save_config', () => this.saveConfig()],
      ['load_config', (p) => this.loadConfig(p as unknown as SpdkConfig)],
    ];
    for (const [name, h] of m) this.methods.set(name, h);
    // bdev modules kept in their own files (rbd: spdk-rbd-methods.ts)
    for (const make of [rbdBdevModule, faultBdevModule]) {
      const mod = make(this.bdevHost());
      this.modules.push(mod);
      for (const [name, h] of mod.methods) this.methods.set(name, h);
    }
    // kernel disks: SPDK's ublk_* methods and stor's own vduse_* ones
    this.kernel = new SpdkKernelMethods(table, {
      bdev: (name) => this.bdevs.get(name),
      completion: o.completion,
      log: this.log,
      onChange: () => this.o.onChange?.(),
    });
    for (const [name, h] of this.kernel.handlers()) this.methods.set(name, h);
  }

  private bdevHost(): SpdkBdevHost {
    return {
      table: this.table,
      log: this.log,
      bdev: (name) => this.bdevs.get(name),
      addBdev: (r, spec) => this.addBdevRecord(r, spec),
      removeBdev: (name, method) => this.removeBdevRecord(name, method),
      wrapBdev: (r, base, kind) => this.wrapBdevRecord(r, base, kind),
      claimedBy: (name) => this.claimedBy(name),
      ioTypes: (name) => this.bdevJson(this.bdevs.get(name)!).supported_io_types as Record<string, boolean>,
      changed: () => this.o.onChange?.(),
    };
  }

  private addBdevRecord(r: Omit<BdevRecord, 'numBlocks'>, spec: Spec): BdevRecord {
    if (this.bdevs.has(r.name)) throw errnoError(E.EEXIST);
    let entry;
    try {
      entry = this.table.addBackend(r.name, spec, { what: r.name });
    } catch (e) {
      throw this.tableError(e);
    }
    if (entry.info.capacity % r.blockSize) {
      this.table.removeBackend(r.name);
      throw errnoError(E.EINVAL, `${entry.spec}: ${entry.info.capacity} bytes is not a multiple of ${r.blockSize}`);
    }
    const record = { ...r, numBlocks: entry.info.capacity / r.blockSize };
    this.bdevs.set(r.name, record);
    this.log('info', `${r.method}: ${r.name} (${entry.spec})`);
    return record;
  }

  private wrapBdevRecord(r: Omit<BdevRecord, 'numBlocks' | 'blockSize'>, base: string, kind: string): BdevRecord {
    if (this.bdevs.has(r.name)) throw errnoError(E.EEXIST);
    const b = this.bdevs.get(base);
    if (!b) throw errnoError(E.ENODEV);
    try {
      this.table.wrapBackend(r.name, base, { kind });
    } catch (e) {
      throw this.tableError(e);
    }
    const record: BdevRecord = {
      ...r,
      blockSize: b.blockSize,
      numBlocks: b.numBlocks,
      ...(b.readonly ? { readonly: true } : {}),
    };
    this.bdevs.set(r.name, record);
    this.log('info', `${r.method}: ${r.name} on ${base}`);
    return record;
  }

  private claimedBy(name: string): string | undefined {
    return this.table.listBackends().find((b) => b.wraps?.base === name)?.name;
  }

  private removeBdevRecord(name: string, method: string): void {
    const r = this.bdevs.get(name);
    // like SPDK, each driver's delete finds only its own bdevs
    if (!r || r.method !== method) throw errnoError(E.ENODEV);
    const user = this.table.listExports().find((e) => e.backend === r.name);
    if (user)
      throw errnoError(E.EBUSY, `${r.name} is in use by vhost controller ${user.name}; delete the controller first`);
    try {
      this.table.removeBackend(r.name);
    } catch (e) {
      throw this.tableError(e);
    }
    this.bdevs.delete(r.name);
    this.log('info', `${method.replace('_create', '_delete')}: ${r.name}`);
  }

  private rpcGetMethods(p: unknown): string[] {
    if (p !== undefined)
      decode(
        p,
        { current: { kind: 'boolean' }, include_aliases: { kind: 'boolean' } },
        () => new JsonRpcError(RPC_ERROR.INVALID_PARAMS, 'Invalid parameters'),
      );
    return [...this.methods.keys()];
  }

  private spdkGetVersion(p: unknown): unknown {
    if (p !== undefined)
      throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, 'spdk_get_version method requires no parameters');
    const m = /^(\d+)\.(\d+)\.(\d+)(.*)$/.exec(this.o.version);
    return {
      version: `stor v${this.o.version}`,
      fields: {
        major: Number(m?.[1] ?? 0),
        minor: Number(m?.[2] ?? 0),
        patch: Number(m?.[3] ?? 0),
        suffix: m?.[4] ?? '',
      },
    };
  }

  private bdevJson(r: BdevRecord): Record<string, unknown> {
    const user = this.table.listExports().find((e) => e.backend === r.name);
    const writable = !r.readonly;
    return {
      name: r.name,
      aliases: [r.uuid],
      product_name: r.module?.productName ?? PRODUCT[r.method as CreateMethod],
      block_size: r.blockSize,
      num_blocks: r.numBlocks,
      uuid: r.uuid,
      assigned_rate_limits: { rw_ios_per_sec: 0, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 },
      // a delay or error bdev on it claims it, as in SPDK (a controller does not)
      ...(this.claimedBy(r.name) ? { claimed: true, claim_type: 'exclusive_write' } : { claimed: false }),
      zoned: false,
      supported_io_types: {
        read: true,
        write: writable,
        unmap: r.method !== 'bdev_null_create' && writable,
        flush: r.method !== 'bdev_null_create',
        reset: false,
        write_zeroes: writable,
        ...r.module?.ioTypes,
      },
      driver_specific: r.module
        ? r.module.driverSpecific()
        : r.filename !== undefined
          ? { [r.method === 'bdev_aio_create' ? 'aio' : 'uring']: { filename: r.filename } }
          : {},
      // stor's own: the table's spec and which export serves it
      stor: { spec: this.table.backend(r.name).spec, export: user?.name ?? this.kernel.userOf(r.name) ?? null },
    };
  }

  private bdevGetBdevs(p: unknown): unknown {
    const q = decode(p, { name: { kind: 'string' }, timeout: { kind: 'uint' } }, DECODE_FAILED);
    if (q.name !== undefined) {
      const r = this.bdevs.get(q.name as string) ?? [...this.bdevs.values()].find((b) => b.uuid === q.name);
      if (!r) throw errnoError(E.ENODEV);
      return [this.bdevJson(r)];
    }
    return [...this.bdevs.values()].map((r) => this.bdevJson(r));
  }

  private bdevCreate(method: CreateMethod, p: unknown): string {
    const fields =
      method === 'bdev_malloc_create'
        ? MALLOC_FIELDS
        : method === 'bdev_null_create'
          ? NULL_FIELDS
          : method === 'bdev_aio_create'
            ? AIO_FIELDS
            : URING_FIELDS;
    const q = decode(p, fields, DECODE_FAILED);
    if ((q.md_size !== undefined && q.md_size !== 0) || (q.dif_type !== undefined && q.dif_type !== 0))
      throw errnoError(E.EOPNOTSUPP, 'stor bdevs have no metadata or protection information');
    let name = q.name as string | undefined;
    if (name === undefined) {
      let i = 0;
      while (this.bdevs.has(`Malloc${i}`)) i++;
      name = `Malloc${i}`;
    }
    if (this.bdevs.has(name)) throw errnoError(E.EEXIST);
    const blockSize = (q.block_size as number | undefined) ?? 512;
    if (blockSize !== 512 && blockSize !== 4096)
      throw errnoError(E.EINVAL, `block_size ${blockSize}: stor serves 512 or 4096`);
    let spec: Spec;
    let numBlocks = q.num_blocks as number | undefined;
    if (numBlocks !== undefined) {
      if (numBlocks === 0) throw errnoError(E.EINVAL, 'num_blocks is 0');
      spec = {
        driver: method === 'bdev_malloc_create' ? 'mem' : 'null',
        props: { size: String(numBlocks * blockSize) },
      };
    } else {
      spec = { driver: 'file', props: { path: q.filename as string, ...(q.readonly ? { readonly: 'on' } : {}) } };
    }
    let entry;
    try {
      entry = this.table.addBackend(name, spec, { what: name });
    } catch (e) {
      throw this.tableError(e);
    }
    if (numBlocks === undefined) {
      if (entry.info.capacity % blockSize) {
        this.table.removeBackend(name);
        throw errnoError(
          E.EINVAL,
          `${q.filename as string}: ${entry.info.capacity} bytes is not a multiple of ${blockSize}`,
        );
      }
      numBlocks = entry.info.capacity / blockSize;
    }
    this.bdevs.set(name, {
      name,
      method,
      blockSize,
      numBlocks,
      uuid: (q.uuid as string | undefined) ?? randomUUID(),
      ...(q.filename !== undefined ? { filename: q.filename as string } : {}),
      ...(q.readonly ? { readonly: true } : {}),
    });
    this.log('info', `${method}: ${name} (${entry.spec})`);
    this.o.onChange?.();
    return name;
  }

  private bdevDelete(method: CreateMethod, p: unknown): boolean {
    const q = decode(p, NAME_ONLY, DECODE_FAILED);
    this.removeBdevRecord(q.name as string, method);
    this.o.onChange?.();
    return true;
  }

  private vhostCreate(p: unknown): boolean {
    const invalid = (): JsonRpcError => new JsonRpcError(RPC_ERROR.INVALID_PARAMS, STRERROR[E.EINVAL]);
    const q = decode(
      p,
      {
        ctrlr: { kind: 'string', required: true },
        dev_name: { kind: 'string', required: true },
        readonly: { kind: 'boolean' },
        packed_ring: { kind: 'boolean' },
        cpumask: { kind: 'string' },
        transport: { kind: 'string' },
        // stor's own
        num_queues: { kind: 'uint' },
        queue_size: { kind: 'uint' },
        completion: { kind: 'string' },
      },
      invalid,
    );
    const paramError = (errno: number, detail?: string): JsonRpcError =>
      new JsonRpcError(RPC_ERROR.INVALID_PARAMS, detail ? `${STRERROR[errno]}: ${detail}` : STRERROR[errno]);
    const ctrlr = q.ctrlr as string;
    const r = this.bdevs.get(q.dev_name as string);
    if (!r) throw paramError(E.ENODEV);
    if (this.table.listExports().some((e) => e.name === ctrlr)) throw paramError(E.EEXIST);
    if (q.transport !== undefined && q.transport !== 'vhost_user_blk')
      throw paramError(E.EINVAL, `transport ${q.transport as string}: stor serves vhost_user_blk`);
    if (q.packed_ring) throw paramError(E.EOPNOTSUPP, 'stor serves split rings only');
    const completion = (q.completion as string | undefined) ?? this.o.completion ?? 'adaptive';
    if (!['notify', 'poll', 'adaptive'].includes(completion))
      throw paramError(E.EINVAL, `completion ${completion}: notify, poll or adaptive`);
    const queueSize = (q.queue_size as number | undefined) ?? this.o.queueSize ?? 1024;
    if (queueSize < 4 || queueSize > 32768 || queueSize & (queueSize - 1))
      throw paramError(E.EINVAL, `queue_size ${queueSize}: a power of 2 from 4 to 32768`);
    const queues = (q.num_queues as number | undefined) ?? this.o.queues ?? 4;
    if (queues < 1 || queues > 64) throw paramError(E.EINVAL, `num_queues ${queues}: 1 to 64`);
    const socket = join(this.o.socketDir, ctrlr);
    if (Buffer.byteLength(socket) > 107)
      throw paramError(E.ENAMETOOLONG, `${socket} is longer than a Unix socket path may be`);
    try {
      this.table.addVhostUserBlkExport(ctrlr, r.name, {
        socket,
        queues,
        queueSize,
        blockSize: r.blockSize as 512 | 4096,
        readonly: Boolean(q.readonly),
        serial: ctrlr.slice(0, 20),
        mode: completion as CompletionMode,
      });
    } catch (e) {
      const t = this.tableError(e);
      throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, t.message);
    }
    this.log('info', `vhost_create_blk_controller: ${ctrlr} on ${socket} (bdev ${r.name})`);
    this.o.onChange?.();
    return true;
  }

  private controllerJson(name: string): Record<string, unknown> {
    const e = this.table.export(name);
    return {
      ctrlr: e.name,
      cpumask: '0x1',
      delay_base_us: 0,
      iops_threshold: 60000,
      socket: e.options.socket,
      sessions: e.server.connectionCount ? [{ vid: 0, id: 0, name: `${e.name}s0`, started: true }] : [],
      backend_specific: { block: { readonly: e.options.readonly, bdev: e.backend, transport: 'vhost_user_blk' } },
      stor: {
        queues: e.options.queues,
        queue_size: e.options.queueSize,
        completion: e.options.mode,
        connections: e.server.connectionCount,
      },
    };
  }

  private vhostGet(p: unknown): unknown {
    const q = decode(
      p,
      { name: { kind: 'string' } },
      () => new JsonRpcError(RPC_ERROR.INTERNAL_ERROR, STRERROR[E.EINVAL]),
    );
    if (q.name !== undefined) {
      if (!this.table.listExports().some((e) => e.name === q.name))
        throw new JsonRpcError(RPC_ERROR.INTERNAL_ERROR, STRERROR[E.ENODEV]);
      return [this.controllerJson(q.name as string)];
    }
    return this.table.listExports().map((e) => this.controllerJson(e.name));
  }

  private async vhostDelete(p: unknown): Promise<boolean> {
    const q = decode(
      p,
      { ctrlr: { kind: 'string', required: true } },
      () => new JsonRpcError(RPC_ERROR.INVALID_PARAMS, STRERROR[E.EINVAL]),
    );
    const name = q.ctrlr as string;
    if (!this.table.listExports().some((e) => e.name === name))
      throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, STRERROR[E.ENODEV]);
    // a connected front-end is not waited for (SPDK waits until it leaves): in-flight requests drain, it is dropped
    await this.table.removeExport(name);
    this.log('info', `vhost_delete_controller: ${name}`);
    this.o.onChange?.();
    return true;
  }

  private frameworkGetSubsystems(p: unknown): unknown {
    if (p !== undefined)
      throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, "'framework_get_subsystems' requires no arguments");
    return [
      { subsystem: 'bdev', depends_on: [] },
      { subsystem: 'vhost_blk', depends_on: ['bdev'] },
      ...this.kernel.subsystems(),
    ];
  }

  private frameworkGetConfig(p: unknown): unknown {
    const q = decode(
      p,
      { name: { kind: 'string', required: true }, with_batches: { kind: 'boolean' } },
      () => new JsonRpcError(RPC_ERROR.INVALID_PARAMS, 'Invalid parameters'),
    );
    if (q.name === 'bdev') return this.bdevConfig();
    if (q.name === 'vhost_blk') return this.vhostConfig();
    const kernelConfig = this.kernel.config(q.name as string);
    if (kernelConfig) return kernelConfig;
    throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, `Subsystem '${q.name as string}' not found`);
  }

  private bdevConfig(): SpdkConfigCall[] {
    const prelude = this.modules.flatMap((m) => m.configPrelude?.() ?? []);
    const bdevs = [...this.bdevs.values()].map((r) => ({
      method: r.method,
      params: r.module?.configParams() ?? {
        name: r.name,
        ...(r.filename !== undefined ? { filename: r.filename } : { num_blocks: r.numBlocks }),
        block_size: r.blockSize,
        uuid: r.uuid,
        ...(r.readonly ? { readonly: true } : {}),
      },
    }));
    return [...prelude, ...bdevs];
  }

  private vhostConfig(): SpdkConfigCall[] {
    return this.table.listExports().map((e) => ({
      method: 'vhost_create_blk_controller',
      params: {
        ctrlr: e.name,
        dev_name: e.backend,
        readonly: e.options.readonly,
        transport: 'vhost_user_blk',
        num_queues: e.options.queues,
        queue_size: e.options.queueSize,
        completion: e.options.mode,
      },
    }));
  }

  /** The whole configuration, in the shape rpc.py's save_config writes. */
  saveConfig(): SpdkConfig {
    return {
      subsystems: [
        { subsystem: 'bdev', config: this.bdevConfig() },
        { subsystem: 'vhost_blk', config: this.vhostConfig() },
        ...this.kernel.subsystems().map((k) => ({ subsystem: k.subsystem, config: this.kernel.config(k.subsystem)! })),
      ],
    };
  }

  /**
   * Replays a saved configuration (stor's or spdk_tgt's): bdev calls first, then everything else, in
   * file order; option-setting calls stor has no use for are skipped with a note, an unknown method
   * fails. Stops at the first failure (what was created stays).
   */
  async loadConfig(config: SpdkConfig): Promise<boolean> {
    if (typeof config !== 'object' || config === null || !Array.isArray(config.subsystems))
      throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, 'Invalid parameters: expected {"subsystems": [...]}');
    const calls: SpdkConfigCall[] = [];
    const ordered = [...config.subsystems].sort((a, b) =>
      a?.subsystem === 'bdev' ? -1 : b?.subsystem === 'bdev' ? 1 : 0,
    );
    for (const s of ordered) {
      if (s?.config === null || s?.config === undefined) continue;
      if (!Array.isArray(s.config))
        throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, `subsystem ${String(s.subsystem)}: config is not an array`);
      for (const c of s.config.flat()) calls.push(c as SpdkConfigCall);
    }
    for (const c of calls) {
      const method = typeof c?.method === 'string' ? c.method : '';
      if (SKIPPED_ON_LOAD.test(method)) {
        this.log('info', `load_config: skipping ${method} (an option stor does not have)`);
        continue;
      }
      const h = this.methods.get(method);
      if (!h || ['load_config', 'save_config'].includes(method))
        throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, `load_config: unknown method '${method}'`);
      const params = c.params && typeof c.params === 'object' ? { ...c.params } : undefined;
      // spdk_tgt's saved calls carry options stor ignores; drop the ones known to be harmless
      if (params && method === 'vhost_create_blk_controller') delete params.cpumask;
      try {
        await h(params);
      } catch (e) {
        if (e instanceof JsonRpcError) throw new JsonRpcError(e.code, `load_config: ${method}: ${e.message}`);
        throw e;
      }
    }
    return true;
  }

  /** A DeviceTable error as SPDK would report it. */
  private tableError(e: unknown): JsonRpcError {
    if (e instanceof JsonRpcError) return e;
    if (!(e instanceof StorError))
      return new JsonRpcError(RPC_ERROR.INTERNAL_ERROR, `Internal error: ${(e as Error).message}`);
    if (/exists already/.test(e.message)) return errnoError(E.EEXIST);
    if (/is in use/.test(e.message)) return errnoError(E.EBUSY, e.message);
    if (e.errno !== undefined && e.errno > 0)
      return errnoError(e.errno, e.message.replace(/^cannot open backend: /, ''));
    if (e.exitCode === 2) return errnoError(E.EINVAL, e.message);
    return errnoError(5, e.message);
  }
}
