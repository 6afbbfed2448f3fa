import { Args, Flags } from '@oclif/core';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StorCommand } from '../cli/command.js';
import { clientFlags, openTarget, TARGET_DESCRIPTION } from '../cli/client-flags.js';
import { usageError } from '../lib/core/errors.js';
import { parseSize, SIZE_FORMS } from '../lib/core/size.js';

const CHUNK = 4 << 20;

function parseByte(text: string): number {
  const v = /^0x[0-9a-f]{1,2}$/i.test(text) ? parseInt(text, 16) : /^\d{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(v >= 0 && v <= 255)) throw usageError('--pattern', `'${text}' is not a byte`, '0..255 or 0x00..0xff');
  return v;
}

export default class Write extends StorCommand {
  static override summary = 'Write a file or a repeated byte to a byte range of a target';
  static override examples = [
    '<%= config.bin %> write vhost-user:/tmp/stor.sock --offset 1M --input ./data.bin',
    '<%= config.bin %> write /var/tmp/disk.img --offset 0 --pattern 0xab --length 64k',
  ];
  static override args = { target: Args.string({ description: TARGET_DESCRIPTION, required: true }) };
  static override flags = {
    ...clientFlags,
    offset: Flags.string({ description: `byte offset (${SIZE_FORMS})`, default: '0' }),
    input: Flags.string({ char: 'i', description: 'file whose bytes are written', exclusive: ['pattern'] }),
    pattern: Flags.string({ description: 'a byte to repeat (0..255 or 0xNN); needs --length', exclusive: ['input'] }),
    length: Flags.string({ description: 'bytes to write (default with --input: the whole file)' }),
    'no-flush': Flags.boolean({ description: 'do not send FLUSH after the data', default: false }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Write);
    const offset = parseSize(flags.offset, '--offset');
    if (!flags.input && flags.pattern === undefined) throw usageError('--input/--pattern', 'say what to write', '--input FILE or --pattern BYTE --length N');
    let length: number;
    let inFd = -1;
    let fill = 0;
    if (flags.input) {
      try { inFd = openSync(flags.input, 'r'); } catch (e) { throw usageError('--input', (e as Error).message); }
      const size = fstatSync(inFd).size;
      length = flags.length ? parseSize(flags.length, '--length') : size;
      if (length > size) throw usageError('--length', `${length} is more than the ${size} bytes of ${flags.input}`);
    } else {
      fill = parseByte(flags.pattern!);
      if (!flags.length) throw usageError('--length', '--pattern needs a length', SIZE_FORMS);
      length = parseSize(flags.length, '--length');
    }
    const dev = await openTarget(args.target, 'target', flags);
    const hash = createHash('sha256');
    try {
      // the whole range, before the first byte is sent
      dev.checkRange('write', offset, length, true);
      const inflight: Array<Promise<void>> = [];
      for (let done = 0; done < length;) {
        const len = Math.min(CHUNK, length - done);
        const buf = Buffer.alloc(len, fill);
        if (inFd >= 0) {
          let got = 0;
          while (got < len) { const n = readSync(inFd, buf, got, len - got, done + got); if (n <= 0) break; got += n; }
        }
        hash.update(buf);
        const p = dev.write(offset + done, buf, { queue: (done / CHUNK) % dev.properties.numQueues });
        p.catch(() => undefined);   // awaited below; a failure must not also be an unhandled rejection
        inflight.push(p);
        if (inflight.length >= 4) await inflight.shift();
        done += len;
      }
      await Promise.all(inflight);
      if (!flags['no-flush']) await dev.flush();
    } finally {
      if (inFd >= 0) closeSync(inFd);
      await dev.close();
    }
    const result = { target: args.target, offset, length, sha256: hash.digest('hex'), flushed: !flags['no-flush'] };
    if (!this.jsonEnabled()) process.stderr.write(`wrote ${length} bytes at offset ${offset} (sha256 ${result.sha256})\n`);
    return result;
  }
}
