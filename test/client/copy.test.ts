// stor copy between every pair of kinds (file -> socket, socket -> socket across two servers in
// both directions, socket -> file, file -> file) with --verify, the bytes checked in the image
// files on disk; and --verify failing with exit 3 when the destination drops writes (null).
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  assertOk,
  assertSame,
  describeRun,
  filledFile,
  json,
  startServer,
  stor,
  tempDir,
  type CliResult,
  type Server,
} from './helpers.js';

const copy = suite('client: stor copy between kinds, --verify');

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const FILL = 0x5a;

let dir = '';
let srcPath = '';
let src = Buffer.alloc(0);
let a: Server | undefined; // stor serve, file backend, 2 queues
let b: Server | undefined; // qemu-storage-daemon, file backend, 2 queues

copy.before(async () => {
  dir = tempDir('copy');
  // random, one all-zero MiB (copied as write-zeroes), random; 7.5 MiB: not a whole number of chunks
  src = Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(MiB), randomBytes(4 * MiB + 512 * 1024)]);
  srcPath = join(dir, 'src.bin');
  writeFileSync(srcPath, src);
  a = await startServer('stor', { backend: 'file', size: SIZE, fill: FILL, queues: 2 });
  b = await startServer('qsd', { backend: 'file', size: SIZE, fill: FILL, queues: 2 });
});

copy.after(async () => {
  await a?.stop();
  await b?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A verified copy: exit 0 and the --json result says verified with no mismatch, length as given. */
function assertVerified(r: CliResult, length: number): void {
  assertOk(r);
  const j = json(r);
  assert.is(j['verified'], true, `verified: ${describeRun(r)}`);
  assert.is(j['mismatchedChunks'], 0, `mismatchedChunks: ${describeRun(r)}`);
  assert.is(j['length'], length, `length: ${describeRun(r)}`);
}

/**
 * A verification mismatch: exit 3 by itself, no stack trace, and the error is one `stor: ` line (the
 * copy's summary line may come before it: the copy itself did complete).
 */
function assertMismatch(r: CliResult, message: RegExp): void {
  const d = describeRun(r);
  assert.ok(!r.timedOut && r.signal === null, d);
  assert.is(r.code, 3, `exit code: ${d}`);
  const errs = r.stderr.split('\n').filter((l) => l.startsWith('stor: '));
  assert.is(errs.length, 1, `want exactly one 'stor: ' line: ${d}`);
  assert.match(errs[0]!, message, d);
  assert.not.match(r.stderr, /\n\s+at .+[:(]/, `a stack trace was printed: ${d}`);
  assert.ok(r.stderr.split('\n').filter((l) => l.trim()).length <= 3, `too much on stderr: ${d}`);
}

/** The image is FILL everywhere except [off, off + bytes.length) = bytes. */
function assertImage(image: string, off: number, bytes: Buffer, what: string): void {
  const img = readFileSync(image);
  assert.is(img.length, SIZE, `${what}: image size`);
  assertSame(img.subarray(off, off + bytes.length), bytes, `${what}: copied range`);
  assertSame(img.subarray(0, off), Buffer.alloc(off, FILL), `${what}: before the range`);
  assertSame(
    img.subarray(off + bytes.length),
    Buffer.alloc(SIZE - off - bytes.length, FILL),
    `${what}: after the range`,
  );
}

const A_OFF = MiB + 512; // where the file lands on stor's image
const B_OFF = 4 * MiB + 4096; // where stor's copy of it lands on qsd's image

copy(
  'file -> socket (stor serve): --verify --queues 2 --dst-offset 1 MiB + 512 succeeds and the image holds the file there, nothing else changed',
  async () => {
    const r = await stor([
      'copy',
      srcPath,
      `vhost-user:${a!.socket}`,
      '--dst-offset',
      String(A_OFF),
      '--verify',
      '--queues',
      '2',
      '--json',
    ]);
    assertVerified(r, src.length);
    assertImage(a!.image!, A_OFF, src, 'stor image');
  },
);

copy(
  'socket -> socket (stor serve -> qemu-storage-daemon): --verify --queues 2 with --src-offset, --dst-offset and --length moves exactly that range',
  async () => {
    const r = await stor([
      'copy',
      `vhost-user:${a!.socket}`,
      `vhost-user:${b!.socket}`,
      '--src-offset',
      String(A_OFF),
      '--dst-offset',
      String(B_OFF),
      '--length',
      String(src.length),
      '--verify',
      '--queues',
      '2',
      '--chunk',
      '256k',
      '--json',
    ]);
    assertVerified(r, src.length);
    assertImage(b!.image!, B_OFF, src, 'qsd image');
    assertImage(a!.image!, A_OFF, src, 'stor image (the source) unchanged');
  },
);

copy(
  'socket -> socket (qemu-storage-daemon -> stor serve): the whole 16 MiB device with --verify, both images identical afterwards',
  async () => {
    const r = await stor([
      'copy',
      `vhost-user:${b!.socket}`,
      `vhost-user:${a!.socket}`,
      '--verify',
      '--iodepth',
      '2',
      '--json',
    ]);
    assertVerified(r, SIZE);
    assertSame(readFileSync(a!.image!), readFileSync(b!.image!), 'stor image vs qsd image');
    assertImage(a!.image!, B_OFF, src, 'stor image');
  },
);

copy(
  'socket -> file (qemu-storage-daemon -> a new file): --verify creates the file with the size of the copy and the device bytes',
  async () => {
    const out = join(dir, 'from-qsd.bin');
    assert.not.ok(existsSync(out));
    const r = await stor(['copy', `vhost-user:${b!.socket}`, out, '--verify', '--queues', '2', '--json']);
    assertVerified(r, SIZE);
    assertSame(readFileSync(out), readFileSync(b!.image!), 'new file vs qsd image');
  },
);

copy('file -> file: --verify into an existing larger file at --dst-offset 512 changes exactly that range', async () => {
  const dst = join(dir, 'dst.bin');
  filledFile(dst, SIZE, FILL);
  const r = await stor(['copy', srcPath, `file:${dst}`, '--dst-offset', '512', '--verify', '--json']);
  assertVerified(r, src.length);
  assertImage(dst, 512, src, 'destination file');
  assertSame(readFileSync(srcPath), src, 'source file unchanged');
});

copy(
  'file -> null: with non-zero data, --verify fails: exit 3, one-line "verification failed" naming the first differing byte (1 MiB: the zero chunk before it matches)',
  async () => {
    // zeros first: null reads return zeros, so the first chunk verifies; the mismatch starts at 1 MiB
    const f = join(dir, 'zero-then-random.bin');
    writeFileSync(f, Buffer.concat([Buffer.alloc(MiB), randomBytes(3 * MiB)]));
    const r = await stor(['copy', f, `null:${SIZE}`, '--verify']);
    assertMismatch(r, /^stor: verification failed: 3 chunk\(s\) differ, the first at byte 1048576$/);
    // and with --json: ONE document on stdout: the error (code 3) with the copy's result in it
    const rj = await stor(['copy', f, `null:${SIZE}`, '--verify', '--json']);
    assert.is(rj.code, 3, describeRun(rj));
    const docs = rj.stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.is(docs.length, 1, `one JSON document: ${describeRun(rj)}`);
    const result = docs[0]['result'] as Record<string, unknown> | undefined;
    const error = docs[0]['error'] as { code?: number } | undefined;
    assert.ok(result, `no result on stdout: ${describeRun(rj)}`);
    assert.is(result!['mismatchedChunks'], 3, 'mismatchedChunks');
    assert.is(result!['firstMismatch'], MiB, 'firstMismatch');
    assert.is(error?.code, 3, `error code on stdout: ${describeRun(rj)}`);
  },
);

copy(
  'file -> null: an all-zero source verifies (null reads zeros): exit 0, so a mismatch is not reported unconditionally',
  async () => {
    const f = join(dir, 'zeros.bin');
    writeFileSync(f, Buffer.alloc(2 * MiB));
    const r = await stor(['copy', f, `null:${SIZE}`, '--verify', '--json']);
    assertVerified(r, 2 * MiB);
  },
);

copy(
  'socket -> socket where the destination server drops writes (stor serve null backend): --verify fails with exit 3',
  async () => {
    const n = await startServer('stor', { backend: 'null', size: SIZE, queues: 1 });
    try {
      const r = await stor(['copy', `vhost-user:${a!.socket}`, `vhost-user:${n.socket}`, '--verify']);
      assertMismatch(r, /^stor: verification failed: \d+ chunk\(s\) differ/);
    } finally {
      await n.stop();
    }
  },
);

copy.run();
