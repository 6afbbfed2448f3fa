// Direct I/O on files through the client (issue #16, item 3): with `direct=on` the kernel wants each
// buffer at the device's buf-alignment, and a caller's buffer (a Node Buffer, a slice of one) is
// anywhere. Reads and writes of every size, from and into deliberately misaligned buffers, through the
// library and through `stor read` / `stor write`, must succeed and move the right bytes (checked in
// the image with plain file reads). The image lives on /var/tmp: tmpfs (often /tmp) has no O_DIRECT.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open } from '../../src/lib/index.js';
import { assertCleanError, assertOk, assertSame, readRange, stor } from './helpers.js';

const direct = suite('client: direct=on files (aligned bounce buffers)');

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
let dir = '';
let image = '';
let content: Buffer;

direct.before(() => {
  dir = mkdtempSync('/var/tmp/stor-direct-');
  image = join(dir, 'disk.img');
  content = randomBytes(SIZE);
  writeFileSync(image, content);
});
direct.after(() => rmSync(dir, { recursive: true, force: true }));

/** A buffer of length bytes whose address is one byte past an aligned one: never O_DIRECT-aligned. */
function misaligned(length: number): Buffer {
  return Buffer.alloc(length + 4096 * 2).subarray(4097, 4097 + length);
}

const LENGTHS = [512, 2048, 4096, 64 * 1024, MiB, 3 * MiB + 512];

direct('library: open("file:IMG,direct=on").read() of 512 B to 3 MiB returns the image bytes', async () => {
  const dev = await open(`file:${image},direct=on`);
  try {
    assert.ok(
      dev.properties.bufAlignment > 1,
      `buf-alignment ${dev.properties.bufAlignment}: direct=on should need aligned buffers`,
    );
    for (const len of LENGTHS) {
      const got = await dev.read(4096, len);
      assertSame(got, content.subarray(4096, 4096 + len), `read(4096, ${len})`);
    }
  } finally {
    await dev.close();
  }
});

direct(
  'library: readInto() and write() with misaligned buffers, every size; the image holds what was written',
  async () => {
    const dev = await open(`file:${image},direct=on`);
    try {
      let offset = MiB;
      for (const len of LENGTHS) {
        const into = misaligned(len);
        await dev.readInto(offset, into);
        assertSame(into, content.subarray(offset, offset + len), `readInto(${offset}, misaligned ${len})`);
        const data = misaligned(len);
        randomBytes(len).copy(data);
        await dev.write(offset, data);
        data.copy(content, offset);
        offset += len + 512;
      }
      await dev.flush();
    } finally {
      await dev.close();
    }
    assertSame(readRange(image, 0, SIZE), content, 'the image after the misaligned writes');
  },
);

direct('stor read file:IMG,direct=on --length 4k / 2k / 5M -o FILE -> exit 0, the image bytes', async () => {
  for (const len of ['2k', '4k', '5M']) {
    const out = join(dir, `read-${len}.bin`);
    const r = await stor(['read', `file:${image},direct=on`, '--offset', '8k', '--length', len, '-o', out]);
    assertOk(r);
    const n = len === '2k' ? 2048 : len === '4k' ? 4096 : 5 * MiB;
    assertSame(readRange(out, 0, n + 1), content.subarray(8192, 8192 + n), `stor read --length ${len}`);
  }
});

direct(
  'stor write file:IMG,direct=on --pattern 7 --length 4k and --length 3M -> exit 0, those bytes are 7, the rest unchanged',
  async () => {
    for (const [offset, len] of [
      [4096, 4096],
      [2 * MiB, 3 * MiB],
    ] as const) {
      const r = await stor([
        'write',
        `file:${image},direct=on`,
        '--pattern',
        '7',
        '--offset',
        String(offset),
        '--length',
        String(len),
      ]);
      assertOk(r);
      content.fill(7, offset, offset + len);
    }
    assertSame(readRange(image, 0, SIZE), content, 'the image after stor write');
  },
);

direct('a range past the end of a direct=on file is still exit 2, not EINVAL', async () => {
  const r = await stor([
    'read',
    `file:${image},direct=on`,
    '--offset',
    String(SIZE),
    '--length',
    '4k',
    '-o',
    join(dir, 'past.bin'),
  ]);
  assertCleanError(r, 2, /past the end/);
});

direct.run();
