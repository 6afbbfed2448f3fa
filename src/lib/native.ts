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

export type NativeAddon = NativeSys;

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
