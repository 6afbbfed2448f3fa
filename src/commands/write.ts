import { Args, Flags } from '@oclif/core';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StorCommand } from '../cli/command.js';
import { exitOnInterrupt } from '../cli/interrupt.js';
import { clientFlags, openTarget, TARGET_DESCRIPTION } from '../cli/client-flags.js';
import { StorError, usageError } from '../lib/core/errors.js';
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
    input: Flags.string({
      char: 'i',
      description: 'file whose bytes are written; - is standard input; a pipe or device is read to its end',
      exclusive: ['pattern'],
    }),
    pattern: Flags.string({ description: 'a byte to repeat (0..255 or 0xNN); needs --length', exclusive: ['input'] }),
    length: Flags.string({ description: 'bytes to write (default with --input: the whole file)' }),
    'no-flush': Flags.boolean({ description: 'do not send FLUSH after the data', default: false }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Write);
    const offset = parseSize(flags.offset, '--offset');
    if (!flags.input && flags.pattern === undefined)
      throw usageError('--input/--pattern', 'say what to write', '--input FILE or --pattern BYTE --length N');
    // length: known up front (a regular file, a pattern, --length), or undefined: read a pipe to its end
    let length: number | undefined;
    let inFd = -1;
    let stream = false;
    let fill = 0;
    if (flags.input) {
      if (flags.input === '-') inFd = 0;
      else
        try {
          inFd = openSync(flags.input, 'r');
        } catch (e) {
          throw usageError('--input', (e as Error).message);
        }
      const st = fstatSync(inFd);
      // a pipe, a socket, a terminal, a block device: its size says nothing; read it to the end
      stream = !st.isFile();
      length = flags.length ? parseSize(flags.length, '--length') : stream ? undefined : st.size;
      if (!stream && length! > st.size)
        throw usageError('--length', `${length} is more than the ${st.size} bytes of ${flags.input}`);
    } else {
      fill = parseByte(flags.pattern!);
      if (!flags.length) throw usageError('--length', '--pattern needs a length', SIZE_FORMS);
      length = parseSize(flags.length, '--length');
    }
    const inputName = flags.input === '-' ? 'standard input' : flags.input;
    const dev = await openTarget(args.target, 'target', flags);
    const hash = createHash('sha256');
    let stopInterrupt: (() => void) | undefined;
    let done = 0;
    try {
      // the whole range, before the first byte is sent (from a pipe of unknown length: the offset now,
      // each chunk before it is sent)
      dev.checkRange('write', offset, length ?? 0, true);
      let sent = 0;
      stopInterrupt = exitOnInterrupt({
        command: 'write',
        json: this.jsonEnabled(),
        progress: () => `after sending ${sent} of ${length ?? 'a stream of'} bytes (not flushed)`,
      });
      const inflight: Array<Promise<void>> = [];
      const room = dev.properties.capacity - offset;
      while (length === undefined || done < length) {
        const want = Math.min(CHUNK, (length ?? Number.MAX_SAFE_INTEGER) - done);
        let buf = Buffer.alloc(want, fill);
        if (inFd >= 0) {
          const got = await readFully(inFd, buf, stream ? null : done);
          if (got < want) {
            if (length !== undefined)
              throw await afterInflight(
                inflight,
                usageError('--input', `${inputName} ended after ${done + got} bytes, --length asked for ${length}`),
              );
            buf = buf.subarray(0, got);
          }
          if (!buf.length) break;
          if (done + buf.length > room) {
            throw await afterInflight(
              inflight,
              usageError(
                '--input',
                `${inputName} holds more than the ${room} bytes from --offset ${offset} to the end of the device ` +
                  `(the first ${done} bytes were written)`,
              ),
            );
          }
          const align = dev.properties.requestAlignment;
          if (buf.length % align) {
            throw await afterInflight(
              inflight,
              usageError(
                '--input',
                `${inputName} ended after ${done + buf.length} bytes, not a multiple of the request alignment ` +
                  `(${align}; the first ${done} bytes were written)`,
                'an input of whole blocks, or --length N',
              ),
            );
          }
        }
        hash.update(buf);
        const p = dev.write(offset + done, buf, { queue: (done / CHUNK) % dev.properties.numQueues });
        p.catch(() => undefined); // awaited below; a failure must not also be an unhandled rejection
        inflight.push(p);
        if (inflight.length >= 4) {
          await inflight.shift();
          sent += CHUNK;
        }
        done += buf.length;
        if (buf.length < want) break;
      }
      await Promise.all(inflight);
      if (!flags['no-flush']) await dev.flush();
    } finally {
      stopInterrupt?.();
      if (inFd > 0) closeSync(inFd);
      await dev.close();
    }
    length = done;
    const result = { target: args.target, offset, length, sha256: hash.digest('hex'), flushed: !flags['no-flush'] };
    if (!this.jsonEnabled())
      process.stderr.write(`wrote ${length} bytes at offset ${offset} (sha256 ${result.sha256})\n`);
    return result;
  }
}

/** Reads until buf is full or the input ends (position null: a stream); waits when a pipe has nothing yet. */
async function readFully(fd: number, buf: Buffer, position: number | null): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    let n: number;
    try {
      n = readSync(fd, buf, got, buf.length - got, position === null ? null : position + got);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      throw new StorError(`cannot read the input: ${(e as Error).message}`);
    }
    if (n <= 0) break;
    got += n;
  }
  return got;
}

/** Waits for the writes already sent to settle, so that "the first N bytes were written" is true; returns e. */
async function afterInflight(inflight: Array<Promise<void>>, e: Error): Promise<Error> {
  await Promise.allSettled(inflight);
  return e;
}
