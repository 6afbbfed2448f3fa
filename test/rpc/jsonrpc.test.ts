// The JSON-RPC plumbing on its own, no SPDK: the stream decoder (values in pieces, several per read,
// brackets inside strings, garbage, the size bound) and the client's failures (no server, a server
// that never answers, a server that hangs up mid-call) — each a clear error within its deadline.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonRpcClient, JsonStreamDecoder, JsonStreamError, RpcTransportError } from '../../src/lib/rpc/jsonrpc.js';
import { parseParamWord } from '../../src/commands/rpc.js';

const t = suite('rpc: JSON stream decoder and client');
const dir = mkdtempSync(join(tmpdir(), 'stor-jsonrpc-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));

t('a value split into single bytes comes out once, whole, when its last byte arrives', () => {
  const text = JSON.stringify({ jsonrpc: '2.0', id: 7, result: { s: 'a "}" and a \\ and ] and ü', n: [1, [2, {}]] } });
  const d = new JsonStreamDecoder();
  const bytes = Buffer.from(text + '\n');
  const out: unknown[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const got = d.push(bytes.subarray(i, i + 1));
    if (i < bytes.length - 2) assert.is(got.length, 0, `value reported early at byte ${i}`);
    out.push(...got);
  }
  assert.equal(out, [JSON.parse(text)]);
  assert.is(d.pending, 0);
});

t('several values in one read, indented or compact, come out in order; a trailing half waits', () => {
  const d = new JsonStreamDecoder();
  const a = JSON.stringify({ id: 1 }, null, 2);
  const b = JSON.stringify([{ id: 2 }, { id: 3 }]);
  const c = JSON.stringify({ id: 4 });
  const got = d.push(Buffer.from(`${a}\n${b}  ${c.slice(0, 3)}`));
  assert.equal(got, [{ id: 1 }, [{ id: 2 }, { id: 3 }]]);
  assert.equal(d.push(Buffer.from(c.slice(3))), [{ id: 4 }]);
});

t('top-level scalars are values, cut where SPDK cuts them: a number at the end of a read is complete', () => {
  const d = new JsonStreamDecoder();
  assert.equal(d.push(Buffer.from('5 "a{\\"" -1.5e3 true')), [5, 'a{"', -1500, true]);
  assert.equal(d.push(Buffer.from('01 nu')), [0, 1], 'a leading zero ends a number; a literal waits');
  assert.equal(d.push(Buffer.from('ll 12')), [null, 12]);
  assert.equal(d.push(Buffer.from('34{"id":1}')), [34, { id: 1 }]);
  assert.equal(d.push(Buffer.from('1.')), [], 'a number that cannot end yet waits');
  assert.equal(d.push(Buffer.from('5e+2 ')), [150]);
  assert.is(d.pending, 0);
});

t('garbage, a bad literal or number, and a bad escape are syntax errors; a value over the bound is too-large', () => {
  for (const text of ['hello', 'truex', '5}', '+1', '1. ', '"\\q"'])
    assert.throws(
      () => new JsonStreamDecoder().push(Buffer.from(text)),
      (e: unknown) => e instanceof JsonStreamError && e.kind === 'syntax',
      text,
    );
  assert.throws(
    () => new JsonStreamDecoder().push(Buffer.from('{"a":}')),
    (e: unknown) => e instanceof JsonStreamError && e.kind === 'syntax',
  );
  const d = new JsonStreamDecoder(1024);
  d.push(Buffer.from('{"pad":"'));
  assert.throws(
    () => d.push(Buffer.alloc(2000, 0x61)),
    (e: unknown) => e instanceof JsonStreamError && e.kind === 'too-large',
  );
});

t('NAME=VALUE: JSON values as JSON, everything else as a string', () => {
  assert.equal(parseParamWord('num_blocks=8192'), ['num_blocks', 8192]);
  assert.equal(parseParamWord('readonly=true'), ['readonly', true]);
  assert.equal(parseParamWord('x=null'), ['x', null]);
  assert.equal(parseParamWord('o={"a":[1]}'), ['o', { a: [1] }]);
  assert.equal(parseParamWord('name=Malloc0'), ['name', 'Malloc0']);
  assert.equal(parseParamWord('cpumask=0x1'), ['cpumask', '0x1']);
  assert.equal(parseParamWord('path=/a=b'), ['path', '/a=b']);
  assert.throws(() => parseParamWord('novalue'), /NAME=VALUE/);
});

function server(onConn: (s: Socket) => void): Promise<{ path: string; close: () => Promise<void> }> {
  const path = join(dir, `s${Math.random().toString(36).slice(2, 8)}.sock`);
  const conns = new Set<Socket>();
  const srv = createServer((s) => {
    conns.add(s);
    onConn(s);
  });
  return new Promise((resolve) =>
    srv.listen(path, () =>
      resolve({
        path,
        close: () =>
          new Promise((r) => {
            for (const c of conns) c.destroy();
            srv.close(() => r());
          }),
      }),
    ),
  );
}

t('no server: connect fails at once with the socket named', async () => {
  const t0 = performance.now();
  const err = await JsonRpcClient.connect(join(dir, 'absent.sock'), { timeoutMs: 5000 }).catch((e: unknown) => e);
  assert.ok(err instanceof RpcTransportError && err.kind === 'connect', String(err));
  assert.match((err as Error).message, /absent\.sock: no such socket/);
  assert.ok(performance.now() - t0 < 1000);
});

t('a server that never answers: the call fails at its deadline, not before, not long after', async () => {
  let got = '';
  const s = await server((c) => c.on('data', (d) => (got += d.toString())));
  try {
    const c = await JsonRpcClient.connect(s.path, { timeoutMs: 300 });
    const t0 = performance.now();
    const err = await c.call('spdk_get_version').catch((e: unknown) => e);
    const ms = performance.now() - t0;
    c.close();
    assert.ok(err instanceof RpcTransportError && err.kind === 'timeout', String(err));
    assert.ok(ms >= 290 && ms < 2000, `failed after ${ms} ms`);
    // every request carries an id
    const sent = JSON.parse(got);
    assert.is(sent.method, 'spdk_get_version');
    assert.type(sent.id, 'number');
  } finally {
    await s.close();
  }
});

t('replies in pieces and out of order reach their calls; a hang-up fails the rest cleanly', async () => {
  const s = await server((c) => {
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      const reqs = new JsonStreamDecoder().push(Buffer.from(buf)) as Array<{ id: number; method: string }>;
      if (reqs.length < 3) return;
      const [a, b] = reqs;
      const text =
        JSON.stringify({ jsonrpc: '2.0', id: b.id, result: 'second' }) +
        '\n' +
        JSON.stringify({ jsonrpc: '2.0', id: a.id, error: { code: -19, message: 'No such device' } }) +
        '\n';
      c.write(text.slice(0, 10));
      setTimeout(() => {
        c.write(text.slice(10));
        setTimeout(() => c.destroy(), 20);
      }, 20);
    });
  });
  try {
    const c = await JsonRpcClient.connect(s.path, { timeoutMs: 3000 });
    const [r1, r2, r3] = await Promise.allSettled([c.call('m1'), c.call('m2'), c.call('m3')]);
    assert.is(r1.status, 'rejected');
    assert.is((r1 as PromiseRejectedResult).reason.code, -19);
    assert.equal(r2, { status: 'fulfilled', value: 'second' });
    assert.is(r3.status, 'rejected');
    const e3 = (r3 as PromiseRejectedResult).reason as RpcTransportError;
    assert.is(e3.kind, 'closed');
    assert.match(e3.message, /closed the connection.*m3/);
  } finally {
    await s.close();
  }
});

t.run();
