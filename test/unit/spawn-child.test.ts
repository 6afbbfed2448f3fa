// tools/run.ts spawnChild, which the server launchers (tools/servers.ts) and the guest harness
// (tools/vm.ts) start their children with: a child's end is reported only once its output has been
// read, yet never waits on pipes that a grandchild keeps open, and a program that cannot be started
// is reported as such.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnChild } from '../helpers/run.js';

const t = suite('tools: spawnChild');

t('a child that writes a lot and exits at once: all of it is read before its end is reported', async () => {
  // 'exit' can come while the last 64 KiB are still in the pipes: an end reported then loses them
  for (let round = 0; round < 5; round++) {
    let bytes = 0;
    let tail = '';
    const c = spawnChild('sh', ['-c', 'head -c 1000000 /dev/zero | tr "\\0" x; echo the-end >&2; exit 7'], (s) => {
      bytes += s.length;
      tail = (tail + s).slice(-20);
    });
    const end = await c.ended;
    assert.equal({ code: end.code, signal: end.signal, error: end.error }, { code: 7, signal: null, error: undefined });
    assert.is(bytes, 1_000_000 + 'the-end\n'.length, `round ${round}`);
    assert.ok(tail.includes('the-end'), `round ${round}: the last words were read`);
  }
});

t('a grandchild that keeps the pipes open does not hold the end back (reported about 1 s after exit)', async () => {
  let out = '';
  const t0 = Date.now();
  // the background sleep inherits stdout and stderr: 'close' comes only when it ends, 10 s later
  const c = spawnChild('sh', ['-c', 'sleep 10 & echo "grandchild $!"; exit 3'], (s) => {
    out += s;
  });
  const end = await c.ended;
  const ms = Date.now() - t0;
  const grandchild = /grandchild (\d+)/.exec(out);
  if (grandchild) process.kill(Number(grandchild[1]), 'SIGKILL');
  assert.is(end.code, 3);
  assert.ok(ms < 5000, `reported after ${ms} ms`);
  assert.ok(grandchild, `the output before the exit was read: ${JSON.stringify(out)}`);
});

t('a program that does not exist is reported as not started, not as an exit', async () => {
  const c = spawnChild('/nonexistent/stor-no-such-program', [], () => {});
  const end = await c.ended;
  assert.is(end.code, null);
  assert.ok(end.error, 'an error');
  assert.match(end.error!.message, 'ENOENT');
});

t.run();
