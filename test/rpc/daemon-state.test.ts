// `stor daemon --state FILE` (#14 point 4): SPDK's rpc.py creates bdevs and controllers, the daemon is
// killed with SIGKILL (no chance to save anything then), and a daemon started again with the same
// --state serves the same controllers on the same sockets before its RPC socket answers: stor's client
// reads back data written before the kill on a file bdev, blkio-info opens the others, the uuids are
// the same, and a delete made before a later kill stays deleted. A state file that is not one, or
// cannot be read, stops the daemon with one line and exit 1 — it never starts empty — and a replay
// that fails leaves the file as it was.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';
import { runBounded, type RunResult } from '../helpers/run.js';
import { startStorDaemon, type StorDaemon } from '../../tools/servers.js';
import { requireSpdk } from '../../tools/spdk.js';
import { blkioInfo, describe, ok } from '../peers/blkio.js';

const t = suite('rpc: stor daemon --state brings every device back after SIGKILL');
const dir = mkdtempSync(join(tmpdir(), 'stor-state-'));
const rpcSocket = join(dir, 'rpc.sock');
const socketDir = join(dir, 'v');
const state = join(dir, 'state.json');
const img = join(dir, 'disk.img');
mkdirSync(socketDir);
let daemon: StorDaemon | undefined;

t.after(async () => {
  await daemon?.stop(5000);
  rmSync(dir, { recursive: true, force: true });
});

const say = (r: RunResult): string => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
async function rpcJson(...args: string[]): Promise<unknown> {
  const r = await runBounded('python3', [requireSpdk().rpc, '-s', rpcSocket, ...args], 30_000);
  assert.is(r.code, 0, say(r));
  try {
    return JSON.parse(r.stdout);
  } catch {
    return r.stdout.trim();
  }
}
const stor = (...args: string[]): Promise<RunResult> => runBounded(process.execPath, [STOR_BIN, ...args], 30_000);

/** SIGKILL: nothing runs in the daemon after it, so whatever is restored was on disk before. */
async function kill(d: StorDaemon): Promise<void> {
  const exited = new Promise((r) => d.proc.once('exit', r));
  d.proc.kill('SIGKILL');
  await exited;
}

const methodsIn = (file: string): string[] =>
  (JSON.parse(readFileSync(file, 'utf8')) as { subsystems: Array<{ config: Array<{ method: string }> }> }).subsystems
    .flatMap((s) => s.config)
    .map((c) => c.method);

t(
  'bdevs and controllers survive SIGKILL: the same sockets serve, data written before the kill reads back',
  async () => {
    daemon = await startStorDaemon({ rpcSocket, socketDir, state });
    assert.ok(existsSync(state), 'a first start creates the state file');
    assert.equal(methodsIn(state), []);

    writeFileSync(img, Buffer.alloc(4 << 20));
    assert.is(await rpcJson('bdev_aio_create', img, 'Aio0', '512'), 'Aio0');
    assert.is(await rpcJson('bdev_null_create', 'Null0', '16', '4096'), 'Null0');
    assert.is(await rpcJson('bdev_malloc_create', '-b', 'Malloc0', '8', '512'), 'Malloc0');
    await rpcJson('vhost_create_blk_controller', 'va', 'Aio0');
    await rpcJson('vhost_create_blk_controller', 'vn', 'Null0');
    await rpcJson('vhost_create_blk_controller', 'vm', 'Malloc0');
    // every successful change is on disk before its reply
    assert.equal(methodsIn(state), [
      'bdev_aio_create',
      'bdev_null_create',
      'bdev_malloc_create',
      'vhost_create_blk_controller',
      'vhost_create_blk_controller',
      'vhost_create_blk_controller',
    ]);
    const pattern = Buffer.alloc(64 << 10);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
    const src = join(dir, 'pattern.bin');
    writeFileSync(src, pattern);
    let r = await stor('write', `vhost-user:${join(socketDir, 'va')}`, '-i', src, '--offset', '1M');
    assert.is(r.code, 0, say(r));
    const uuids = ((await rpcJson('bdev_get_bdevs')) as Array<{ name: string; uuid: string }>).map((b) => [
      b.name,
      b.uuid,
    ]);

    await kill(daemon);
    assert.ok(existsSync(join(socketDir, 'va')), 'SIGKILL left the socket files behind');
    daemon = await startStorDaemon({ rpcSocket, socketDir, state });
    // ready is printed after the RPC socket listens, and the restore happens before that
    assert.equal(daemon.ready.bdevs, ['Aio0', 'Null0', 'Malloc0']);
    assert.equal(
      (daemon.ready.controllers as Array<{ name: string }>).map((c) => c.name),
      ['va', 'vn', 'vm'],
    );
    assert.equal(
      ((await rpcJson('bdev_get_bdevs')) as Array<{ name: string; uuid: string }>).map((b) => [b.name, b.uuid]),
      uuids,
    );
    const back = join(dir, 'back.bin');
    r = await stor('read', `vhost-user:${join(socketDir, 'va')}`, '--offset', '1M', '--length', '64k', '-o', back);
    assert.is(r.code, 0, say(r));
    assert.ok(
      readFileSync(back).equals(pattern),
      'the data written before SIGKILL reads back through the restored controller',
    );
    for (const [c, size] of [
      ['vn', 16 << 20],
      ['vm', 8 << 20],
    ] as const) {
      const info = await blkioInfo(join(socketDir, c), ['capacity']);
      assert.ok(ok(info.result), describe(info.result));
      assert.is(Number(info.values.capacity), size);
    }

    // a delete is persisted too: after the next SIGKILL, vm and Malloc0 stay gone
    await rpcJson('vhost_delete_controller', 'vm');
    await rpcJson('bdev_malloc_delete', 'Malloc0');
    await kill(daemon);
    daemon = await startStorDaemon({ rpcSocket, socketDir, state });
    assert.equal(daemon.ready.bdevs, ['Aio0', 'Null0']);
    assert.equal(
      ((await rpcJson('vhost_get_controllers')) as Array<{ ctrlr: string }>).map((c) => c.ctrlr),
      ['va', 'vn'],
    );
    // a clean stop keeps the state as well (the file is the configuration, not a crash log)
    await daemon.stop(5000);
    daemon = await startStorDaemon({ rpcSocket, socketDir, state });
    assert.equal(daemon.ready.bdevs, ['Aio0', 'Null0']);
    await daemon.stop(5000);
    daemon = undefined;
  },
);

t(
  'a corrupt or unreadable state file: one line, exit 1, no socket; a failed replay leaves the file as it was',
  async () => {
    const other = join(dir, 'r2.sock');
    const start = (file: string): Promise<RunResult> => stor('daemon', '-r', other, '-S', socketDir, '--state', file);
    const corrupt = join(dir, 'corrupt.json');
    for (const text of ['{"subsystems": [{"subsystem": "bdev", "con', '', '[]', '{"subsystems": 5}']) {
      writeFileSync(corrupt, text);
      const r = await start(corrupt);
      assert.is(r.code, 1, say(r));
      assert.match(r.stderr, /^stor: --state .*corrupt\.json: not a stor state file \(/, say(r));
      assert.is(readFileSync(corrupt, 'utf8'), text, 'the corrupt file is left for the user');
      assert.not.ok(existsSync(other), 'no RPC socket left behind');
    }
    // a directory cannot be read as a file
    const unreadable = join(dir, 'a-directory');
    mkdirSync(unreadable);
    let r = await start(unreadable);
    assert.is(r.code, 1, say(r));
    assert.match(r.stderr, /^stor: --state .*a-directory: cannot read it: EISDIR/, say(r));

    // a well-formed state whose aio file has gone: the replay fails, and the file is not overwritten
    const gone = join(dir, 'gone.json');
    const text = JSON.stringify({
      subsystems: [
        {
          subsystem: 'bdev',
          config: [
            { method: 'bdev_null_create', params: { name: 'N', num_blocks: 8, block_size: 512 } },
            { method: 'bdev_aio_create', params: { name: 'A', filename: join(dir, 'absent.img') } },
          ],
        },
        { subsystem: 'vhost_blk', config: [] },
      ],
    });
    writeFileSync(gone, text);
    r = await start(gone);
    assert.is(r.code, 1, say(r));
    assert.match(
      r.stderr,
      /^stor: --state .*gone\.json: load_config: bdev_aio_create: No such file or directory/m,
      say(r),
    );
    assert.is(readFileSync(gone, 'utf8'), text, 'a failed replay does not overwrite the state');
    assert.not.ok(existsSync(other), 'no RPC socket left behind');
  },
);

t.run();
