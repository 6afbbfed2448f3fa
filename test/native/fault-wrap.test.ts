// The fault-injection filter stacked on a backend that is already open (native bdevWrap, the daemon's
// delay and error bdevs): the base is not reopened (a mem: backend's data is seen through the wrapper),
// closing the wrapper leaves the base open, and the live settings change while a queue is open —
// exactly `num` requests fail with EIO, only for the chosen operation and only from the chosen queue
// depth; "pending" holds requests until faultResume; a latency delays reads by at least that much.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native, STOR_OP, type BackendHandle, type ClientQueueHandle } from '../../src/lib/native.js';

const t = suite('fault filter stacked on an open backend (bdevWrap)');

interface Done {
  token: number;
  result: number;
}

function reapUntil(q: ClientQueueHandle, want: number, ms = 10_000): Done[] {
  const n = native();
  const out: Done[] = [];
  const deadline = Date.now() + ms;
  while (out.length < want) {
    if (Date.now() > deadline) assert.unreachable(`only ${out.length} of ${want} requests completed`);
    n.clientCommit(q);
    const r = n.clientReap(q, 1000, false);
    for (let i = 0; i < r.length; i += 2) out.push({ token: r[i]!, result: r[i + 1]! });
  }
  return out;
}

/** One request at a time: its result (0 or -errno). */
function one(q: ClientQueueHandle, op: number, offset: number, buf: Buffer, token: number): number {
  assert.ok(native().clientSubmit(q, op, offset, buf.length, buf, token), 'submitted');
  return reapUntil(q, 1)[0]!.result;
}

function withQueue<T>(be: BackendHandle, depth: number, f: (q: ClientQueueHandle) => T): T {
  const q = native().clientQueueOpen(be, depth);
  try {
    return f(q);
  } finally {
    native().clientQueueClose(q);
  }
}

t('the base is not reopened: data written before the wrap is read through it; closing the wrapper keeps the base', () => {
  const n = native();
  const base = n.bdevOpen('mem', { size: '1M' });
  withQueue(base, 4, (q) => assert.is(one(q, STOR_OP.WRITE, 8192, Buffer.alloc(4096, 0xa5), 1), 0));
  const w = n.bdevWrap(base, {});
  assert.is(n.backendInfo(w).kind, 'fault');
  assert.is(n.backendInfo(w).capacity, 1 << 20);
  const got = Buffer.alloc(4096);
  withQueue(w, 4, (q) => assert.is(one(q, STOR_OP.READ, 8192, got, 2), 0));
  assert.ok(
    got.every((b) => b === 0xa5),
    'what the base held is read through the wrapper',
  );
  n.backendClose(w);
  const again = Buffer.alloc(4096);
  withQueue(base, 4, (q) => assert.is(one(q, STOR_OP.READ, 8192, again, 3), 0));
  assert.ok(
    again.every((b) => b === 0xa5),
    'the base is still open, with its data',
  );
  n.backendClose(base);
});

t('failure: exactly num reads fail with EIO, writes are untouched, a second injection counts again', () => {
  const n = native();
  const base = n.bdevOpen('mem', { size: '1M' });
  const w = n.bdevWrap(base, {});
  n.faultInjectError(w, 'read', 'failure', 3, 0);
  assert.is(n.faultState(w).ops.read.num, 3);
  const results = withQueue(w, 8, (q) => {
    const r: number[] = [];
    for (let i = 0; i < 6; i++) r.push(one(q, STOR_OP.READ, 0, Buffer.alloc(512), i));
    r.push(one(q, STOR_OP.WRITE, 0, Buffer.alloc(512, 1), 99));
    return r;
  });
  assert.equal(results, [-5, -5, -5, 0, 0, 0, 0]);
  assert.is(n.faultState(w).ops.read.num, 0);
  n.faultInjectError(w, 'write', 'failure', 1, 0);
  const r2 = withQueue(w, 8, (q) => [
    one(q, STOR_OP.READ, 0, Buffer.alloc(512), 1),
    one(q, STOR_OP.WRITE, 0, Buffer.alloc(512), 2),
    one(q, STOR_OP.WRITE, 0, Buffer.alloc(512), 3),
  ]);
  assert.equal(r2, [0, -5, 0]);
  n.backendClose(w);
  n.backendClose(base);
});

t('queue_depth: an error is injected only while that many requests are in flight below', () => {
  const n = native();
  // null completes inline: nothing is ever in flight below it, so a threshold of 1 never fires
  const nul = n.bdevOpen('null', { size: '1M' });
  const wn = n.bdevWrap(nul, {});
  n.faultInjectError(wn, 'read', 'failure', 5, 1);
  const r = withQueue(wn, 8, (q) => [0, 1, 2].map((i) => one(q, STOR_OP.READ, 0, Buffer.alloc(512), i)));
  assert.equal(r, [0, 0, 0]);
  assert.is(n.faultState(wn).ops.read.num, 5, 'no count was taken');
  n.backendClose(wn);
  n.backendClose(nul);
  // the same threshold without the count's limit fires once two of four reads are in flight below (io_uring)
  const dir = mkdtempSync(join(tmpdir(), 'stor-fwrap-'));
  const file = n.bdevOpen('file', { path: join(dir, 'f.img'), create: '1M' });
  const wf = n.bdevWrap(file, {});
  n.faultInjectError(wf, 'read', 'failure', 1, 2);
  const done = withQueue(wf, 8, (q) => {
    for (let i = 0; i < 4; i++) assert.ok(n.clientSubmit(q, STOR_OP.READ, i * 4096, 4096, Buffer.alloc(4096), i));
    return reapUntil(q, 4);
  });
  assert.equal(
    done.filter((d) => d.result === -5).map((d) => d.token),
    [2],
    'the third read (two in flight below it) took the one error',
  );
  n.backendClose(wf);
  n.backendClose(file);
  rmSync(dir, { recursive: true, force: true });
});

t('pending: requests are held (not failed) until faultResume, then complete', () => {
  const n = native();
  const base = n.bdevOpen('mem', { size: '1M' });
  const w = n.bdevWrap(base, {});
  n.faultInjectError(w, 'write', 'pending', 2, 0);
  // a queue closes only once its requests are done: held ones must be let go even if an assertion fails
  const q = n.clientQueueOpen(w, 8);
  try {
    for (let i = 1; i <= 3; i++) assert.ok(n.clientSubmit(q, STOR_OP.WRITE, i * 4096, 4096, Buffer.alloc(4096, i), i));
    // the third is not held (the count was 2): it completes; the first two wait
    const first = reapUntil(q, 1);
    assert.equal(first, [{ token: 3, result: 0 }]);
    const until = Date.now() + 200;
    while (Date.now() < until) {
      n.clientCommit(q);
      assert.equal(Array.from(n.clientReap(q, 1000, false)), [], 'nothing completes while held');
    }
    assert.is(n.faultState(w).held, 2);
    n.faultResume(w);
    const rest = reapUntil(q, 2);
    assert.equal(rest.map((d) => d.result), [0, 0]);
    assert.equal(rest.map((d) => d.token).sort(), [1, 2]);
  } finally {
    n.faultResume(w);
    n.clientQueueClose(q);
  }
  assert.is(n.faultState(w).held, 0);
  n.backendClose(w);
  n.backendClose(base);
});

t('latency: reads take at least avg_read, writes are not delayed by it; changed while the queue is open', () => {
  const n = native();
  const base = n.bdevOpen('mem', { size: '1M' });
  const w = n.bdevWrap(base, {});
  withQueue(w, 4, (q) => {
    const time = (op: number): number => {
      const t0 = process.hrtime.bigint();
      assert.is(one(q, op, 0, Buffer.alloc(512), 1), 0);
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    n.faultSetLatency(w, 'read', 'avg', 30_000);
    n.faultSetLatency(w, 'read', 'p99', 30_000);
    assert.ok(time(STOR_OP.READ) >= 29, 'a read waits the 30 ms latency');
    n.faultSetLatency(w, 'read', 'avg', 80_000);
    n.faultSetLatency(w, 'read', 'p99', 80_000);
    assert.ok(time(STOR_OP.READ) >= 79, 'the new latency applies to the next read');
  });
  assert.is(n.faultState(w).ops.read.avgUs, 80_000);
  assert.is(n.faultState(w).ops.write.avgUs, 0);
  n.backendClose(w);
  n.backendClose(base);
});

t('a backend that is not a live wrapper is refused by the fault calls; a bad property by bdevWrap', () => {
  const n = native();
  const base = n.bdevOpen('mem', { size: '1M' });
  assert.throws(() => n.faultInjectError(base, 'read', 'failure', 1, 0), /not a fault-injection wrapper/);
  assert.throws(() => n.bdevWrap(base, { size: '1M' }), /not a fault property/);
  assert.throws(() => n.bdevWrap(base, { 'delay-us': 'x' }), /delay-us=x/);
  const w = n.bdevWrap(base, {});
  assert.throws(() => n.faultInjectError(w, 'bogus' as 'read', 'failure', 1, 0), /faultInjectError/);
  n.backendClose(w);
  n.backendClose(base);
});

t.run();
