// One condition, one exit code, whichever command meets it (issue #16): writing to a read-only target
// is exit 2 for write, copy and bench alike (it was 2, 1 and 1); and a client turned away because the
// server already has a front-end is told so in the hint, not left with "Connection reset by peer".
// Against a real `stor serve --readonly`.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ChildProcess } from 'node:child_process';
import { assertCleanError, describeRun, stor } from '../client/helpers.js';
import { cleanupSocket, startStor, type RunningServer } from '../helpers/servers.js';
import { waitForThread } from '../helpers/pty.js';

const codes = suite('cli: exit codes agree across commands');
let srv: RunningServer | undefined;

codes.before(async () => {
  srv = await startStor({ backend: { kind: 'mem', size: 16 << 20 }, readonly: true });
});
codes.after(async () => {
  await srv?.stop();
  if (srv) cleanupSocket(srv.socket);
});

codes('writing to a read-only target: write, copy and bench all exit 2 with one line', async () => {
  const sock = `vhost-user:${srv!.socket}`;
  assertCleanError(await stor(['write', sock, '--pattern', '1', '--length', '4k']), 2, /read-only/);
  assertCleanError(await stor(['copy', 'null:1M', sock]), 2, /read-only/);
  assertCleanError(
    await stor(['bench', sock, '--rw', 'randwrite', '--runtime', '200ms', '--ramp', '0s', '--modes', 'notify']),
    2,
    /read-only/,
  );
});

codes(
  'a second client while the server has a front-end: exit 1, and the hint says the server serves one at a time',
  async () => {
    let first: ChildProcess | undefined;
    const busy = stor(
      ['bench', `vhost-user:${srv!.socket}`, '--runtime', '8s', '--ramp', '0s', '--modes', 'notify'],
      30_000,
      {},
      (p) => {
        first = p;
      },
    );
    try {
      assert.ok(await waitForThread(first!.pid!, 'stor-bench', 15_000), 'the first client never started');
      const r = await stor(['info', `vhost-user:${srv!.socket}`, '--timeout', '3000']);
      assertCleanError(r, 1);
      assert.match(r.stderr, /one front-end at a time/, describeRun(r));
    } finally {
      first?.kill('SIGKILL');
      await busy;
    }
  },
);

codes.run();
