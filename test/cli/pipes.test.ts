// Pipes (issue #16): `stor write --input /dev/stdin` and `--input -` read a pipe to its end (a pipe's
// size is 0: the whole input used to be taken as 0 bytes, exit 0); `--output -` is standard output;
// `stor read ... | head -c 10` ends quietly like cat (status 141, nothing on stderr) instead of an EPIPE
// error; an input longer than the device fails with exit 2. Against `stor serve` on a mem backend.
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { STOR_BIN } from '../helpers/paths.js';
import { runBounded, type RunResult } from '../helpers/run.js';
import { assertSame, startServer, tempDir, type Server } from '../client/helpers.js';
import { createHash } from 'node:crypto';

const pipes = suite('cli: pipes');
const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
let dir = '';
let s: Server | undefined;
let data: Buffer;
let dataFile = '';

pipes.before(async () => {
  dir = tempDir('pipes');
  data = randomBytes(3 * MiB);
  dataFile = join(dir, 'data.bin');
  writeFileSync(dataFile, data);
  s = await startServer('stor', { backend: 'mem', size: SIZE });
});
pipes.after(async () => {
  await s?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const q = (x: string): string => `'${x.replace(/'/g, `'\\''`)}'`;
const STOR = `${q(process.execPath)} ${q(STOR_BIN)}`;
/** Runs a bash pipeline; the last line of stdout is "status: a b c" from PIPESTATUS. */
function sh(script: string): Promise<RunResult> {
  return runBounded('bash', ['-c', `${script}; echo "status: \${PIPESTATUS[*]}"`], 30_000, {
    env: { ...process.env, NO_COLOR: '1', STOR_DEBUG: '' },
  });
}
const statuses = (r: RunResult): number[] =>
  (/status: ([\d ]+)\s*$/.exec(r.stdout)?.[1] ?? '').trim().split(' ').map(Number);
const show = (r: RunResult): string => `stdout: ${r.stdout.slice(-500)}\nstderr: ${r.stderr.slice(-500)}`;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function readBack(offset: number, length: number): Promise<Buffer> {
  const out = join(dir, 'back.bin');
  const r = await runBounded(
    process.execPath,
    [STOR_BIN, 'read', `vhost-user:${s!.socket}`, '--offset', String(offset), '--length', String(length), '-o', out],
    30_000,
  );
  assert.is(r.code, 0, r.stderr);
  const { readFileSync } = await import('node:fs');
  return readFileSync(out);
}

for (const input of ['/dev/stdin', '-']) {
  pipes(`cat FILE | stor write SOCK --offset 1M --input ${input} -> all 3 MiB written, exit 0`, async () => {
    const r = await sh(`cat ${q(dataFile)} | ${STOR} write vhost-user:${q(s!.socket)} --offset 1M --input ${input}`);
    assert.equal(statuses(r), [0, 0], show(r));
    assert.match(r.stderr, new RegExp(`wrote ${data.length} bytes at offset ${MiB} \\(sha256 ${sha(data)}`), show(r));
    assertSame(await readBack(MiB, data.length), data, `device bytes after --input ${input}`);
  });
}

pipes('stor read SOCK --length 3M --output - | sha256sum: the data on standard output, no file named "-"', async () => {
  const r = await sh(
    `cd ${q(dir)} && ${STOR} read vhost-user:${q(s!.socket)} --offset 1M --length 3M --output - | sha256sum`,
  );
  assert.equal(statuses(r), [0, 0], show(r));
  assert.match(r.stdout, new RegExp(`^${sha(data)} `), show(r));
  const { existsSync } = await import('node:fs');
  assert.not.ok(existsSync(join(dir, '-')), 'a file named "-" was created');
});

pipes('stor read SOCK --length 8M | head -c 10: ends quietly like cat (status 141, nothing on stderr)', async () => {
  const r = await sh(`${STOR} read vhost-user:${q(s!.socket)} --length 8M | head -c 10 >/dev/null`);
  assert.equal(statuses(r), [141, 0], show(r));
  assert.is(r.stderr.trim(), '', `stderr: ${r.stderr}`);
});

pipes('a pipe longer than the device from --offset -> exit 2, naming standard input', async () => {
  const r = await sh(`head -c ${9 * MiB} /dev/zero | ${STOR} write vhost-user:${q(s!.socket)} --input -`);
  assert.equal(statuses(r), [0, 2], show(r));
  assert.match(r.stderr, /^stor: --input: standard input holds more than/, show(r));
});

pipes.run();
