// The copy engine as a library entry: copies a range from one open device to another in native
// threads (native/copy.c), one per queue, each with up to `iodepth` chunks in flight; all-zero
// chunks go out as write-zeroes where the destination supports it, and `verify` reads both sides
// back. Buffers live in a vhost-user side's shared memory when there is one, which makes that side
// zero-copy. Nothing runs in JavaScript per chunk: this returns the run's promise and a progress
// reader, as the bench engine does.
import type { BlockDevice } from '../client/device.js';
import { native, type CopyResult } from '../native.js';

export type { CopyResult };

export interface CopyOptions {
  srcOffset?: number;
  dstOffset?: number;
  length: number;
  /** bytes per request */
  chunk: number;
  queues: number;
  /** chunks in flight per queue */
  iodepth: number;
  verify?: boolean;
  /** all-zero chunks as write-zeroes; default: when the destination can write zeroes */
  zeroDetect?: boolean;
  /** flush the destination at the end (default true) */
  flush?: boolean;
}

export interface CopyProgress {
  copied: number;
  verified: number;
}

export interface CopyJob {
  /** Rejects with an Error carrying bytesCopied when a request fails. */
  promise: Promise<CopyResult>;
  progress(): CopyProgress;
}

export function runCopy(src: BlockDevice, dst: BlockDevice, o: CopyOptions): CopyJob {
  const verify = o.verify ?? false;
  const buffers = o.queues * o.iodepth * (verify ? 2 : 1) * o.chunk;
  const zc = [src, dst].find((d) => d.properties.driver === 'virtio-blk-vhost-user');
  const pool = zc ? zc.allocMemRegion(buffers).buffer : undefined;
  return native().copyRun(
    src.backend,
    dst.backend,
    {
      srcOffset: o.srcOffset ?? 0,
      dstOffset: o.dstOffset ?? 0,
      length: o.length,
      chunk: o.chunk,
      queues: o.queues,
      iodepth: o.iodepth,
      verify,
      zeroDetect: o.zeroDetect ?? dst.properties.canWriteZeroes,
      flush: o.flush ?? true,
    },
    pool,
  );
}
