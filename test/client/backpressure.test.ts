// A full backend queue is back-pressure, never an I/O error: a file backend whose io_uring holds only
// 2 requests (ring-size=2) answers BUSY to the third, and every caller — the vhost-user export under a
// guest queue of 64 in flight, the client library, copy and bench — must hold the request, reap, and
// submit it again, with every request succeeding and the data intact.
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open } from '../../src/lib/client/device.js';
import { openBackend } from '../../src/lib/bdev/open.js';
import { native } from '../../src/lib/native.js';
import { startStor, cleanupSocket, type RunningServer } from '../helpers/servers.js';
import { tempDir } from './helpers.js';

const t = suite('back-pressure: a backend whose queue is full (file, ring-size=2) never fails a request');
const SIZE = 8 << 20;
const IOS = 64;
const BS = 4096;
let dir = '';
let server: RunningServer | undefined;

t.before(() => {
  dir = tempDir('backpressure');
});
t.after(async () => {
  await server?.stop();
  if (server) cleanupSocket(server.socket);
  rmSync(dir, { recursive: true, force: true });
});

/** 64 concurrent writes of distinct data, then 64 concurrent reads: everything succeeds and matches. */
async function writeReadAll(target: string, queueSize: number): Promise<void> {
  const dev = await open(target, { queueSize });
  try {
    const data = Array.from({ length: IOS }, () => randomBytes(BS));
    const offsets = data.map((_, i) => i * 3 * BS);
    await Promise.all(data.map((d, i) => dev.write(offsets[i], d)));
    const back = await Promise.all(offsets.map((o) => dev.read(o, BS)));
    back.forEach((b, i) => assert.ok(b.equals(data[i]), `block ${i} at ${offsets[i]} reads back what was written`));
  } finally {
    await dev.close();
  }
}

t('vhost-user export: a guest queue of 64 in flight on a 2-entry backend ring completes every request', async () => {
  const path = join(dir, 'export.img');
  server = await startStor({ backend: { kind: 'file', path, create: SIZE, ringSize: 2 } });
  await writeReadAll(`vhost-user:${server.socket}`, 128);
  assert.not.match(server.output(), /reqerr|failed|busy/i, 'the server logged no failed request');
});

t('client library on the backend directly: 64 in flight on a 2-entry ring', async () => {
  await writeReadAll(`file:${join(dir, 'client.img')},create=${SIZE},ring-size=2`, 128);
});

t('copy: source and destination with 2-entry rings, 16 chunks in flight, verified', async () => {
  const srcPath = join(dir, 'src.img');
  const content = randomBytes(SIZE);
  writeFileSync(srcPath, content);
  const dstPath = join(dir, 'dst.img');
  const src = openBackend({ driver: 'file', props: { path: srcPath, 'ring-size': '2' } });
  const dst = openBackend({ driver: 'file', props: { path: dstPath, create: String(SIZE), 'ring-size': '2' } });
  const job = native().copyRun(src.handle, dst.handle, {
    length: SIZE,
    chunk: 64 << 10,
    queues: 1,
    iodepth: 16,
    verify: true,
    zeroDetect: true,
  });
  const r = await job.promise;
  assert.is(r.bytesCopied, SIZE);
  assert.is(r.mismatchedChunks, 0);
  native().backendFlush(dst.handle);
  assert.ok(readFileSync(dstPath).equals(content), 'the destination file holds the source bytes');
});

t('bench: iodepth 32 on a 2-entry ring, with verify: no errors', async () => {
  const b = openBackend({
    driver: 'file',
    props: { path: join(dir, 'bench.img'), create: String(SIZE), 'ring-size': '2' },
  });
  const r = await native().benchRun(b.handle, {
    rw: 'randrw',
    bs: BS,
    iodepth: 32,
    threads: 1,
    runtimeMs: 300,
    wait: 'notify',
    verify: true,
  }).promise;
  const th = r.threads[0];
  assert.is(th.errors, 0, th.error ?? '');
  assert.is(th.verifyFailures, 0);
  assert.ok(th.readIos + th.writeIos > 100, `${th.readIos + th.writeIos} I/Os`);
});

t.run();
