import { Args, Flags } from '@oclif/core';
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { StorCommand } from '../cli/command.js';
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
    output: Flags.string({ char: 'o', description: 'write the data here instead of standard output' }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Read);
    const offset = parseSize(flags.offset, '--offset');
    const length = parseSize(flags.length, '--length');
    if (!flags.output && process.stdout.isTTY && !this.jsonEnabled()) {
      throw usageError('--output', 'refusing to write binary data to a terminal', '--output FILE, or pipe standard output');
    }
    const dev = await openTarget(args.target, 'target', flags, { readOnly: true });
    const hash = createHash('sha256');
    let fd = -1;
    try {
      // the whole range, before the output file is created and before the first request
      dev.checkRange('read', offset, length);
      fd = flags.output ? openSync(flags.output, 'w') : this.jsonEnabled() ? -1 : 1;
      // a few chunks in flight, written out in order
      const inflight: Array<Promise<Buffer>> = [];
      let next = 0;
      const issue = (): void => {
        if (next >= length) return;
        const len = Math.min(CHUNK, length - next);
        const p = dev.read(offset + next, len, { queue: (next / CHUNK) % dev.properties.numQueues });
        p.catch(() => undefined);   // awaited in order below; a failure there must not also be unhandled
        inflight.push(p);
        next += len;
      };
      for (let i = 0; i < 4; i++) issue();
      while (inflight.length) {
        const buf = await inflight.shift()!;
        hash.update(buf);
        if (fd >= 0) writeSync(fd, buf);
        issue();
      }
    } finally {
      if (flags.output && fd >= 0) closeSync(fd);
      await dev.close();
    }
    const result = { target: args.target, offset, length, sha256: hash.digest('hex'), output: flags.output ?? null };
    if (flags.output && !this.jsonEnabled()) process.stderr.write(`read ${length} bytes at offset ${offset} into ${flags.output} (sha256 ${result.sha256})\n`);
    return result;
  }
}
