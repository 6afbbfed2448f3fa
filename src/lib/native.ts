// The only file that loads the C addon. Everything that runs per I/O lives there; this file gives
// it types. Loaded lazily so that commands that never touch the data plane start fast.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StorError } from './errors.js';

export interface RecvResult { data: Buffer; fds: number[]; truncated: boolean }
export interface FdWatch { stop(): void }

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

/** An opaque handle to a native backend (null, mem, file); shared by every frontend. */
export type BackendHandle = { readonly __backend: unique symbol };
export interface BackendConfig { kind: 'null' | 'mem' | 'file'; size?: number; path?: string; create?: boolean; direct?: boolean; readonly?: boolean }
export interface BackendInfo { kind: string; desc: string; capacity: number; readonly: boolean }

export interface NativeBackend {
  backendOpen(cfg: BackendConfig): BackendHandle;
  backendInfo(b: BackendHandle): BackendInfo;
  backendFlush(b: BackendHandle): void;
}

export type CompletionMode = 'notify' | 'poll' | 'adaptive';
export type BlkDeviceHandle = { readonly __blkdev: unique symbol };
export interface BlkDeviceOptions {
  queues: number; blockSize: number; readonly: boolean; serial: string; mode: CompletionMode; pollUs?: number;
  maxDiscardSectors: number; maxWriteZeroesSectors: number;
}
export interface NativeMemRegion { guestAddr: bigint; size: bigint; userAddr: bigint; mmapOffset: bigint; fd: number }
export interface QueueStats {
  requests: number; reads: number; writes: number; flushes: number; discards: number; write_zeroes: number;
  get_id: number; errors: number; unsupported: number; bytes_read: number; bytes_written: number;
  kicks: number; calls: number; wakeups: number; running: boolean; cpuSeconds: number;
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
  blkDeviceSetVring(d: BlkDeviceHandle, index: number, v: { num?: number; base?: number; desc?: bigint; avail?: bigint; used?: bigint }): void;
  blkDeviceSetVringFd(d: BlkDeviceHandle, index: number, kind: 'kick' | 'call' | 'err', fd: number): void;
  blkDeviceStartQueue(d: BlkDeviceHandle, index: number): void;
  /** Stops the queue after its in-flight requests complete; returns the next avail index. */
  blkDeviceStopQueue(d: BlkDeviceHandle, index: number): number;
  blkDeviceStats(d: BlkDeviceHandle): QueueStats[];
}

export type NativeAddon = NativeSys & NativeBackend & NativeBlkDevice;

let addon: NativeAddon | undefined;

function addonPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/lib (ts-node) or dist/src/lib (compiled): the addon is native/build/Release under the root.
  for (const up of ['../..', '../../..']) {
    const p = join(here, up, 'native', 'build', 'Release', 'stor.node');
    if (existsSync(p)) return p;
  }
  throw new StorError('native addon not built', { hint: 'run `npm run build:native` (needs liburing-dev and a C compiler)' });
}

export function native(): NativeAddon {
  if (!addon) addon = createRequire(import.meta.url)(addonPath()) as NativeAddon;
  return addon;
}
