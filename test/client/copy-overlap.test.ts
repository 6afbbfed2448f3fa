// Copying within one image (issue #16): overlapping source and destination ranges of the same image
// are refused with exit 2 before anything is written — however the image is named (file:IMG, the bare
// path, a symlink; the same vhost-user socket twice) — since parallel chunks would read bytes already
// overwritten and --verify would compare the damaged source with itself. Ranges of one image that do
// not overlap still copy and verify.
import { randomBytes } from 'node:crypto';
import { rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  assertCleanError,
  assertOk,
  assertSame,
  readRange,
  startServer,
  stor,
  tempDir,
  type Server,
} from './helpers.js';

const overlap = suite('client: copy within one image');

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
let dir = '';
let image = '';
let content: Buffer;

overlap.before(() => {
  dir = tempDir('overlap');
  image = join(dir, 'disk.img');
  content = randomBytes(SIZE);
  writeFileSync(image, content);
  symlinkSync(image, join(dir, 'link.img'));
});
overlap.after(() => rmSync(dir, { recursive: true, force: true }));

const unchanged = (): void => assertSame(readRange(image, 0, SIZE), content, 'the image after a refused copy');

overlap(
  'copy IMG IMG --dst-offset 1M --length 4M --chunk 64k --iodepth 16 --verify -> exit 2, image unchanged',
  async () => {
    const r = await stor([
      'copy',
      image,
      image,
      '--dst-offset',
      '1M',
      '--length',
      '4M',
      '--chunk',
      '64k',
      '--iodepth',
      '16',
      '--verify',
    ]);
    assertCleanError(r, 2, /same image.*overlap/);
    unchanged();
  },
);

overlap(
  'the same image spelled differently (file:IMG vs a symlink; --src-offset 2M onto 0) -> exit 2, image unchanged',
  async () => {
    assertCleanError(
      await stor(['copy', `file:${image}`, join(dir, 'link.img'), '--src-offset', '2M', '--length', '4M']),
      2,
      /same image/,
    );
    assertCleanError(await stor(['copy', image, image]), 2, /same image/);
    unchanged();
  },
);

overlap('ranges of one image that do not overlap copy and verify: 0..4M onto 8M..12M', async () => {
  assertOk(
    await stor([
      'copy',
      image,
      image,
      '--dst-offset',
      '8M',
      '--length',
      '4M',
      '--chunk',
      '64k',
      '--iodepth',
      '16',
      '--verify',
    ]),
  );
  content.copy(content, 8 * MiB, 0, 4 * MiB);
  assertSame(readRange(image, 0, SIZE), content, 'the image after copying 0..4M onto 8M..12M');
});

overlap('the same vhost-user socket as source and destination with overlapping ranges -> exit 2', async () => {
  let s: Server | undefined;
  try {
    s = await startServer('stor', { backend: 'file', size: 4 * MiB, fill: 0x5a });
    const sock = `vhost-user:${s.socket}`;
    assertCleanError(await stor(['copy', sock, s.socket, '--dst-offset', '512', '--length', '1M']), 2, /same image/);
    assert.ok(
      readRange(s.image!, 0, 4 * MiB).every((b) => b === 0x5a),
      'the served image changed',
    );
  } finally {
    await s?.stop();
  }
});

overlap.run();
