// Without librbd the addon still loads and every other backend works; only opening an rbd: backend
// fails, with one line saying what to install (exit 1). The library is hidden in a private mount
// namespace (unshare -m, /dev/null bind-mounted over librbd.so.1), so the host keeps it.
import { execFileSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { STOR_BIN } from '../helpers/paths.js';
import { runBounded } from '../helpers/run.js';

/** Where the dynamic loader finds librbd.so.1 (ldconfig's cache), or undefined. */
function librbdPath(): string | undefined {
  try {
    const m = /librbd\.so\.1 \(.*\) => (\S+)/.exec(execFileSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8' }));
    return m?.[1];
  } catch {
    return undefined;
  }
}

test('without librbd.so.1: rbd: is one line naming the package, null: still opens', async () => {
  const lib = librbdPath();
  if (!lib) {
    // nothing to hide: the machine itself has no librbd, which is the case under test
    const r = await runBounded(process.execPath, [STOR_BIN, 'info', 'rbd:rbd/test'], 30_000);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /^stor: cannot open backend: rbd: librbd\.so\.1 not found: apt-get install librbd1\n$/);
    return;
  }
  const script = `mount --bind /dev/null ${lib} && "$0" ${STOR_BIN} info rbd:rbd/test; echo "rc=$?"; "$0" ${STOR_BIN} info null:1M --json >/dev/null; echo "null rc=$?"`;
  const r = await runBounded('unshare', ['-m', 'sh', '-c', script, process.execPath], 60_000, {
    env: { ...process.env, NO_COLOR: '1' },
  });
  if (r.code !== 0 && /unshare/.test(r.stderr) && !/rc=/.test(r.stdout)) {
    console.log(`  (skipped: no private mount namespace here: ${r.stderr.trim()})`);
    return;
  }
  assert.match(r.stdout, /^rc=1$/m, `${r.stdout}${r.stderr}`);
  assert.is(r.stderr, 'stor: cannot open backend: rbd: librbd.so.1 not found: apt-get install librbd1\n');
  assert.match(r.stdout, /^null rc=0$/m, 'other backends are unaffected');
});

test.run();
