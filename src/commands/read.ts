import { Args, Flags } from '@oclif/core';
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { StorCommand } from '../cli/command.js';
import { exitOnInterrupt } from '../cli/interrupt.js';
import { clientFlags, openTarget, TARGET_DESCRIPTION } from '../cli/client-flags.js';
import { usageError } from '../lib/core/errors.js';
import { parseSize, SIZE_FORMS } from '../lib/core/size.js';

const CHUNK = 4 << 20;

export default class Read extends StorCommand {
  static override summary = 'Read a byte range of a target to a file or standard output';
  static override examples = [
    '<%= config.bin %> read vhost-user:/tmp/stor.sock --offset 0 --length 1M --output /tmp/head.bin',
    '<%= config.bin %> read /var/tmp/disk.img --offset 4k --length 4k | xxd | head',
  ];
  static override args = { target: Args.string({ description: TARGET_DESCRIPTION, required: true }) };
  static override flags = {
    ...clientFlags,
    offset: Flags.string({ description: `byte offset (${SIZE_FORMS})`, default: '0' }),
    length: Flags.string({ description: 'bytes to read', required: true }),
    output: Flags.string({
      char: 'o',
      description: 'write the data here instead of standard output (- is standard output)',
    }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Read);
    const toFile = flags.output !== undefined && flags.output !== '-';
    const offset = parseSize(flags.offset, '--offset');
    const length = parseSize(flags.length, '--length');
    if (flags.output === '-' && this.jsonEnabled())
      throw usageError(
        '--output',
        '- (standard output) would mix the data with the --json document',
        '--output FILE with --json',
      );
    if (!toFile && !this.jsonEnabled() && process.stdout.isTTY) {
      throw usageError(
        '--output',
        'refusing to write binary data to a terminal',
        '--output FILE, or pipe standard output',
      );
    }
    const dev = await openTarget(args.target, 'target', flags, { readOnly: true });
    const hash = createHash('sha256');
    let fd = -1;
    let stopInterrupt: (() => void) | undefined;
    try {
      // the whole range, before the output file is created and before the first request
      dev.checkRange('read', offset, length);
      fd = toFile ? openSync(flags.output!, 'w') : flags.output === '-' || !this.jsonEnabled() ? 1 : -1;
      // a few chunks in flight, written out in order
      const inflight: Array<Promise<Buffer>> = [];
      let next = 0;
      let written = 0;
      stopInterrupt = exitOnInterrupt({
        command: 'read',
        json: this.jsonEnabled(),
        progress: () => `after reading ${written} of ${length} bytes`,
      });
      const issue = (): void => {
        if (next >= length) return;
        const len = Math.min(CHUNK, length - next);
        const p = dev.read(offset + next, len, { queue: (next / CHUNK) % dev.properties.numQueues });
        p.catch(() => undefined); // awaited in order below; a failure there must not also be unhandled
        inflight.push(p);
        next += len;
      };
      for (let i = 0; i < 4; i++) issue();
      while (inflight.length) {
        const buf = await inflight.shift()!;
        hash.update(buf);
        if (fd >= 0) await writeOut(fd, buf);
        written += buf.length;
        issue();
      }
      if (fd === 1) await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
    } finally {
      stopInterrupt?.();
      if (toFile && fd >= 0) closeSync(fd);
      await dev.close();
    }
    const result = { target: args.target, offset, length, sha256: hash.digest('hex'), output: flags.output ?? null };
    if (toFile && !this.jsonEnabled())
      process.stderr.write(`read ${length} bytes at offset ${offset} into ${flags.output} (sha256 ${result.sha256})\n`);
    return result;
  }
}

/**
 * Writes all of buf: to standard output through its stream (a pipe may be non-blocking: wait for
 * 'drain' rather than meet EAGAIN or a short write), to a file with as many writes as it takes.
 */
async function writeOut(fd: number, buf: Buffer): Promise<void> {
  if (fd === 1) {
    if (!process.stdout.write(buf)) await new Promise<void>((resolve) => process.stdout.once('drain', () => resolve()));
    return;
  }
  for (let done = 0; done < buf.length;) done += writeSync(fd, buf, done);
}
