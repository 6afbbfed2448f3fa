// The only file that loads the C addon. Everything that runs per I/O lives there; this file gives
// it types. Loaded lazily so that commands that never touch the data plane start fast.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StorError } from './core/errors.js';

export interface RecvResult {
  data: Buffer;
  fds: number[];
  truncated: boolean;
}
export interface FdWatch {
  stop(): void;
  /** Whether the watch keeps the process alive (default true). */
  ref(on: boolean): void;
}

export interface NativeSys {
  unixListen(path: string, backlog?: number): number;
  unixConnect(path: string): number;
  /** -1 when nothing is pending. */
  accept(listenFd: number): number;
  /** null when it would block; data.length === 0 when the peer closed. */
  recvmsg(fd: number, maxLen: number): RecvResult | null;
  /** bytes sent, or -1 when it would block. */
  sendmsg(fd: number, data: Uint8Array, fds?: number[]): number;
  waitReadable(fd: number, timeoutMs: number): boolean;
  close(fd: number): void;
  setNonBlocking(fd: number, on: boolean): void;
  eventfd(initval?: number, nonblocking?: boolean): number;
  eventfdWrite(fd: number, value?: number): void;
  eventfdRead(fd: number): number;
  memfdCreate(name: string, size: number): number;
  /** A Buffer over a MAP_SHARED mapping; unmapped when garbage-collected. */
  mmapShared(fd: number, size: number, offset?: number): Buffer;
  bufferAddress(buf: Uint8Array): bigint;
  fstatSize(fd: number): number;
  /** Calls cb on the libuv loop when fd is ready; status < 0 is a libuv error. */
  watchFd(fd: number, readable: boolean, writable: boolean, cb: (status: number, events: number) => void): FdWatch;
}

/** An opaque handle to a native backend (null, mem, file, vhost-user); shared by every frontend. */
export type BackendHandle = { readonly __backend: unique symbol };
export interface BackendInfo {
  kind: string;
  desc: string;
  capacity: number;
  readonly: boolean;
}
/** What a backend reports about itself (C sets every one; libblkio's names in camelCase). */
export interface BdevProperties {
  driver: string;
  desc: string;
  capacity: number;
  requestAlignment: number;
  bufAlignment: number;
  optimalIoAlignment: number;
  optimalIoSize: number;
  maxTransfer: number;
  maxSegments: number;
  maxQueues: number;
  readOnly: boolean;
  canDiscard: boolean;
  canWriteZeroes: boolean;
  /** Completions take a network round trip (rbd): adaptive waiting does not spin for them. */
  remote: boolean;
  discardAlignment: number;
  maxDiscardLength: number;
  maxWriteZeroesLength: number;
  /** Buffers a user may register for zero-copy I/O (vhost-user), and whether data must live in them to avoid a copy. */
  maxMemRegions: number;
  needsMemRegions: boolean;
  /** The negotiated virtio features of a device behind the backend (vhost-user); 0n for others. */
  virtioFeatures: bigint;
}
/** A backend driver of the C registry; openable: false for those the client library creates (vhost-user). */
export interface BdevDriverInfo {
  name: string;
  help: string;
  openable: boolean;
  properties: Array<{ name: string; help: string }>;
}

export interface NativeBackend {
  /** Opens a backend through the C registry. A bad property throws with errno 22 and .property naming it. */
  bdevOpen(driver: string, props: Record<string, string>): BackendHandle;
  bdevProperties(b: BackendHandle): BdevProperties;
  bdevDrivers(): BdevDriverInfo[];
  backendInfo(b: BackendHandle): BackendInfo;
  backendFlush(b: BackendHandle): void;
  /**
   * Releases the handle's backend now (a file's fd and image locks), not at garbage collection;
   * users that still run on it keep it alive.
   */
  backendClose(b: BackendHandle): void;
  /**
   * The fault-injection filter stacked on an open backend that stays open and in use (the daemon's delay
   * and error bdevs): a new handle holding its own reference on base. props: the filter's spec
   * properties (delay-us, error-rate, ...), may be empty; the live settings below start empty.
   */
  bdevWrap(base: BackendHandle, props: Record<string, string>): BackendHandle;
  /** A live wrapper's latency for op ('avg': every request; 'p99': 1 in 100), in microseconds. */
  faultSetLatency(b: BackendHandle, op: FaultOp, which: 'avg' | 'p99', us: number): void;
  /** The next num requests of op fail with EIO or are held ('pending'), while >= queueDepth are in flight below. */
  faultInjectError(b: BackendHandle, op: FaultOp, kind: FaultErrorKind, num: number, queueDepth: number): void;
  /** Releases every held request to the backend and zeroes the pending counts. */
  faultResume(b: BackendHandle): void;
  faultState(b: BackendHandle): FaultState;
}

export type FaultOp = 'read' | 'write' | 'flush' | 'unmap' | 'write_zeroes';
export type FaultErrorKind = 'none' | 'failure' | 'pending';
export interface FaultState {
  /** requests held 'pending' now, over all queues */
  held: number;
  ops: Record<FaultOp, { avgUs: number; p99Us: number; error: FaultErrorKind; num: number; queueDepth: number }>;
}

export type CompletionMode = 'notify' | 'poll' | 'adaptive';
export type BlkDeviceHandle = { readonly __blkdev: unique symbol };
export interface BlkDeviceOptions {
  queues: number;
  blockSize: number;
  readonly: boolean;
  serial: string;
  mode: CompletionMode;
  /** the spin budget (adaptive); pollUs is its old name */
  spinUs?: number;
  pollUs?: number;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
}
export interface NativeMemRegion {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
  fd: number;
}
/** What every export counts per queue (vhost-user-blk, VDUSE and ublk alike); each adds its own. */
export interface QueueCounters {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  write_zeroes: number;
  errors: number;
  bytes_read: number;
  bytes_written: number;
  running: boolean;
}
/** The virtio exports' (vhost-user-blk, VDUSE) further counters: GET_ID, unsupported types, the ring's. */
export interface VirtqQueueCounters extends QueueCounters {
  get_id: number;
  unsupported: number;
  kicks: number;
  wakeups: number;
}
/** A vhost-user-blk queue's counters. */
export interface QueueStats extends VirtqQueueCounters {
  calls: number;
  cpuSeconds: number;
}
/** kind: 'broken' (the ring is unusable: drop the front-end), 'reqerr' (one request failed), 'warn'. */
export type BlkDeviceEvent = (kind: string, queue: number, message: string) => void;

/** The vhost-user-blk device's data plane; fds passed in are owned by the device from then on. */
export interface NativeBlkDevice {
  blkDeviceCreate(backend: BackendHandle, opts: BlkDeviceOptions, onEvent: BlkDeviceEvent): BlkDeviceHandle;
  blkDeviceDestroy(d: BlkDeviceHandle): void;
  blkDeviceReset(d: BlkDeviceHandle): void;
  blkDeviceSetFeatures(d: BlkDeviceHandle, features: bigint): void;
  blkDeviceSetMemTable(d: BlkDeviceHandle, regions: NativeMemRegion[]): void;
  blkDeviceAddMemRegion(d: BlkDeviceHandle, region: NativeMemRegion): void;
  blkDeviceRemoveMemRegion(d: BlkDeviceHandle, region: NativeMemRegion): boolean;
  blkDeviceSetVring(
    d: BlkDeviceHandle,
    index: number,
    v: { num?: number; base?: number; desc?: bigint; avail?: bigint; used?: bigint },
  ): void;
  blkDeviceSetVringFd(d: BlkDeviceHandle, index: number, kind: 'kick' | 'call' | 'err', fd: number): void;
  blkDeviceStartQueue(d: BlkDeviceHandle, index: number): void;
  /** Stops the queue after its in-flight requests complete; returns the next avail index. */
  blkDeviceStopQueue(d: BlkDeviceHandle, index: number): number;
  blkDeviceStats(d: BlkDeviceHandle): QueueStats[];
  /** GET_INFLIGHT_FD: a new zeroed inflight buffer, now the device's; the fd stays the device's (send, never close). */
  blkDeviceGetInflight(
    d: BlkDeviceHandle,
    numQueues: number,
    queueSize: number,
  ): { fd: number; mmapSize: number; mmapOffset: number };
  /** SET_INFLIGHT_FD: the front-end's buffer becomes the device's; takes ownership of fd, even when it throws. */
  blkDeviceSetInflight(d: BlkDeviceHandle, inflight: InflightBuffer & { fd: number }): void;
}

/** The VDUSE export (native/export/vduse_blk.c): device creation on /dev/vduse/control and the data
 * plane behind /dev/vduse/NAME. Errors carry .errno (ENOENT: no VDUSE, EACCES: not root, EEXIST: name taken). */
export type VduseDeviceHandle = { readonly __vduse: unique symbol };
export interface VduseDeviceOptions {
  queues: number;
  blockSize: number;
  readonly: boolean;
  serial: string;
  mode: CompletionMode;
  spinUs?: number;
  maxDiscardSectors?: number;
  maxWriteZeroesSectors?: number;
  /** The largest ring the device offers (sizes the inflight log's regions). */
  queueSize?: number;
  /** Inflight log file (VDUSE reconnect): created for a new device, read back with reconnect. */
  inflightLog?: string;
  /** Resume the rings of a device whose server died instead of waiting for DRIVER_OK. */
  reconnect?: boolean;
}
export interface VduseQueueStats extends VirtqQueueCounters {
  irqs: number;
  iotlbMaps: number;
}
/** kind: 'status' (driver ready / reset), 'broken', 'error', 'reqerr', 'warn'; queue -1 for the device. */
export type VduseDeviceEvent = (kind: string, queue: number, message: string) => void;
export interface NativeVduse {
  vduseApiVersion(): number;
  vduseCreateDevice(o: { name: string; features: bigint; queues: number; queueSize: number; config: Buffer }): void;
  vduseDestroyDevice(name: string): void;
  /** backend null: answer the kernel only (to remove a device whose server died). */
  vduseDeviceOpen(
    name: string,
    backend: BackendHandle | null,
    opts: VduseDeviceOptions,
    onEvent: VduseDeviceEvent,
  ): VduseDeviceHandle;
  vduseDeviceClose(d: VduseDeviceHandle): void;
  vduseDeviceStats(d: VduseDeviceHandle): VduseQueueStats[];
}

export interface VuClientQueueInfo {
  desc: bigint;
  avail: bigint;
  used: bigint;
  kickFd: number;
  callFd: number;
}
export interface VuClientCreated {
  backend: BackendHandle;
  memFd: number;
  memAddr: bigint;
  memSize: number;
  queues: VuClientQueueInfo[];
}
export interface VuClientRegion {
  fd: number;
  addr: bigint;
  size: number;
  buffer: Buffer;
}

/** The driver side of a remote vhost-user-blk device, as a backend. */
export interface NativeVuClient {
  /**
   * The backend derives every property (bdevProperties) from the negotiated features and the config space;
   * more queues than the device has throws "numQueues: N queues asked, the device has M".
   */
  vuClientCreate(o: {
    features: bigint;
    config: Buffer;
    readonly: boolean;
    queues: number;
    queueSize: number;
    /** GET_MAX_MEM_SLOTS's answer; 0 without CONFIGURE_MEM_SLOTS */
    maxMemSlots: number;
    bounceSize?: number;
    desc?: string;
    controlFd?: number;
  }): VuClientCreated;
  vuClientAllocRegion(b: BackendHandle, size: number): VuClientRegion;
  vuClientMarkDead(b: BackendHandle, shutdown?: boolean): void;
}

export type ClientQueueHandle = { readonly __clientq: unique symbol };
export const STOR_OP = { READ: 0, WRITE: 1, FLUSH: 2, DISCARD: 3, WRITE_ZEROES: 4 } as const;
export const STOR_REQ_F_UNMAP = 1;
/** Requests from JavaScript onto a backend queue, completed as [token, result] pairs. */
export interface NativeClient {
  clientQueueOpen(b: BackendHandle, depth: number): ClientQueueHandle;
  /** false when every slot is in flight. */
  clientSubmit(
    q: ClientQueueHandle,
    op: number,
    offset: number,
    length: number,
    buffer: Uint8Array | null,
    token: number,
    flags?: number,
  ): boolean;
  clientCommit(q: ClientQueueHandle): void;
  /** [token, result, token, result, ...]; result 0 or -errno. */
  clientReap(q: ClientQueueHandle, spinUs?: number, arm?: boolean): Float64Array;
  clientInfo(q: ClientQueueHandle): { eventFd: number; inflight: number; free: number };
  clientQueueClose(q: ClientQueueHandle): void;
}

export interface BenchThreadResult {
  readIos: number;
  writeIos: number;
  readBytes: number;
  writeBytes: number;
  errors: number;
  verifyFailures: number;
  verified: number;
  latMinNs: number;
  latMaxNs: number;
  latSumNs: number;
  cpuUser: number;
  cpuSys: number;
  ctxVoluntary: number;
  ctxInvoluntary: number;
  firstBadOffset: number;
  error?: string;
  timeline: number[];
}
export interface BenchRunResult {
  threads: BenchThreadResult[];
  histogram: Array<[number, number]>;
  wallSeconds: number;
  tickMs: number;
}
export interface BenchRunConfig {
  rw: 'read' | 'write' | 'randread' | 'randwrite' | 'randrw' | 'rw';
  rwmixread?: number;
  bs: number;
  iodepth: number;
  threads: number;
  offset?: number;
  span?: number;
  runtimeMs: number;
  rampMs?: number;
  wait: 'notify' | 'poll' | 'adaptive';
  spinUs?: number;
  refill?: 'eager' | 'drain';
  verify?: boolean;
  seed?: number;
  tickMs?: number;
}
export interface NativeBench {
  benchRun(
    b: BackendHandle,
    cfg: BenchRunConfig,
    bufferPool?: Buffer,
  ): { promise: Promise<BenchRunResult>; progress(): number };
}

export interface CopyResult {
  bytesCopied: number;
  bytesVerified: number;
  zeroBytes: number;
  mismatchedChunks: number;
  firstMismatch: number | null;
}
export interface NativeCopy {
  copyRun(
    src: BackendHandle,
    dst: BackendHandle,
    cfg: {
      srcOffset?: number;
      dstOffset?: number;
      length: number;
      chunk: number;
      queues: number;
      iodepth: number;
      verify: boolean;
      zeroDetect: boolean;
      flush?: boolean;
    },
    pool?: Buffer,
  ): { promise: Promise<CopyResult>; progress(): { copied: number; verified: number } };
}

// ---- ublk (export/ublk.c) ----
export type UblkServerHandle = { readonly __ublk: unique symbol };
/** A ublk device as the kernel describes it (GET_DEV_INFO); state: 0 dead, 1 live, 2 quiesced. */
export interface UblkDevInfo {
  id: number;
  queues: number;
  depth: number;
  state: number;
  maxIoBytes: number;
  pid: number;
  flags: bigint;
}
export interface UblkParams {
  capacity: number;
  logicalBlockSize: number;
  physicalBlockSize?: number;
  ioOpt?: number;
  ioMin?: number;
  maxSectors: number;
  readonly: boolean;
  volatileCache?: boolean;
  discardGranularity?: number;
  discardAlignment?: number;
  maxDiscardSectors?: number;
  maxWriteZeroesSectors?: number;
}
export type UblkCommand = 'START_DEV' | 'STOP_DEV' | 'DEL_DEV' | 'START_USER_RECOVERY' | 'END_USER_RECOVERY';
export interface UblkQueueStats extends QueueCounters {
  sleeps: number;
  cpuSeconds: number;
}
export interface NativeUblk {
  /** 0, or -errno of opening /dev/ublk-control (-2: no ublk_drv loaded, -13: not root). */
  ublkControlAvailable(): number;
  /** Errors carry .errno (17: the id is in use). */
  ublkAddDev(o: { id: number; queues: number; depth: number; maxIoBytes: number; recovery: boolean }): UblkDevInfo;
  ublkGetDevInfo(id: number): UblkDevInfo | null;
  ublkSetParams(id: number, p: UblkParams): void;
  /** Bounded by timeoutMs (then cancelled: errno 110). */
  ublkCommand(name: UblkCommand, id: number, timeoutMs: number): void;
  ublkServerCreate(
    backend: BackendHandle,
    o: {
      id: number;
      queues: number;
      depth: number;
      maxIoBytes: number;
      readonly: boolean;
      mode: CompletionMode;
      spinUs?: number;
    },
    onEvent: (kind: string, queue: number, message: string) => void,
  ): UblkServerHandle;
  /** Waits up to timeoutMs for the queue threads to exit on their own; returns how many still run. */
  ublkServerWait(h: UblkServerHandle, timeoutMs: number): number;
  ublkServerDestroy(h: UblkServerHandle): void;
  ublkServerStats(h: UblkServerHandle): UblkQueueStats[];
}

export type NativeAddon = NativeSys &
  NativeBackend &
  NativeBlkDevice &
  NativeVuClient &
  NativeClient &
  NativeBench &
  NativeCopy &
  NativeVduse &
  NativeUblk;

let addon: NativeAddon | undefined;

function addonPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/lib (ts-node) or dist/src/lib (compiled): the addon is native/build/Release under the root.
  for (const up of ['../..', '../../..']) {
    const p = join(here, up, 'native', 'build', 'Release', 'stor.node');
    if (existsSync(p)) return p;
  }
  throw new StorError('native addon not built', {
    hint: 'run `npm run build:native` (needs liburing-dev and a C compiler)',
  });
}

export function native(): NativeAddon {
  if (!addon) addon = createRequire(import.meta.url)(addonPath()) as NativeAddon;
  return addon;
}

/** An inflight buffer as GET_INFLIGHT_FD / SET_INFLIGHT_FD describe it (vhost-user.rst, "Inflight description"). */
export interface InflightBuffer {
  mmapSize: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}
