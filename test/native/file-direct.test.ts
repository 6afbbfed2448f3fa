// The file backend with direct=on (O_DIRECT) serves requests whose buffers are not aligned as the
// kernel wants: through an aligned bounce buffer, in both directions, with back-pressure (submit
// answers BUSY, never an error) once the queue's bounce pool is exhausted. Driven in-process through
// the client engine's queue (one iovec per request), compared with what a buffered read of the image
// file sees.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native, STOR_OP, type BackendHandle, type ClientQueueHandle } from '../../src/lib/native.js';

const t = suite('file backend, direct=on: misaligned buffers go through bounce buffers');
// /var/tmp is on disk (O_DIRECT works there); /tmp may be tmpfs, which refuses O_DIRECT
const dir = mkdtempSync(join('/var/tmp', 'stor-direct-'));
const path = join(dir, 'disk.img');
const SIZE = 64 << 20;
t.after(() => rmSync(dir, { recursive: true, force: true }));

let be: BackendHandle | undefined;
let skip = '';
t.before(() => {
  writeFileSync(path, Buffer.alloc(0));
  try { be = native().bdevOpen('file', { path, create: String(SIZE), direct: 'on' }); }
  catch (e) { if ((e as { errno?: number }).errno === 22) skip = 'O_DIRECT is not supported here'; else throw e; }
});

/** A buffer whose address is `misalign` bytes past an aligned one. */
function misaligned(data: Buffer, misalign: number): Buffer {
  const b = Buffer.allocUnsafeSlow(data.length + 4096).subarray(misalign, misalign + data.length);
  data.copy(b);
  return b;
}

/** Reaps until every token in want has completed; returns token -> result. */
function drain(q: ClientQueueHandle, results: Map<number, number>, want: number): void {
  const deadline = Date.now() + 10_000;
  while (results.size < want) {
    if (Date.now() > deadline) assert.unreachable(`only ${results.size} of ${want} requests completed`);
    native().clientCommit(q);
    const r = native().clientReap(q, 1000, false);
    for (let i = 0; i < r.length; i += 2) results.set(r[i]!, r[i + 1]!);
  }
}

t('a write and a read through buffers 1 byte past alignment round-trip (they failed with EINVAL before)', () => {
  if (skip) return console.log(`  skipped: ${skip}`);
  const n = native();
  const q = n.clientQueueOpen(be!, 8);
  try {
    const data = randomBytes(24 << 10);
    const out = misaligned(data, 1);
    assert.ok(n.clientSubmit(q, STOR_OP.WRITE, 1 << 20, data.length, out, 1), 'write submitted');
    const results = new Map<number, number>();
    drain(q, results, 1);
    assert.is(results.get(1), 0, 'the misaligned write succeeds');
    assert.ok(readFileSync(path).subarray(1 << 20, (1 << 20) + data.length).equals(data), 'the image holds the data');
    const back = misaligned(Buffer.alloc(data.length), 100);
    assert.ok(n.clientSubmit(q, STOR_OP.READ, 1 << 20, data.length, back, 2), 'read submitted');
    drain(q, results, 2);
    assert.is(results.get(2), 0, 'the misaligned read succeeds');
    assert.ok(back.equals(data), 'the read copies the data out of the bounce buffer');
  } finally { n.clientQueueClose(q); }
});

t('more misaligned data in flight than the bounce pool holds: BUSY back-pressure, then every request succeeds', () => {
  if (skip) return console.log(`  skipped: ${skip}`);
  const n = native();
  const depth = 64;
  const q = n.clientQueueOpen(be!, depth);
  try {
    const chunk = 1 << 20;   // 64 x 1 MiB misaligned: far beyond the per-queue bounce budget
    const datas = Array.from({ length: depth }, () => randomBytes(chunk));
    const bufs = datas.map((d, i) => misaligned(d, 1 + (i % 511)));
    const results = new Map<number, number>();
    let busy = 0;
    let next = 0;
    const deadline = Date.now() + 20_000;
    while (next < depth) {
      if (n.clientSubmit(q, STOR_OP.WRITE, next * chunk, chunk, bufs[next]!, next + 1)) { next++; continue; }
      busy++;
      // back-pressure: commit, reap what completed, try again
      n.clientCommit(q);
      const r = n.clientReap(q, 1000, false);
      for (let i = 0; i < r.length; i += 2) results.set(r[i]!, r[i + 1]!);
      if (Date.now() > deadline) assert.unreachable(`stuck at request ${next} after ${busy} BUSY answers`);
    }
    drain(q, results, depth);
    assert.ok(busy > 0, 'the pool ran out at least once and submit said BUSY');
    for (let i = 1; i <= depth; i++) assert.is(results.get(i), 0, `write ${i}`);
    const img = readFileSync(path);
    datas.forEach((d, i) => assert.ok(img.subarray(i * chunk, (i + 1) * chunk).equals(d), `chunk ${i} on disk`));
  } finally { n.clientQueueClose(q); }
});

t.run();
