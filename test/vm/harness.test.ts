// The harness itself: what the guest's script returns and writes comes back, the timeout and the
// caller's abort really kill QEMU, and a QEMU that cannot start is reported, not hung on.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { liveGuests, qemuArgs, runGuest, vmImage } from './harness.js';

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const h = suite('vm: harness');

h(
  'QEMU runs every vCPU on one TCG thread unless asked otherwise (multi-threaded TCG races with kernel text patching)',
  () => {
    const saved = process.env.STOR_VM_TCG_THREAD;
    delete process.env.STOR_VM_TCG_THREAD;
    try {
      const accel = (o: Parameters<typeof qemuArgs>[0]) => {
        const a = qemuArgs(o, '/nonexistent', vmImage());
        return a[a.indexOf('-accel') + 1];
      };
      assert.is(accel({ script: '' }), 'tcg,thread=single');
      assert.is(accel({ script: '', tcgThread: 'multi' }), 'tcg,thread=multi');
      process.env.STOR_VM_TCG_THREAD = 'multi';
      assert.is(accel({ script: '' }), 'tcg,thread=multi');
    } finally {
      if (saved === undefined) delete process.env.STOR_VM_TCG_THREAD;
      else process.env.STOR_VM_TCG_THREAD = saved;
    }
  },
);

h("the script's exit status, env, share files and results come back from the guest", async () => {
  const r = await runGuest({
    script:
      'echo "in guest: $GREETING"; cat "$STOR_VM_SHARE/input" > "$STOR_VM_RESULTS/echo"; uname -r > "$STOR_VM_RESULTS/kernel"; nproc > "$STOR_VM_RESULTS/cpus"; exit 7\n',
    env: { GREETING: "it's here" },
    files: { input: 'payload\n' },
    memoryMiB: 256,
    timeoutMs: 60_000,
  });
  try {
    assert.is(r.status, 7, `status; console:\n${r.console}`);
    assert.not.ok(r.timedOut);
    assert.match(r.console, "in guest: it's here");
    assert.is(readFileSync(join(r.resultsDir, 'echo'), 'utf8'), 'payload\n');
    // bookworm's own kernel (6.1) has no ublk or VDUSE: the guest must run the backports one.
    assert.match(readFileSync(join(r.resultsDir, 'kernel'), 'utf8'), /^(6\.(1[2-9]|[2-9]\d)|[7-9])\./);
    // one TCG thread for both vCPUs still gives the guest two CPUs (and virtio-blk two queues)
    assert.is(readFileSync(join(r.resultsDir, 'cpus'), 'utf8').trim(), '2');
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0);
});

h('a guest that outlives its timeout is killed, and its QEMU is gone', async () => {
  const started = Date.now();
  const r = await runGuest({ script: 'sleep 600\n', memoryMiB: 256, timeoutMs: 12_000 });
  try {
    assert.ok(r.timedOut, 'timedOut');
    assert.is(r.status, null, 'no status from a killed guest');
    assert.ok(Date.now() - started < 30_000, 'returned soon after the timeout');
    assert.not.ok(alive(r.pid), `QEMU ${r.pid} still alive`);
    assert.match(r.console, '[harness] timeout');
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0);
});

h('a guest whose caller aborts is killed at once, long before its timeout', async () => {
  const abort = new AbortController();
  const started = Date.now();
  const running = runGuest({ script: 'sleep 600\n', memoryMiB: 256, timeoutMs: 120_000, signal: abort.signal });
  setTimeout(() => abort.abort(), 2000);
  const r = await running;
  try {
    assert.not.ok(r.timedOut, 'not the timeout');
    assert.is(r.status, null, 'no status from a killed guest');
    assert.ok(Date.now() - started < 20_000, `returned ${Date.now() - started} ms after the start`);
    assert.not.ok(alive(r.pid), `QEMU ${r.pid} still alive`);
    assert.match(r.console, '[harness] aborted');
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0);
});

h("a vhost-user socket nobody listens on fails fast with QEMU's reason in the console", async () => {
  const sock = '/nonexistent/stor-vm-test.sock';
  assert.not.ok(existsSync(sock));
  const r = await runGuest({ script: 'exit 0\n', vhostUserBlk: [{ socket: sock }], memoryMiB: 256, timeoutMs: 30_000 });
  try {
    assert.is(r.status, null);
    assert.not.ok(r.timedOut, 'QEMU should exit by itself');
    assert.match(r.console, sock);
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0);
});

h.run();
