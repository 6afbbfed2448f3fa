// The fault-injection filter (native/bdev/fault.c), driven in-process through the client engine's
// queue: delays with jitter reorder completions (and without jitter do not), errors land exactly on
// the chosen range and operations (and at about the chosen rate), a stall file holds requests until
// it is removed and then releases them in order, and bad values are refused naming the property.
// The properties are those every spec accepts (file:/img,delay-us=200,delay-jitter-us=800).
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native, STOR_OP, type BackendHandle, type ClientQueueHandle } from '../../src/lib/native.js';
import { formatSpec, parseSpec, BACKEND_KIND } from '../../src/lib/core/spec.js';
import { parseBackend } from '../../src/lib/core/target.js';
import { targetToSpec } from '../../src/lib/bdev/open.js';

const t = suite('fault injection: delay, jitter, errors, stall');
const dir = mkdtempSync(join(tmpdir(), 'stor-fault-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));

interface Done {
  token: number;
  result: number;
}

/** Commits and reaps until `want` requests have completed (in completion order), or fails after ms. */
function drain(q: ClientQueueHandle, want: number, ms = 10_000): Done[] {
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

/** Reaps for ms and returns what completed (for "nothing completes while stalled"). */
function reapFor(q: ClientQueueHandle, ms: number): Done[] {
  const n = native();
  const out: Done[] = [];
  const until = Date.now() + ms;
  while (Date.now() < until) {
    n.clientCommit(q);
    const r = n.clientReap(q, 1000, false);
    for (let i = 0; i < r.length; i += 2) out.push({ token: r[i]!, result: r[i + 1]! });
  }
  return out;
}

const inversions = (d: Done[]): number => d.filter((x, i) => i > 0 && x.token < d[i - 1]!.token).length;

function withQueue<T>(be: BackendHandle, depth: number, f: (q: ClientQueueHandle) => T): T {
  const q = native().clientQueueOpen(be, depth);
  try {
    return f(q);
  } finally {
    native().clientQueueClose(q);
  }
}

t('delay with jitter: 64 writes complete out of order, all succeed, and the data is right (file backend)', () => {
  const n = native();
  const path = join(dir, 'jitter.img');
  const be = n.bdevOpen('file', { path, create: '1M', 'delay-us': '100', 'delay-jitter-us': '3000' });
  const bufs: Buffer[] = [];
  const done = withQueue(be, 64, (q) => {
    for (let i = 1; i <= 64; i++) {
      const b = Buffer.alloc(4096, i);
      bufs.push(b);
      assert.ok(n.clientSubmit(q, STOR_OP.WRITE, i * 4096, 4096, b, i), `write ${i} submitted`);
    }
    return drain(q, 64);
  });
  n.backendClose(be);
  assert.is(done.length, 64);
  assert.ok(
    done.every((d) => d.result === 0),
    'every write succeeded',
  );
  assert.ok(inversions(done) > 0, `completions reordered (order: ${done.map((d) => d.token).join(' ')})`);
  const img = readFileSync(path);
  for (let i = 1; i <= 64; i++) assert.ok(img.subarray(i * 4096, (i + 1) * 4096).equals(bufs[i - 1]!), `block ${i}`);
});

t('a delay without jitter keeps submission order and holds each request at least that long', () => {
  const n = native();
  const be = n.bdevOpen('mem', { size: '1M', 'delay-us': '20000' });
  const t0 = Date.now();
  const done = withQueue(be, 16, (q) => {
    for (let i = 1; i <= 16; i++) n.clientSubmit(q, STOR_OP.READ, 0, 512, Buffer.alloc(512), i);
    return drain(q, 16);
  });
  n.backendClose(be);
  assert.ok(Date.now() - t0 >= 19, `took ${Date.now() - t0} ms, the delay is 20 ms`);
  assert.equal(
    done.map((d) => d.token),
    Array.from({ length: 16 }, (_, i) => i + 1),
  );
});

t('errors on a byte range, writes only: exactly the writes touching [64k, 68k) fail with EIO', () => {
  const n = native();
  const be = n.bdevOpen('mem', {
    size: '1M',
    'error-offset': '64k',
    'error-length': '4k',
    'error-ops': 'write',
  });
  // [offset, length, op]; the expected result follows from the range and the operation
  const reqs: [number, number, number][] = [];
  for (const off of [0, 60 << 10, 63 << 10, 64 << 10, 66 << 10, 67 << 10, 68 << 10, 100 << 10])
    for (const op of [STOR_OP.READ, STOR_OP.WRITE]) reqs.push([off, 1024, op]);
  const done = withQueue(be, 32, (q) => {
    reqs.forEach(([off, len, op], i) => n.clientSubmit(q, op, off, len, Buffer.alloc(len), i + 1));
    n.clientSubmit(q, STOR_OP.FLUSH, 0, 0, null, 100);
    return drain(q, reqs.length + 1);
  });
  n.backendClose(be);
  const byToken = new Map(done.map((d) => [d.token, d.result]));
  reqs.forEach(([off, len, op], i) => {
    const hits = off < (68 << 10) && off + len > 64 << 10;
    const want = hits && op === STOR_OP.WRITE ? -5 : 0;
    assert.is(byToken.get(i + 1), want, `${op === STOR_OP.WRITE ? 'write' : 'read'} at ${off}`);
  });
  assert.is(byToken.get(100), 0, 'a flush is not a write');
});

t('error-rate=25% fails about a quarter of 400 reads, reproducibly with fault-seed', () => {
  const n = native();
  const run = () => {
    const be = n.bdevOpen('null', { size: '1M', 'error-rate': '25%', 'fault-seed': '7' });
    const done = withQueue(be, 400, (q) => {
      for (let i = 1; i <= 400; i++) n.clientSubmit(q, STOR_OP.READ, 0, 512, Buffer.alloc(512), i);
      return drain(q, 400);
    });
    n.backendClose(be);
    return done.filter((d) => d.result === -5).map((d) => d.token);
  };
  const a = run();
  assert.ok(a.length > 60 && a.length < 140, `${a.length} of 400 failed, want about 100`);
  assert.equal(run(), a, 'the same seed fails the same requests');
});

t('stall-file: requests are held while the file exists and released in order when it goes', () => {
  const n = native();
  const stall = join(dir, 'stall');
  writeFileSync(stall, '');
  const be = n.bdevOpen('mem', { size: '1M', 'stall-file': stall });
  withQueue(be, 8, (q) => {
    for (let i = 1; i <= 8; i++) n.clientSubmit(q, STOR_OP.WRITE, i * 512, 512, Buffer.alloc(512, i), i);
    assert.equal(reapFor(q, 150), [], 'nothing completes while stalled');
    assert.is(n.clientInfo(q).inflight, 8, 'all 8 are held');
    unlinkSync(stall);
    const done = drain(q, 8, 5000);
    assert.equal(
      done.map((d) => d.token),
      [1, 2, 3, 4, 5, 6, 7, 8],
      'released in submission order',
    );
    assert.ok(
      done.every((d) => d.result === 0),
      'and all succeed',
    );
  });
  n.backendClose(be);
  assert.not.ok(existsSync(stall));
});

t('bad values are refused with the property named; unknown fault keys are not accepted', () => {
  const n = native();
  for (const [k, v] of [
    ['delay-us', 'soon'],
    ['error-rate', '2'],
    ['error-ops', 'read+erase'],
    ['error-offset', 'x'],
  ] as const) {
    try {
      n.bdevOpen('mem', { size: '1M', [k]: v });
      assert.unreachable(`${k}=${v} accepted`);
    } catch (e) {
      const err = e as Error & { errno?: number; property?: string };
      assert.is(err.errno, 22, `${k}=${v}: EINVAL`);
      assert.is(err.property, k, `${k}=${v}: the property is named (${err.message})`);
    }
  }
});

t('specs: every driver takes the fault properties, and they round-trip through parse, target and format', () => {
  const text = 'file:/img,create=1M,delay-us=200,delay-jitter-us=800,error-ops=read+write,stall-file=/run/s';
  const spec = parseSpec(text, '--backend', BACKEND_KIND);
  assert.is(spec.props['delay-jitter-us'], '800');
  assert.is(formatSpec(spec), text);
  const target = parseBackend('mem:1M,error-rate=5%', '--backend');
  assert.equal(target.faults, { 'error-rate': '5%' });
  assert.equal(targetToSpec(target).props, { size: String(1 << 20), 'error-rate': '5%' });
  assert.throws(() => parseSpec('mem:1M,delay-ms=3', '--backend', BACKEND_KIND), /unknown mem option 'delay-ms'/);
  // the client's vhost-user backend is made by the handshake, not the registry: refused, not ignored
  assert.throws(() => parseSpec('vhost-user:/run/x.sock,delay-us=5', 'target'), /applies to backends stor opens/);
});

t.run();
