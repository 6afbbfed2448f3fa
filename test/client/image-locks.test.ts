// Image locks, compatible with QEMU's file driver (issue #16): the file backend takes OFD locks at
// QEMU's offsets, so a second writer — another `stor serve`, `stor write`, qemu-storage-daemon — is
// refused with QEMU's wording and the holder's pid, and stor refuses images QEMU has open for writing.
// Read-only opens share writes (they take only the "consistent read" lock). locking=off opens anyway.
// Against real peers: qemu-storage-daemon and qemu-img.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open } from '../../src/lib/index.js';
import { cleanupSocket, startQsd, startStor, type RunningServer } from '../helpers/servers.js';
import { assertCleanError, assertOk, describeRun, filledFile, stor, tempDir } from './helpers.js';

const SIZE = 8 << 20;
const t = suite('image locks: QEMU-compatible OFD locks on file backends');
const dir = tempDir('locks');
const img = join(dir, 'disk.img');
let srv: RunningServer | undefined;

/** Starts a server on img and remembers it for stopping. */
async function serve(start: () => Promise<RunningServer>): Promise<RunningServer> {
  srv = await start();
  return srv;
}
async function stopServer(): Promise<void> {
  if (srv) {
    await srv.stop();
    cleanupSocket(srv.socket);
    srv = undefined;
  }
}

t.before(() => filledFile(img, SIZE, 0x5a));
t.after.each(stopServer);
t.after(async () => {
  await stopServer();
  rmSync(dir, { recursive: true, force: true });
});

/** qemu-img's exit status and stderr. */
function qemuImg(args: string[]): { code: number; stderr: string } {
  try {
    execFileSync('qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    return { code: 0, stderr: '' };
  } catch (e) {
    const x = e as { status: number; stderr: Buffer };
    return { code: x.status, stderr: String(x.stderr) };
  }
}

t("a second stor serve of an image stor serves is refused: exit 1, QEMU's words, the holder's pid", async () => {
  const first = await serve(() => startStor({ backend: { kind: 'file', path: img } }));
  const r = await stor(['serve', '--socket', join(dir, 'second.sock'), '--backend', img]);
  assertCleanError(r, 1, /Failed to get "write" lock: another process is using the image/);
  assert.match(r.stderr, new RegExp(`held by pid ${first.pid} \\(node\\)`), describeRun(r));
  assert.match(r.stderr, /locking=off/, 'the hint names the way out');
});

t(
  'stor write on a served image is refused (a JSON error with --json) and writes nothing; stor read works',
  async () => {
    await serve(() => startStor({ backend: { kind: 'file', path: img } }));
    const w = await stor(['write', img, '--pattern', '7', '--length', '4k', '--offset', '0']);
    assertCleanError(w, 1, /Failed to get shared "write" lock|Failed to get "write" lock/);
    const wj = await stor(['write', img, '--pattern', '7', '--length', '4k', '--offset', '0', '--json']);
    assert.is(wj.code, 1, describeRun(wj));
    assert.match(JSON.parse(wj.stdout).error.message, /lock/);
    assert.ok(
      readFileSync(img)
        .subarray(0, 4096)
        .every((b) => b === 0x5a),
      'the image is unchanged',
    );
    // a read-only open takes only the "consistent read" lock and shares writes
    const rd = await stor(['read', img, '--length', '4k', '--output', join(dir, 'out.bin')]);
    assertOk(rd);
  },
);

t("locking=off opens a locked image anyway (as with QEMU's file driver)", async () => {
  await serve(() => startStor({ backend: { kind: 'file', path: img } }));
  const w = await stor(['write', `file:${img},locking=off`, '--pattern', '0x5a', '--length', '4k', '--offset', '0']);
  assertOk(w);
  const bad = await stor([
    'write',
    `file:${img},locking=maybe`,
    '--pattern',
    '0x5a',
    '--length',
    '4k',
    '--offset',
    '0',
  ]);
  assertCleanError(bad, 2, /locking=maybe/);
});

t('the locks go with the server: once it stops, the image opens for writing again', async () => {
  await serve(() => startStor({ backend: { kind: 'file', path: img } }));
  await stopServer();
  assertOk(await stor(['write', img, '--pattern', '0x5a', '--length', '4k', '--offset', '0']));
});

t(
  'a closed device gives its image (and locks) back at once, not at garbage collection: open, close, open again in one process',
  async () => {
    const a = await open(img);
    await a.write(0, Buffer.alloc(4096, 0x5a));
    await a.close();
    const b = await open(img); // refused with "Failed to get "write" lock (this process ...)" while a's fd lingered
    try {
      assert.is(b.properties.readOnly, false);
    } finally {
      await b.close();
    }
    const r = await stor(['write', img, '--pattern', '0x5a', '--length', '4k', '--offset', '0']);
    assertOk(r);
  },
);

t(
  'QEMU sees stor\'s locks: qemu-img convert fails with "Failed to get shared "write" lock", qemu-storage-daemon will not export it writable',
  async () => {
    await serve(() => startStor({ backend: { kind: 'file', path: img } }));
    const c = qemuImg(['convert', '-f', 'raw', '-O', 'raw', img, join(dir, 'copy.img')]);
    assert.is(c.code, 1, c.stderr);
    assert.match(c.stderr, /Failed to get shared "write" lock/);
    let qsd: RunningServer | undefined;
    try {
      qsd = await startQsd({ backend: { kind: 'file', path: img }, startTimeoutMs: 10_000 });
      assert.unreachable('qemu-storage-daemon exported an image stor serves');
    } catch (e) {
      assert.match((e as Error).message, /Failed to get "write" lock/);
    } finally {
      if (qsd) await qsd.stop();
    }
    await stopServer();
    assert.is(
      qemuImg(['convert', '-f', 'raw', '-O', 'raw', img, join(dir, 'copy.img')]).code,
      0,
      'convert works once stor is gone',
    );
  },
);

t(
  "stor honours QEMU's locks: stor serve of an image qemu-storage-daemon exports writable is refused; read-only is not",
  async () => {
    const qsd = await serve(() => startQsd({ backend: { kind: 'file', path: img } }));
    const r = await stor(['serve', '--socket', join(dir, 'second.sock'), '--backend', img]);
    assertCleanError(r, 1, /Failed to get shared "write" lock/);
    assert.match(r.stderr, new RegExp(`held by pid ${qsd.pid} \\(qemu-storage-d`), describeRun(r));
    const w = await stor(['write', img, '--pattern', '7', '--length', '4k', '--offset', '0']);
    assertCleanError(w, 1, /Failed to get shared "write" lock/);
    assertOk(await stor(['read', img, '--length', '4k', '--output', join(dir, 'out.bin')]));
  },
);

t(
  'stor info on an image another process writes: opened read-only with a note, as qemu-img info looks at it',
  async () => {
    await serve(() => startQsd({ backend: { kind: 'file', path: img } }));
    const r = await stor(['info', img, '--json']);
    assertOk(r);
    assert.is(JSON.parse(r.stdout)['read-only'], true, describeRun(r));
    assert.is(JSON.parse(r.stdout).capacity, SIZE);
    assert.match(r.stderr, /opened read-only: .*Failed to get (shared )?"write" lock/, describeRun(r));
  },
);

t.run();
