import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSize, parsePositiveSize, formatSize } from '../../src/lib/core/size.js';
import { StorError } from '../../src/lib/core/errors.js';

test('parseSize accepts bytes and binary units in every spelling', () => {
  assert.is(parseSize('4096'), 4096);
  assert.is(parseSize('4k'), 4096);
  assert.is(parseSize('4K'), 4096);
  assert.is(parseSize('4KiB'), 4096);
  assert.is(parseSize('64M'), 64 * 2 ** 20);
  assert.is(parseSize('1G'), 2 ** 30);
  assert.is(parseSize('1GiB'), 2 ** 30);
  assert.is(parseSize('512MiB'), 512 * 2 ** 20);
  assert.is(parseSize('1.5k'), 1536);
  assert.is(parseSize('2T'), 2 * 2 ** 40);
});

test('parseSize refuses garbage with a usage error (exit 2) naming the flag', () => {
  for (const bad of ['', 'abc', '1X', '-1', '1.3', '1 G B', '0x10']) {
    try {
      parseSize(bad, '--size');
      assert.unreachable(`accepted '${bad}'`);
    } catch (e) {
      assert.instance(e, StorError);
      assert.is((e as StorError).exitCode, 2);
      assert.match((e as StorError).message, '--size');
    }
  }
});

test('parsePositiveSize refuses zero', () => {
  assert.throws(() => parsePositiveSize('0', '--bs'), /greater than zero/);
});

test('formatSize renders binary units', () => {
  assert.is(formatSize(2 ** 30), '1 GiB');
  assert.is(formatSize(1536), '1.5 KiB');
  assert.is(formatSize(512), '512 B');
});

test.run();
