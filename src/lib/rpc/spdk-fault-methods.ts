// SPDK's delay and error bdevs for `stor daemon`, on stor's fault-injection filter stacked on an open
// bdev (DeviceTable.wrapBackend → native bdevWrap, native/bdev/fault.c): bdev_delay_create / _delete /
// _update_latency and bdev_error_create / _delete / _inject_error / _resume_pending, with SPDK 26.05's
// parameters, results and error codes (module/bdev/delay/vbdev_delay_rpc.c, module/bdev/error/
// vbdev_error_rpc.c). The base bdev is not reopened (a malloc bdev keeps its data) and is claimed: a
// second delay or error bdev on it is -1 (Operation not permitted), as in SPDK. The settings change
// while I/O runs, in the native filter's atomics; nothing per request runs here.
// Semantics follow SPDK's: a delay bdev holds reads and writes (not flush, unmap or write-zeroes) for
// avg_*_latency µs, one request in 100 for p99_*_latency µs; an error bdev fails (EIO) or holds
// ("pending", until bdev_error_resume_pending) the next `num` requests of an operation, only while at
// least queue_depth requests are in flight below it.
// Differences from SPDK, said in the messages and the README: a base bdev that does not exist is -19
// (SPDK records the bdev and creates it when the base appears); deleting a base bdev a delay or error
// bdev uses is refused with -16 (SPDK hot-removes the stack); error_type corrupt_data, nomem and
// nvme_failure are refused with -22 (stor's filter fails or holds requests, it does not alter data);
// removing a controller (or ublk/VDUSE disk) releases the requests its error bdev holds, so it can drain.
import { randomUUID } from 'node:crypto';
import { native, type FaultErrorKind, type FaultOp } from '../native.js';
import { JsonRpcError, RPC_ERROR } from './jsonrpc.js';
import {
  DECODE_FAILED,
  decode,
  E,
  errnoError,
  type Field,
  type SpdkBdevHost,
  type SpdkBdevModule,
} from './spdk-methods.js';

const DELAY = 'bdev_delay_create';
const ERROR = 'bdev_error_create';

const LATENCY_KEYS = ['avg_read_latency', 'p99_read_latency', 'avg_write_latency', 'p99_write_latency'] as const;
type LatencyKey = (typeof LATENCY_KEYS)[number];
/** Each SPDK latency as the native filter's (operation, which). */
const LATENCY_TARGET: Record<LatencyKey, [FaultOp, 'avg' | 'p99']> = {
  avg_read_latency: ['read', 'avg'],
  p99_read_latency: ['read', 'p99'],
  avg_write_latency: ['write', 'avg'],
  p99_write_latency: ['write', 'p99'],
};
/** bdev_delay_update_latency's latency_type values. */
const LATENCY_TYPE: Record<string, LatencyKey> = {
  avg_read: 'avg_read_latency',
  p99_read: 'p99_read_latency',
  avg_write: 'avg_write_latency',
  p99_write: 'p99_write_latency',
};
/** A latency the native filter takes (µs; at most an hour). */
const MAX_LATENCY_US = 3_600_000_000;

const DELAY_FIELDS: Record<string, Field> = {
  base_bdev_name: { kind: 'string', required: true },
  name: { kind: 'string', required: true },
  uuid: { kind: 'uuid' },
  avg_read_latency: { kind: 'uint', required: true },
  p99_read_latency: { kind: 'uint', required: true },
  avg_write_latency: { kind: 'uint', required: true },
  p99_write_latency: { kind: 'uint', required: true },
};
const UPDATE_FIELDS: Record<string, Field> = {
  delay_bdev_name: { kind: 'string', required: true },
  latency_type: { kind: 'string', required: true },
  latency_us: { kind: 'uint', required: true },
};
const ERROR_FIELDS: Record<string, Field> = {
  base_name: { kind: 'string', required: true },
  uuid: { kind: 'uuid' },
};
const INJECT_FIELDS: Record<string, Field> = {
  name: { kind: 'string', required: true },
  io_type: { kind: 'string', required: true },
  error_type: { kind: 'string', required: true },
  nvme_sct: { kind: 'uint' },
  nvme_sc: { kind: 'uint' },
  num: { kind: 'uint' },
  queue_depth: { kind: 'uint' },
  corrupt_offset: { kind: 'uint' },
  corrupt_value: { kind: 'uint' },
};
const NAME_ONLY: Record<string, Field> = { name: { kind: 'string', required: true } };

/** SPDK's io_type values and the stor operations each one sets ('clear' zeroes every count). */
const IO_TYPES: Record<string, FaultOp[]> = {
  clear: ['read', 'write', 'unmap', 'flush'],
  read: ['read'],
  write: ['write'],
  unmap: ['unmap'],
  flush: ['flush'],
  all: ['read', 'write', 'unmap', 'flush'],
};
const ERROR_TYPES = ['failure', 'pending', 'corrupt_data', 'nomem', 'nvme_failure'];
const U32_MAX = 0xffff_ffff;

interface DelayBdev {
  base: string;
  latency: Record<LatencyKey, number>;
}

export function faultBdevModule(host: SpdkBdevHost): SpdkBdevModule {
  const delays = new Map<string, DelayBdev>();
  /** error bdevs by name (EE_<base>) → base */
  const errors = new Map<string, string>();

  const handle = (name: string) => host.table.backend(name).handle;

  /** The checks both creates make of the base: it exists (stor does not wait for it), nothing claims it. */
  const checkBase = (base: string): void => {
    if (!host.bdev(base))
      throw errnoError(
        E.ENODEV,
        `base bdev ${base} does not exist (stor does not wait for it as SPDK does: create it first)`,
      );
    const by = host.claimedBy(base);
    if (by !== undefined) {
      host.log('warn', `${base} is claimed by ${by} already`);
      throw errnoError(E.EPERM);
    }
  };

  const delayCreate = (p: unknown): string => {
    const q = decode(p, DELAY_FIELDS, DECODE_FAILED);
    const latency = Object.fromEntries(LATENCY_KEYS.map((k) => [k, q[k] as number])) as Record<LatencyKey, number>;
    if (latency.p99_read_latency < latency.avg_read_latency || latency.p99_write_latency < latency.avg_write_latency)
      throw errnoError(E.EINVAL);
    if (LATENCY_KEYS.some((k) => latency[k] > MAX_LATENCY_US))
      throw errnoError(E.EINVAL, `latencies up to ${MAX_LATENCY_US} µs (an hour)`);
    const name = q.name as string;
    const base = q.base_bdev_name as string;
    if (delays.has(name) || host.bdev(name)) throw errnoError(E.EEXIST);
    checkBase(base);
    const d: DelayBdev = { base, latency };
    const uuid = (q.uuid as string | undefined) ?? randomUUID();
    host.wrapBdev(
      {
        name,
        method: DELAY,
        uuid,
        module: {
          productName: 'delay',
          driverSpecific: () => ({ delay: { name, base_bdev_name: base, uuid, ...d.latency } }),
          configParams: () => ({ name, base_bdev_name: base, uuid, ...d.latency }),
          ioTypes: host.ioTypes(base),
        },
      },
      base,
      'delay',
    );
    delays.set(name, d);
    for (const k of LATENCY_KEYS) native().faultSetLatency(handle(name), ...LATENCY_TARGET[k], latency[k]);
    host.changed();
    return name;
  };

  const delayDelete = (p: unknown): boolean => {
    const q = decode(p, NAME_ONLY, DECODE_FAILED);
    host.removeBdev(q.name as string, DELAY);
    delays.delete(q.name as string);
    host.changed();
    return true;
  };

  const delayUpdate = (p: unknown): boolean => {
    const q = decode(p, UPDATE_FIELDS, DECODE_FAILED);
    // SPDK's decoder refuses a latency_type it does not know: the whole object fails to decode
    const key = LATENCY_TYPE[q.latency_type as string];
    if (!key) throw DECODE_FAILED();
    const d = delays.get(q.delay_bdev_name as string);
    if (!d) throw new JsonRpcError(RPC_ERROR.INVALID_PARAMS, 'The requested bdev does not exist.');
    const us = q.latency_us as number;
    if (us > MAX_LATENCY_US) throw errnoError(E.EINVAL, `latencies up to ${MAX_LATENCY_US} µs (an hour)`);
    // SPDK checks p99 >= avg at create only; so does stor
    native().faultSetLatency(handle(q.delay_bdev_name as string), ...LATENCY_TARGET[key], us);
    d.latency[key] = us;
    host.changed();
    return true;
  };

  const errorCreate = (p: unknown): boolean => {
    const q = decode(p, ERROR_FIELDS, DECODE_FAILED);
    const base = q.base_name as string;
    const name = `EE_${base}`;
    if (errors.has(name) || host.bdev(name)) throw errnoError(E.EEXIST);
    checkBase(base);
    const uuid = (q.uuid as string | undefined) ?? randomUUID();
    host.wrapBdev(
      {
        name,
        method: ERROR,
        uuid,
        module: {
          productName: 'Error Injection Disk',
          driverSpecific: () => ({ error_disk: { base_bdev: base } }),
          configParams: () => ({ base_name: base, uuid }),
          ioTypes: host.ioTypes(base),
        },
      },
      base,
      'error',
    );
    errors.set(name, base);
    host.changed();
    return true;
  };

  const errorDelete = (p: unknown): boolean => {
    const q = decode(p, NAME_ONLY, DECODE_FAILED);
    host.removeBdev(q.name as string, ERROR);
    errors.delete(q.name as string);
    host.changed();
    return true;
  };

  const injectError = (p: unknown): boolean => {
    const q = decode(p, INJECT_FIELDS, DECODE_FAILED);
    const ops = IO_TYPES[q.io_type as string];
    const type = q.error_type as string;
    const num = (q.num as number | undefined) ?? 1;
    const nvme = Boolean(q.nvme_sct) || Boolean(q.nvme_sc);
    // what SPDK's decoder refuses (an unknown enum value, a number wider than its field)
    if (!ops || !ERROR_TYPES.includes(type) || num > U32_MAX || ((q.corrupt_value as number | undefined) ?? 0) > 255)
      throw DECODE_FAILED();
    if ((type === 'nvme_failure') !== nvme)
      throw new JsonRpcError(-E.EINVAL, 'nvme_sct or nvme_sc should be specified for NVMe error injection');
    if (type === 'corrupt_data' && !q.corrupt_value) throw errnoError(E.EINVAL);
    const name = q.name as string;
    if (!errors.has(name)) throw errnoError(E.ENODEV);
    if (q.io_type !== 'clear' && type !== 'failure' && type !== 'pending')
      throw errnoError(
        E.EINVAL,
        `error_type ${type}: stor's error bdev fails requests (failure) or holds them (pending); it does not alter data or status codes`,
      );
    const h = handle(name);
    const qd = (q.queue_depth as number | undefined) ?? 0;
    for (const op of ops) {
      if (q.io_type === 'clear') native().faultInjectError(h, op, 'none', 0, 0);
      else native().faultInjectError(h, op, type as FaultErrorKind, num, qd);
    }
    host.log('info', `bdev_error_inject_error: ${name} ${q.io_type as string} ${type} num ${num}`);
    return true;
  };

  const resumePending = (p: unknown): boolean => {
    const q = decode(p, NAME_ONLY, DECODE_FAILED);
    if (!errors.has(q.name as string)) throw errnoError(E.ENODEV);
    native().faultResume(handle(q.name as string));
    return true;
  };

  return {
    methods: [
      [DELAY, delayCreate],
      ['bdev_delay_delete', delayDelete],
      ['bdev_delay_update_latency', delayUpdate],
      [ERROR, errorCreate],
      ['bdev_error_delete', errorDelete],
      ['bdev_error_inject_error', injectError],
      ['bdev_error_resume_pending', resumePending],
    ],
  };
}
