// Files whose size is not a whole number of 512-byte sectors (issue #16): the block layer counts
// sectors, so such a file used to be served, shown and copied 1..511 bytes short, silently, exit 0.
// stor refuses it instead (QEMU rounds up; stor says how to pad it): info, read, copy from it, copy
// onto it and serve it all fail with exit 1, one line naming the size, a `truncate -s` hint, and
// nothing is written or created.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { assertCleanError, assertOk, stor, tempDir } from './helpers.js';

const odd = suite('client: files that are not whole sectors');
const ODD = 1024 * 1024 + 424; // 1 MiB and 424 bytes
let dir = '';
let image = '';
let content: Buffer;

odd.before(() => {
  dir = tempDir('odd');
  image = join(dir, 'odd.img');
  content = randomBytes(ODD);
  writeFileSync(image, content);
});
odd.after(() => rmSync(dir, { recursive: true, force: true }));

const REFUSED = /not a multiple of 512.*424 bytes/;

odd(
  'info, read and copy from a 1 MiB + 424 B file -> exit 1 naming the size, hint says truncate -s 1049088',
  async () => {
    for (const args of [
      ['info', image],
      ['read', `file:${image}`, '--length', '4k', '-o', join(dir, 'r.bin')],
      ['copy', image, join(dir, 'copy.img')],
    ]) {
      const r = await stor(args);
      assertCleanError(r, 1, REFUSED);
      assert.match(r.stderr, /truncate -s 1049088 /);
    }
    assert.not.ok(existsSync(join(dir, 'copy.img')), 'the copy destination was created');
    assert.not.ok(existsSync(join(dir, 'r.bin')), 'the read output was created');
  },
);

odd('copy onto such a file and stor serve of it -> exit 1, the file unchanged', async () => {
  assertCleanError(await stor(['copy', 'null:1M', image]), 1, REFUSED);
  assertCleanError(
    await stor(['serve', '--socket', join(dir, 's.sock'), '--backend', `file:${image}`], 20_000),
    1,
    REFUSED,
  );
  assert.ok(readFileSync(image).equals(content), 'the odd-sized file changed');
});

odd('padded to whole sectors (the hint) it works: info shows 1049088 bytes', async () => {
  const padded = join(dir, 'padded.img');
  writeFileSync(padded, Buffer.concat([content, Buffer.alloc(1049088 - ODD)]));
  const r = await stor(['info', padded, '--json']);
  assertOk(r);
  assert.is((JSON.parse(r.stdout) as { capacity: number }).capacity, 1049088);
});

odd.run();
