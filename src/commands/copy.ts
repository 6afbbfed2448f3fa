import { Args, Flags } from '@oclif/core';
import { existsSync } from 'node:fs';
import { StorCommand } from '../cli/command.js';
import { exitOnInterrupt } from '../cli/interrupt.js';
import { ProgressLine } from '../cli/progress.js';
import { clientFlags, parseTimeout, TARGET_DESCRIPTION } from '../cli/client-flags.js';
import { BlockDevice, type Completion } from '../lib/client/device.js';
import { EXIT, StorError, usageError } from '../lib/core/errors.js';
import { runCopy } from '../lib/engine/copy.js';
import { formatSize, parsePositiveSize, parseSize, SIZE_FORMS } from '../lib/core/size.js';
import { parseTarget } from '../lib/core/target.js';
import { overlappingRanges } from '../lib/bdev/identity.js';

export default class Copy extends StorCommand {
  static override summary =
    'Copy between any two targets (sockets, files, devices), multi-queue, with optional verification';
  static override description = `The copy runs in native threads, one per queue, each with up to --iodepth chunks in flight.
All-zero chunks are written as write-zeroes where the destination supports it. --verify reads both sides back and compares (exit 3 on a mismatch).
A destination file that does not exist is created with the size of the copy.`;
  static override examples = [
    '<%= config.bin %> copy /var/tmp/golden.img vhost-user:/tmp/stor.sock --verify',
    '<%= config.bin %> copy vhost-user:/tmp/stor.sock /var/tmp/backup.img --queues 2 --iodepth 16',
  ];
  static override args = {
    source: Args.string({ description: `copy from: ${TARGET_DESCRIPTION}`, required: true }),
    destination: Args.string({ description: 'copy to (same forms)', required: true }),
  };
  static override flags = {
    ...clientFlags,
    iodepth: Flags.integer({ description: 'chunks in flight per queue', default: 8, min: 1, max: 1024 }),
    chunk: Flags.string({ description: `bytes per request (${SIZE_FORMS})`, default: '1M' }),
    length: Flags.string({ description: 'bytes to copy (default: from --src-offset to the end of the source)' }),
    'src-offset': Flags.string({ description: 'where to start reading', default: '0' }),
    'dst-offset': Flags.string({ description: 'where to start writing', default: '0' }),
    verify: Flags.boolean({ description: 'read both sides back and compare; exit 3 on a mismatch', default: false }),
    'no-zero-detect': Flags.boolean({
      description: 'write zero chunks as data instead of write-zeroes',
      default: false,
    }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Copy);
    const chunk = parsePositiveSize(flags.chunk, '--chunk');
    if (chunk % 512 || chunk > 64 << 20)
      throw usageError('--chunk', `${flags.chunk} must be a multiple of 512 up to 64M`, 'e.g. 256k, 1M, 4M');
    const srcOffset = parseSize(flags['src-offset'], '--src-offset');
    const dstOffset = parseSize(flags['dst-offset'], '--dst-offset');
    // checked here for the common 512; against each side's own alignment once it is open
    for (const [flag, v] of [
      ['--src-offset', srcOffset],
      ['--dst-offset', dstOffset],
    ] as const) {
      if (v % 512) throw usageError(flag, `${v} is not a multiple of 512`, 'offsets and lengths in whole sectors');
    }
    const srcT = parseTarget(args.source, 'source');
    let dstT = parseTarget(args.destination, 'destination');
    // a chunk is at most 3 descriptors (header, data, status) in a direct chain
    const queueSize = Math.min(1024, Math.max(256, 2 ** Math.ceil(Math.log2(flags.iodepth * 3))));
    const openOpts = {
      numQueues: flags.queues,
      completion: flags.completion as Completion,
      timeoutMs: parseTimeout(flags.timeout),
      queueSize,
    };
    const src = await BlockDevice.open(srcT, { ...openOpts, readOnly: true });
    let dst: BlockDevice | undefined;
    try {
      if (srcOffset >= src.properties.capacity)
        throw usageError(
          '--src-offset',
          `${srcOffset} is at or past the end of the source (${src.properties.capacity} bytes)`,
        );
      const length = flags.length ? parseSize(flags.length, '--length') : src.properties.capacity - srcOffset;
      if (length % 512) throw usageError('--length', `${length} is not a multiple of 512`);
      const align = src.properties.requestAlignment;
      if (srcOffset % align || length % align)
        throw usageError('--src-offset/--length', `must be multiples of the source's request alignment (${align})`);
      if (srcOffset + length > src.properties.capacity)
        throw usageError(
          '--length',
          `the source has ${src.properties.capacity} bytes, the range ends at ${srcOffset + length}`,
        );
      // Chunks run in parallel and in no fixed order: a range copied onto itself would read bytes already
      // overwritten (and --verify would compare the overwritten source with itself). Refused.
      if (overlappingRanges(srcT, srcOffset, dstT, dstOffset, length)) {
        throw usageError(
          '--src-offset/--dst-offset',
          `the source and the destination are the same image and the ranges overlap ` +
            `(bytes ${srcOffset}..${srcOffset + length} and ${dstOffset}..${dstOffset + length})`,
          'ranges of one image that do not overlap, or copy through a temporary image',
        );
      }
      if (dstT.kind === 'file' && !existsSync(dstT.path) && dstT.create === undefined)
        dstT = { ...dstT, create: dstOffset + length };
      dst = await BlockDevice.open(dstT, openOpts);
      if (dstOffset + length > dst.properties.capacity) {
        throw usageError(
          'destination',
          `it has ${dst.properties.capacity} bytes, the copy needs ${dstOffset + length}`,
        );
      }
      if (dst.properties.readOnly) throw usageError('destination', 'it is read-only', 'a writable destination');
      const dalign = dst.properties.requestAlignment;
      if (dstOffset % dalign || length % dalign)
        throw usageError(
          '--dst-offset/--length',
          `must be multiples of the destination's request alignment (${dalign})`,
        );
      const job = runCopy(src, dst, {
        srcOffset,
        dstOffset,
        length,
        chunk,
        queues: flags.queues,
        iodepth: flags.iodepth,
        verify: flags.verify,
        zeroDetect: !flags['no-zero-detect'] && dst.properties.canWriteZeroes,
        flush: true,
      });
      const t0 = performance.now();
      const line = ProgressLine.start(!this.jsonEnabled());
      const timer = line
        ? setInterval(() => line.update(progressText(job.progress(), length, flags.verify, t0)), 200)
        : undefined;
      const stopInterrupt = exitOnInterrupt({
        command: 'copy',
        json: this.jsonEnabled(),
        before: () => {
          if (timer) clearInterval(timer);
          line?.clear();
        },
        progress: () => howFar(job.progress(), length),
      });
      let r;
      try {
        r = await job.promise;
      } catch (e) {
        const err = e as Error & { bytesCopied?: number };
        throw new StorError(`copy failed after ${formatSize(err.bytesCopied ?? 0)}: ${err.message}`);
      } finally {
        stopInterrupt();
        if (timer) clearInterval(timer);
        line?.clear();
      }
      const seconds = (performance.now() - t0) / 1000;
      const result = {
        source: args.source,
        destination: args.destination,
        length,
        seconds: Number(seconds.toFixed(3)),
        bytesPerSecond: Math.round(length / seconds),
        zeroBytes: r.zeroBytes,
        verified: flags.verify,
        mismatchedChunks: r.mismatchedChunks,
        firstMismatch: r.firstMismatch,
      };
      if (!this.jsonEnabled()) {
        process.stderr.write(
          `copied ${formatSize(length)} in ${seconds.toFixed(2)} s (${formatSize(result.bytesPerSecond)}/s), ` +
            `${formatSize(r.zeroBytes)} as write-zeroes${flags.verify ? `, verified: ${r.mismatchedChunks ? 'MISMATCH' : 'identical'}` : ''}\n`,
        );
      }
      if (r.mismatchedChunks) {
        throw new StorError(
          `verification failed: ${r.mismatchedChunks} chunk(s) differ, the first at byte ${r.firstMismatch}`,
          { exitCode: EXIT.MISMATCH, details: result },
        );
      }
      return result;
    } finally {
      await dst?.close();
      await src.close();
    }
  }
}

/** The progress line: what is done, of what, and the copy's rate. */
function progressText(p: { copied: number; verified: number }, total: number, verify: boolean, t0: number): string {
  const done = p.verified > 0 ? p.verified : p.copied;
  const s = (performance.now() - t0) / 1000;
  return (
    `${p.verified > 0 ? 'verifying' : 'copying'} ${formatSize(done)} / ${formatSize(total)} ` +
    `(${total ? Math.floor((done / total) * 100) : 100}%)  ${formatSize(Math.round(p.copied / Math.max(s, 0.001)))}/s${verify && !p.verified ? '  then verify' : ''}`
  );
}

/** For a message about an interrupted copy: how far it got. */
function howFar(p: { copied: number; verified: number }, total: number): string {
  const pct = (n: number): string => `${total ? Math.floor((n / total) * 100) : 100}%`;
  if (p.verified > 0)
    return `while verifying, after copying all ${formatSize(total)} and verifying ${formatSize(p.verified)} (${pct(p.verified)})`;
  return `after copying ${formatSize(p.copied)} of ${formatSize(total)} (${pct(p.copied)}, ${p.copied} bytes)`;
}
