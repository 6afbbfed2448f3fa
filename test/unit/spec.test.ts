// The one spec parser and formatter (src/lib/core/spec.ts) and its typed adapters (target.ts):
// "driver:primary[,key=value...]" → { driver, props }, bare paths (relative ones too) as files or
// sockets, unknown schemes refused, and formatSpec round-tripping every spec it is given.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSpec, parseSpec } from '../../src/lib/core/spec.js';
import { parseBackend, parseTarget } from '../../src/lib/core/target.js';
import { StorError } from '../../src/lib/core/errors.js';

test("parseSpec puts the primary value under the driver's primary property", () => {
  assert.equal(parseSpec('null:1G', 't'), { driver: 'null', props: { size: '1G' } });
  assert.equal(parseSpec('mem:64M', 't'), { driver: 'mem', props: { size: '64M' } });
  assert.equal(parseSpec('file:/a.img,create=1M,direct', 't'), {
    driver: 'file',
    props: { path: '/a.img', create: '1M', direct: 'on' },
  });
  assert.equal(parseSpec('vhost-user:/run/x.sock', 't'), { driver: 'vhost-user', props: { path: '/run/x.sock' } });
});

test('a bare path is a path: relative, nested and absolute ones are files', () => {
  for (const p of ['disk.img', 'sub/dir/disk.img', './disk.img', '../x.img', '/dev/vdb', 'relative']) {
    assert.equal(parseSpec(p, 't'), { driver: 'file', props: { path: p } }, p);
  }
  assert.equal(parseTarget('disk.img'), { kind: 'file', path: 'disk.img', direct: false, readonly: false });
  assert.equal(parseTarget('sub/dir/disk.img'), {
    kind: 'file',
    path: 'sub/dir/disk.img',
    direct: false,
    readonly: false,
  });
  assert.equal(parseBackend('disk.img'), { kind: 'file', path: 'disk.img', direct: false, readonly: false });
});

test('a bare relative path that names a Unix socket is a vhost-user socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stor-spec-'));
  const cwd = process.cwd();
  const srv = createServer();
  try {
    await new Promise<void>((r) => srv.listen(join(dir, 'x.sock'), r));
    process.chdir(dir);
    assert.equal(parseTarget('x.sock'), { kind: 'vhost-user', path: 'x.sock' });
    assert.throws(() => parseBackend('x.sock'), /not a backend/);
  } finally {
    process.chdir(cwd);
    await new Promise((r) => srv.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('only an unknown scheme is refused, with a usage error naming the argument and the accepted forms', () => {
  for (const [text, re] of [
    ['foo:bar', /'foo:bar' is not a target/],
    ['disk:1G', /not a target/],
    ['', /empty/],
    ['vhost-user:', /needs a socket path/],
    ['file:', /needs a path/],
    ['null:', /needs a size/],
    ['file:/x,bogus=1', /unknown file option 'bogus'/],
    ['null:1G,path=/x', /unknown null option/],
    ['file:/x,direct=on,direct=off', /given twice/],
  ] as Array<[string, RegExp]>) {
    try {
      parseTarget(text, 'source');
      assert.unreachable(`accepted '${text}'`);
    } catch (e) {
      assert.instance(e, StorError, text);
      assert.is((e as StorError).exitCode, 2, text);
      assert.match((e as StorError).message, /^source: /, text);
      assert.match((e as StorError).message, re, text);
      assert.match((e as StorError).hint ?? '', /accepted: .*vhost-user:SOCKET/, text);
    }
  }
});

test('formatSpec round-trips, commas in paths included (",," is a literal comma)', () => {
  for (const s of [
    'null:1073741824',
    'mem:4096',
    'vhost-user:/run/a.sock',
    'file:/img,create=1048576,direct=on,readonly=on',
    'file:/a,,b.img,create=512',
  ]) {
    assert.is(formatSpec(parseSpec(s, 't')), s, s);
  }
  assert.equal(parseSpec('file:/a,,b.img', 't').props, { path: '/a,b.img' });
  assert.is(formatSpec({ driver: 'file', props: { path: '/x,y', create: '512' } }), 'file:/x,,y,create=512');
  assert.is(formatSpec({ driver: 'null', props: { size: String(1 << 20) } }), 'null:1048576');
  assert.throws(() => formatSpec({ driver: 'nbd', props: { path: '/x' } }), /unknown driver/);
  assert.throws(() => formatSpec({ driver: 'null', props: {} }), /needs size/);
});

test("file ring-size (the bdev registry's io_uring ring entries) parses, formats and is checked", () => {
  assert.equal(parseTarget('file:/x,ring-size=64'), {
    kind: 'file',
    path: '/x',
    direct: false,
    readonly: false,
    ringSize: 64,
  });
  assert.is(formatSpec(parseSpec('file:/x,ring-size=64', 't')), 'file:/x,ring-size=64');
  assert.throws(() => parseTarget('file:/x,ring-size=lots'), /ring-size needs a number/);
});

test.run();
