// The CLI contract of `stor serve`: bad flags are one line + hint and exit 2; SIGTERM drains,
// removes the socket and exits 0; a live socket is never stolen.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';
import { startStor } from '../helpers/servers.js';

const cli = suite('stor serve CLI');
const dir = mkdtempSync(join(tmpdir(), 'stor-cli-'));
cli.after(() => rmSync(dir, { recursive: true, force: true }));

function stor(args: string[]) {
  return spawnSync(process.execPath, [STOR_BIN, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, NO_COLOR: '1' },
  });
}

const badFlags: Array<[string[], RegExp]> = [
  [['--backend', 'disk:1G'], /--backend.*not a backend/],
  [['--backend', 'mem:12Q'], /--backend.*not a size/],
  [['--backend', 'file:/nonexistent/x.img'], /cannot open backend/],
  [['--mode', 'turbo'], /--mode/],
  [['--queues', '0'], /--queues|queues/],
  [['--queue-size', '100'], /--queue-size.*power of 2/],
  [['--block-size', '1024'], /--block-size/],
  [['--serial', 'x'.repeat(21)], /--serial.*20 bytes/],
  [['--bogus'], /bogus/],
];

for (const [args, re] of badFlags) {
  cli(`bad input ${args.join(' ')} -> one-line error naming it, no stack trace`, () => {
    const r = stor(['serve', '--socket', join(dir, 'bad.sock'), ...args]);
    const expected = args[0] === '--backend' && args[1].startsWith('file:') ? 1 : 2;
    assert.is(r.status, expected, `exit code; stderr: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.ok(lines.length <= 2, `at most an error line and a hint line, got:\n${r.stderr}`);
    assert.match(lines[0], /^stor: /);
    assert.match(r.stderr, re);
    assert.not.match(r.stderr, /\bat .*\.js:\d+/, 'no stack trace');
    assert.not.ok(existsSync(join(dir, 'bad.sock')), 'no socket left behind');
  });
}

cli('--json error output is one JSON object with code and message', () => {
  const r = stor(['serve', '--socket', join(dir, 'bad.sock'), '--backend', 'disk:1G', '--json']);
  assert.is(r.status, 2);
  const obj = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.is(obj.error.code, 2);
  assert.match(obj.error.message, /--backend/);
});

cli('SIGTERM drains, removes the socket and exits 0; --json prints ready and stopped lines', async () => {
  const socket = join(dir, 'term.sock');
  const s = await startStor({ backend: { kind: 'mem', size: 1 << 24 }, socket });
  assert.ok(existsSync(socket));
  const ready = JSON.parse(
    s
      .output()
      .split('\n')
      .find((l) => l.includes('"event":"ready"'))!,
  );
  assert.is(ready.capacity, 1 << 24);
  assert.is(ready.socket, socket);
  const code = await s.stop();
  assert.is(code, 0);
  assert.not.ok(existsSync(socket), 'socket removed');
  assert.match(s.output(), /"event":"stopped"/);
});

cli('a second server on a live socket is refused and the first keeps its socket', async () => {
  const socket = join(dir, 'live.sock');
  const s = await startStor({ backend: { kind: 'null', size: 1 << 20 }, socket });
  try {
    const r = stor(['serve', '--socket', socket, '--backend', 'null:1M']);
    assert.is(r.status, 1);
    assert.match(r.stderr, /in use/);
    assert.ok(existsSync(socket));
  } finally {
    await s.stop();
  }
});

cli('a stale socket file (no listener) is replaced', async () => {
  const socket = join(dir, 'stale.sock');
  const first = await startStor({ backend: { kind: 'null', size: 1 << 20 }, socket });
  first.proc.kill('SIGKILL');
  await new Promise((r) => first.proc.once('exit', r));
  assert.ok(existsSync(socket), 'SIGKILL leaves the socket file');
  const second = await startStor({ backend: { kind: 'null', size: 1 << 20 }, socket });
  assert.is(await second.stop(), 0);
});

cli(
  'the server launcher reports a server that exits before ready with its own reason (not an empty output)',
  async () => {
    // 'exit' may come before the child's pipes are drained: the launcher waits for them
    for (let i = 0; i < 5; i++) {
      const err = await startStor({ backend: { kind: 'file', path: '/nonexistent-dir/disk.img' } }).then(
        () => undefined,
        (e: Error) => e,
      );
      assert.ok(err, 'a server on a missing file must not become ready');
      assert.match(err!.message, /exited \(1\) before ready; output:\n.*cannot open backend/s, err!.message);
    }
  },
);

cli.run();
