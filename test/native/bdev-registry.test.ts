// The C backend registry: drivers listed with their properties and help, key=value properties parsed by
// each driver (binary size suffixes, on/off), unknown keys and bad values refused with the property
// named, and every property reported by C.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../../src/lib/native.js';
import { openBackend } from '../../src/lib/bdev/open.js';
import { StorError } from '../../src/lib/core/errors.js';

const t = suite('bdev registry: drivers, properties, errors');
const dir = mkdtempSync(join(tmpdir(), 'stor-bdev-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));

t('bdevDrivers lists null, mem, file, rbd (openable) and vhost-user (created by the client), each with help', () => {
  const ds = native().bdevDrivers();
  assert.equal(ds.map((d) => d.name), ['null', 'mem', 'file', 'vhost-user', 'rbd']);
  for (const d of ds) assert.ok(d.help.length > 10 && d.properties.every((p) => p.name && p.help), d.name);
  assert.equal(ds.find((d) => d.name === 'file')!.properties.map((p) => p.name), ['path', 'create', 'direct', 'readonly', 'ring-size', 'locking']);
  assert.is(ds.find((d) => d.name === 'vhost-user')!.openable, false);
  // rbd is listed (and its properties known) without librbd: the library is loaded only at open
  assert.equal(ds.find((d) => d.name === 'rbd')!.properties.map((p) => p.name), ['image', 'conf', 'id', 'keyring', 'create', 'snapshot', 'readonly', 'connect-timeout']);
});

t('sizes take binary suffixes: k, M, G, KiB, MiB, GiB, and fractions that are whole bytes', () => {
  for (const [text, bytes] of [['4096', 4096], ['4k', 4096], ['64M', 64 << 20], ['1G', 1 << 30], ['1GiB', 1 << 30], ['512MiB', 512 << 20], ['8KiB', 8192], ['1.5k', 1536]] as const) {
    const b = native().bdevOpen('null', { size: text });
    assert.is(native().bdevProperties(b).capacity, bytes, text);
  }
});

t('C reports every property: null read-write, mem read-only', () => {
  const p = native().bdevProperties(native().bdevOpen('null', { size: '1M' }));
  assert.equal({ ...p, desc: undefined }, {
    driver: 'null', desc: undefined, capacity: 1 << 20, requestAlignment: 512, bufAlignment: 1, optimalIoAlignment: 512,
    optimalIoSize: 0, maxTransfer: 0, maxSegments: 1024, maxQueues: 64, readOnly: false, canDiscard: true,
    canWriteZeroes: true, remote: false, discardAlignment: 512, maxDiscardLength: 0, maxWriteZeroesLength: 0,
    maxMemRegions: 0, needsMemRegions: false, virtioFeatures: 0n,
  });
  const ro = native().bdevProperties(native().bdevOpen('mem', { size: '1M', readonly: 'on' }));
  assert.is(ro.readOnly, true);
  assert.is(ro.canDiscard, false);
  assert.is(ro.canWriteZeroes, false);
});

t('file: direct=on reports the O_DIRECT buffer alignment, direct=off 1', () => {
  const path = join(dir, 'd.img');
  const buffered = native().bdevProperties(native().bdevOpen('file', { path, create: '1M' }));
  assert.is(buffered.bufAlignment, 1);
  let direct;
  // read-only: the buffered handle above still holds the image's write lock until it is collected
  try { direct = native().bdevProperties(native().bdevOpen('file', { path, direct: 'on', readonly: 'on' })); }
  catch (e) { if ((e as { errno?: number }).errno === 22) return; throw e; }   // a tmpfs without O_DIRECT
  assert.ok(direct.bufAlignment >= 512 && (direct.bufAlignment & (direct.bufAlignment - 1)) === 0, `bufAlignment ${direct.bufAlignment}`);
  assert.ok(direct.requestAlignment >= 512);
});

t('unknown keys and bad values are EINVAL naming the property', () => {
  const cases: Array<[string, Record<string, string>, string, RegExp]> = [
    ['file', { path: '/x', bogus: '1' }, 'bogus', /unknown property 'bogus' \(accepted: path, create, direct, readonly, ring-size, locking\)/],
    ['file', { path: '/x', direct: 'maybe' }, 'direct', /direct=maybe: expected on or off/],
    ['null', { size: '1Q' }, 'size', /size=1Q: not a size/],
    ['mem', { size: '1G', ro: 'perhaps' }, 'ro', /ro=perhaps/],
    ['file', { path: '/x', 'ring-size': '0' }, 'ring-size', /ring-size=0/],
  ];
  for (const [driver, props, prop, msg] of cases) {
    try { native().bdevOpen(driver, props); assert.unreachable(`${driver} ${JSON.stringify(props)} accepted`); }
    catch (e) {
      const err = e as Error & { errno?: number; property?: string };
      assert.is(err.errno, 22, err.message);
      assert.is(err.property, prop, err.message);
      assert.match(err.message, msg);
    }
  }
  assert.throws(() => native().bdevOpen('disk', {}), /'disk' is not a backend driver \(accepted: null, mem, file, rbd\)/);
  assert.throws(() => native().bdevOpen('vhost-user', { path: '/x' }), /opened by the client library/);
});

t('openBackend turns a bad property into a usage error (exit 2) naming it, with the accepted forms as the hint', () => {
  try { openBackend({ driver: 'file', props: { path: '/x', nope: 'on' } }, { what: '--backend' }); assert.unreachable(); }
  catch (e) {
    assert.instance(e, StorError);
    assert.is((e as StorError).exitCode, 2);
    assert.is((e as StorError).message, "--backend: file: unknown property 'nope'");
    assert.is((e as StorError).hint, 'accepted: path, create, direct, readonly, ring-size, locking');
  }
});

t('null: reads return zeros; with read-zeroes=off they leave the buffer as it was (SPDK null bdev semantics)', async () => {
  const { open } = await import('../../src/lib/client/device.js');
  for (const [spec, expected] of [['null:1M', 0], ['null:1M,read-zeroes=off', 0xa5]] as const) {
    const dev = await open(spec);
    try {
      const buf = Buffer.alloc(4096, 0xa5);
      await dev.readInto(0, buf);
      assert.ok(buf.every((b) => b === expected), `${spec}: every byte is ${expected}`);
    } finally {
      await dev.close();
    }
  }
});

t.run();
