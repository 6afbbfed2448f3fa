import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseBackend, parseTarget, formatTarget } from '../../src/lib/core/target.js';
import { StorError } from '../../src/lib/core/errors.js';

test('parseBackend reads null, mem and file specs with options', () => {
  assert.equal(parseBackend('null:1G'), { kind: 'null', size: 2 ** 30 });
  assert.equal(parseBackend('mem:64M'), { kind: 'mem', size: 64 * 2 ** 20 });
  assert.equal(parseBackend('file:/var/tmp/a.img,create=512M,direct=on'), {
    kind: 'file',
    path: '/var/tmp/a.img',
    create: 512 * 2 ** 20,
    direct: true,
    readonly: false,
  });
  assert.equal(parseBackend('file:/x,readonly=on'), { kind: 'file', path: '/x', direct: false, readonly: true });
});

test('parseBackend refuses bad specs with a usage error naming the flag and the accepted forms', () => {
  for (const bad of [
    'disk:1G',
    'null:',
    'mem:0',
    'mem:1000',
    'file:',
    'file:/x,create',
    'file:/x,bogus=1',
    'file:/x,direct=maybe',
    'null:1Q',
  ]) {
    try {
      parseBackend(bad, '--backend');
      assert.unreachable(`accepted ${bad}`);
    } catch (e) {
      assert.instance(e, StorError, bad);
      assert.is((e as StorError).exitCode, 2, bad);
      assert.match((e as StorError).message, /^--backend/, bad);
    }
  }
  try {
    parseBackend('disk:1G', '--backend');
  } catch (e) {
    assert.match((e as StorError).hint ?? '', 'null:SIZE');
  }
});

test('parseTarget accepts vhost-user sockets, backends and bare paths', () => {
  assert.equal(parseTarget('vhost-user:/run/x.sock'), { kind: 'vhost-user', path: '/run/x.sock' });
  assert.equal(parseTarget('/nonexistent/disk.img'), {
    kind: 'file',
    path: '/nonexistent/disk.img',
    direct: false,
    readonly: false,
  });
  assert.equal(parseTarget('null:4k'), { kind: 'null', size: 4096 });
  assert.throws(() => parseTarget('vhost-user:'), /needs a socket path/);
  assert.equal(parseTarget('relative'), { kind: 'file', path: 'relative', direct: false, readonly: false });
  assert.throws(() => parseTarget('relative:x'), /is not a target/);
});

test('formatTarget round-trips through parseTarget', () => {
  for (const s of ['vhost-user:/a.sock', 'null:4096', 'mem:1048576', 'file:/img,create=1048576,direct=on']) {
    assert.is(formatTarget(parseTarget(s)), s);
  }
});

test.run();
