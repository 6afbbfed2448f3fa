// The rbd: spec (no cluster needed): parsed into a Target with its properties checked, formatted back to
// the same text, turned into the key=value properties the C driver takes, and bad forms refused as usage
// errors (exit 2) with the accepted forms as the hint.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatSpec, parseSpec } from '../../src/lib/core/spec.js';
import { formatTarget, parseBackend, parseTarget } from '../../src/lib/core/target.js';
import { targetToSpec as backendSpec } from '../../src/lib/bdev/open.js';
import { overlappingRanges } from '../../src/lib/bdev/identity.js';
import { StorError } from '../../src/lib/core/errors.js';

test('rbd:POOL/IMAGE with every property parses, formats back and becomes the driver properties', () => {
  const text = 'rbd:rbd/disk0,conf=/etc/ceph/c,,1.conf,id=cinder,keyring=/k,create=1G,connect-timeout=5';
  assert.equal(parseSpec(text, 't').props, {
    image: 'rbd/disk0',
    conf: '/etc/ceph/c,1.conf',
    id: 'cinder',
    keyring: '/k',
    create: '1G',
    'connect-timeout': '5',
  });
  const t = parseTarget(text);
  assert.equal(t, {
    kind: 'rbd',
    image: 'rbd/disk0',
    conf: '/etc/ceph/c,1.conf',
    id: 'cinder',
    keyring: '/k',
    create: 1 << 30,
    readonly: false,
    connectTimeout: 5,
  });
  assert.is(formatTarget(t), text.replace('create=1G', `create=${1 << 30}`));
  assert.equal(parseTarget(formatTarget(t)), t, 'round trip');
  assert.equal(backendSpec(parseBackend('rbd:p/ns/img,snapshot=s1')), {
    driver: 'rbd',
    props: { image: 'p/ns/img', snapshot: 's1' },
  });
  assert.equal(backendSpec(parseBackend('rbd:p/img'), { readonly: true }).props, { image: 'p/img', readonly: 'on' });
  assert.is(formatSpec(parseSpec('rbd:p/img,ro', 't')), 'rbd:p/img,ro=on');
});

test('the same image is the same storage (copy overlap checks), another image or snapshot is not', () => {
  const a = parseTarget('rbd:rbd/x');
  assert.ok(overlappingRanges(a, 0, parseTarget('rbd:rbd/x,readonly=on'), 4096, 8192));
  assert.not.ok(overlappingRanges(a, 0, parseTarget('rbd:rbd/y'), 0, 8192));
  assert.not.ok(overlappingRanges(a, 0, parseTarget('rbd:rbd/x,snapshot=s'), 0, 8192));
});

test('bad rbd specs are usage errors naming the problem, with the accepted forms', () => {
  const cases: Array<[string, RegExp]> = [
    ['rbd:', /needs POOL\/IMAGE/],
    ['rbd:rbd', /expected POOL\/IMAGE or POOL\/NAMESPACE\/IMAGE/],
    ['rbd:/img', /expected POOL\/IMAGE/],
    ['rbd:a/b/c/d', /expected POOL\/IMAGE/],
    ['rbd:rbd/img@snap', /a snapshot is snapshot=NAME/],
    ['rbd:rbd/img,pool=x', /unknown rbd option 'pool'/],
    ['rbd:rbd/img,create', /create needs a size/],
    ['rbd:rbd/img,create=1000', /not a multiple of 512/],
    ['rbd:rbd/img,create=1G,readonly=on', /cannot be combined/],
    ['rbd:rbd/img,create=1G,snapshot=s', /cannot be combined/],
    ['rbd:rbd/img,id=client.admin', /without 'client.'/],
    ['rbd:rbd/img,conf', /conf needs a value/],
    ['rbd:rbd/img,connect-timeout=0', /expected 1..3600 seconds/],
    ['rbd:rbd/img,connect-timeout=1s', /expected 1..3600 seconds/],
  ];
  for (const [text, msg] of cases) {
    try {
      parseTarget(text);
      assert.unreachable(`${text} parsed`);
    } catch (e) {
      assert.instance(e, StorError, text);
      const err = e as StorError;
      assert.is(err.exitCode, 2, text);
      assert.match(err.message, msg, text);
      assert.match(err.hint ?? '', /rbd:POOL\/IMAGE\[,conf=PATH\]/, text);
    }
  }
});

test.run();
