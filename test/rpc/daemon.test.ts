// The other way round: SPDK's own rpc.py (vendored, built by setup) drives `stor daemon` — create, get,
// delete, save_config, a restart with --config, rpc.py's load_config — and libblkio's blkio-info and
// blkio-bench use the controllers it created, one of them while others are added and removed (hotplug).
// A hostile client (garbage, truncated JSON, a huge request, id-less requests, batches) gets SPDK's
// answers or loses its own connection, and the daemon keeps serving everyone else.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';
import { runBounded, type RunResult } from '../helpers/run.js';
import { startStorDaemon, type StorDaemon } from '../../tools/servers.js';
import { requireSpdk } from '../../tools/spdk.js';
import { blkioBench, blkioInfo, describe, ok } from '../peers/blkio.js';

const t = suite('rpc: SPDK’s rpc.py drives stor daemon');
const dir = mkdtempSync(join(tmpdir(), 'stor-dmn-'));
const rpcSocket = join(dir, 'rpc.sock');
const socketDir = join(dir, 'v');
mkdirSync(socketDir);
let daemon: StorDaemon | undefined;

t.before(async () => {
  daemon = await startStorDaemon({ rpcSocket, socketDir });
});
t.after(async () => {
  await daemon?.stop(5000);
  rmSync(dir, { recursive: true, force: true });
});

async function rpcPy(...args: string[]): Promise<RunResult> {
  return runBounded('python3', [requireSpdk().rpc, '-s', rpcSocket, ...args], 30_000);
}
const say = (r: RunResult): string => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
async function rpcJson(...args: string[]): Promise<unknown> {
  const r = await rpcPy(...args);
  assert.is(r.code, 0, say(r));
  // rpc.py prints a string result bare, everything else as JSON
  try {
    return JSON.parse(r.stdout);
  } catch {
    return r.stdout.trim();
  }
}

/** One raw connection: writes the chunks (a pause between), returns what came back and whether it was closed. */
function raw(chunks: Array<string | Buffer>, waitMs = 600): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ path: rpcSocket });
    let text = '';
    let closed = false;
    s.on('data', (d) => (text += d.toString()));
    s.on('close', () => (closed = true));
    s.on('error', () => (closed = true));
    s.once('connect', async () => {
      for (const c of chunks) {
        s.write(c);
        await new Promise((r) => setTimeout(r, 30));
      }
      setTimeout(() => {
        s.destroy();
        resolve({ text, closed });
      }, waitMs);
    });
  });
}
const lines = (text: string): unknown[] =>
  text
    .split('\n')
    .filter((l) => l)
    .map((l) => JSON.parse(l));

t('rpc.py: spdk_get_version says stor; bdevs and controllers are created and listed in SPDK’s shapes', async () => {
  const v = (await rpcJson('spdk_get_version')) as { version: string; fields: { major: number } };
  assert.match(v.version, /^stor v\d+\.\d+\.\d+/);
  assert.is(await rpcJson('bdev_malloc_create', '-b', 'Malloc0', '32', '512'), 'Malloc0');
  assert.is(await rpcJson('bdev_null_create', 'Null0', '64', '4096'), 'Null0');
  const img = join(dir, 'disk.img');
  writeFileSync(img, Buffer.alloc(8 << 20));
  assert.is(await rpcJson('bdev_aio_create', img, 'Aio0', '512'), 'Aio0');
  await rpcJson('vhost_create_blk_controller', 'vm', 'Malloc0'); // rpc.py prints nothing for true
  await rpcJson('vhost_create_blk_controller', 'vn', 'Null0'); // rpc.py prints nothing for true
  assert.ok(existsSync(join(socketDir, 'vm')) && existsSync(join(socketDir, 'vn')));

  const bdevs = (await rpcJson('bdev_get_bdevs')) as Array<Record<string, unknown>>;
  assert.equal(
    bdevs.map((b) => b.name),
    ['Malloc0', 'Null0', 'Aio0'],
  );
  const m = bdevs[0];
  assert.is(m.product_name, 'Malloc disk');
  assert.is(m.block_size, 512);
  assert.is(m.num_blocks, 65536);
  assert.is(bdevs[1].num_blocks, 16384);
  assert.is(bdevs[2].num_blocks, 16384);
  const one = (await rpcJson('bdev_get_bdevs', '-b', 'Null0')) as Array<{ name: string }>;
  assert.equal(
    one.map((b) => b.name),
    ['Null0'],
  );
  const ctrls = (await rpcJson('vhost_get_controllers')) as Array<{
    ctrlr: string;
    socket: string;
    backend_specific: { block: { bdev: string; readonly: boolean } };
  }>;
  assert.equal(
    ctrls.map((c) => c.ctrlr),
    ['vm', 'vn'],
  );
  assert.is(ctrls[0].socket, join(socketDir, 'vm'));
  assert.equal(ctrls[0].backend_specific.block, { readonly: false, bdev: 'Malloc0', transport: 'vhost_user_blk' });
  const methods = (await rpcJson('rpc_get_methods')) as string[];
  for (const name of ['bdev_malloc_create', 'vhost_create_blk_controller', 'framework_get_config', 'save_config'])
    assert.ok(methods.includes(name), name);
});

t('errors carry SPDK’s codes; a bdev a controller uses is not deleted (-16)', async () => {
  const cases: Array<[string[], number]> = [
    [['bdev_malloc_create', '-b', 'Malloc0', '8', '512'], -17],
    [['bdev_get_bdevs', '-b', 'absent'], -19],
    [['bdev_null_delete', 'Malloc0'], -19],
    [['bdev_malloc_delete', 'Malloc0'], -16],
    [['vhost_create_blk_controller', 'vx', 'absent'], -32602],
    [['vhost_delete_controller', 'absent'], -32602],
    [['bdev_aio_create', join(dir, 'absent.img'), 'Aio9'], -2],
  ];
  for (const [args, code] of cases) {
    const r = await rpcPy(...args);
    assert.is(r.code, 1, say(r));
    assert.match(r.stdout + r.stderr, new RegExp(`"code": ${code}\\b`), say(r));
  }
  const r = await runBounded(process.execPath, [STOR_BIN, 'rpc', '-s', rpcSocket, 'no_such_method'], 30_000);
  assert.is(r.code, 1, say(r));
  assert.is(r.stderr.trim(), 'stor: no_such_method: Method not found (code -32601)');
  const bdevs = (await rpcJson('bdev_get_bdevs')) as Array<{ name: string }>;
  assert.ok(
    bdevs.some((b) => b.name === 'Malloc0'),
    'the refused delete left the bdev',
  );
});

t('blkio-info and blkio-bench use daemon-created controllers; hotplug leaves a running one serving', async () => {
  const info = await blkioInfo(join(socketDir, 'vm'), ['capacity', 'max-queues', 'read-only']);
  assert.ok(ok(info.result), describe(info.result));
  assert.is(Number(info.values.capacity), 32 << 20);
  assert.is(info.values['read-only'], 'false');
  // a 3 s bench on vn while another bdev and controller are created and deleted around it
  const bench = blkioBench(join(socketDir, 'vn'), { readwrite: 'randread', iodepth: 4, poll: false, runtimeS: 3 });
  await new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < 3; i++) {
    assert.is(await rpcJson('bdev_malloc_create', '-b', `Hot${i}`, '4', '512'), `Hot${i}`);
    await rpcJson('vhost_create_blk_controller', `h${i}`, `Hot${i}`); // rpc.py prints nothing for true
    const hot = await blkioInfo(join(socketDir, `h${i}`), ['capacity']);
    assert.ok(ok(hot.result), describe(hot.result));
    assert.is(Number(hot.values.capacity), 4 << 20);
    await rpcJson('vhost_delete_controller', `h${i}`); // rpc.py prints nothing for true
    assert.not.ok(existsSync(join(socketDir, `h${i}`)), 'the deleted controller’s socket is gone');
    await rpcJson('bdev_malloc_delete', `Hot${i}`); // rpc.py prints nothing for true
  }
  const b = await bench;
  assert.ok(ok(b.result), describe(b.result));
  assert.ok(b.out!.aggregate.kiops > 0, 'the bench completed I/O through the hotplug');
});

t('save_config → restart with --config restores every bdev and controller; rpc.py load_config replays it', async () => {
  const r = await rpcPy('save_config');
  assert.is(r.code, 0, say(r));
  const saved = JSON.parse(r.stdout) as { subsystems: Array<{ subsystem: string; config: Array<{ method: string }> }> };
  const methods = saved.subsystems.flatMap((s) => s.config.map((c) => c.method));
  assert.equal(methods, [
    'bdev_malloc_create',
    'bdev_null_create',
    'bdev_aio_create',
    'vhost_create_blk_controller',
    'vhost_create_blk_controller',
  ]);
  const cfg = join(dir, 'stor.json');
  writeFileSync(cfg, r.stdout);
  const before = (await rpcJson('bdev_get_bdevs')) as Array<{ name: string; uuid: string }>;
  await daemon!.stop(5000);
  assert.not.ok(existsSync(join(socketDir, 'vm')), 'stopping removed the controllers’ sockets');
  daemon = await startStorDaemon({ rpcSocket, socketDir, config: cfg });
  assert.equal(daemon.ready.bdevs, ['Malloc0', 'Null0', 'Aio0']);
  const after = (await rpcJson('bdev_get_bdevs')) as Array<{ name: string; uuid: string }>;
  assert.equal(
    after.map((b) => [b.name, b.uuid]),
    before.map((b) => [b.name, b.uuid]),
  );
  const info = await blkioInfo(join(socketDir, 'vm'), ['capacity']);
  assert.ok(ok(info.result), describe(info.result));
  assert.is(Number(info.values.capacity), 32 << 20);

  // rpc.py's own load_config (rpc_get_methods, then each call) onto an emptied daemon
  for (const c of ['vm', 'vn']) await rpcJson('vhost_delete_controller', c);
  for (const [m, b] of [
    ['bdev_malloc_delete', 'Malloc0'],
    ['bdev_null_delete', 'Null0'],
    ['bdev_aio_delete', 'Aio0'],
  ])
    await rpcJson(m, b);
  assert.equal(await rpcJson('bdev_get_bdevs'), []);
  const load = await rpcPy('load_config', '-j', cfg);
  assert.is(load.code, 0, say(load));
  assert.equal(
    ((await rpcJson('vhost_get_controllers')) as Array<{ ctrlr: string }>).map((c) => c.ctrlr),
    ['vm', 'vn'],
  );
});

t('a hostile client loses only its own connection; the daemon answers as SPDK does and keeps serving', async () => {
  // garbage: a parse error, then that connection is closed
  let r = await raw(['hello {{{']);
  assert.ok(r.closed, 'garbage closes the connection');
  assert.equal(lines(r.text), [{ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }]);
  // truncated JSON: nothing yet, the connection stays open waiting for the rest
  r = await raw(['{"jsonrpc":"2.0","method":"spdk_get_ver']);
  assert.is(r.text, '');
  assert.not.ok(r.closed, 'a truncated request is waited for, not dropped');
  // a request in pieces, and two in one write
  const get = (id: number): string => JSON.stringify({ jsonrpc: '2.0', method: 'spdk_get_version', id });
  r = await raw([get(1).slice(0, 7), get(1).slice(7) + get(2) + '\n' + get(3)]);
  assert.equal(
    lines(r.text).map((v) => (v as { id: number }).id),
    [1, 2, 3],
  );
  // a huge request: refused and dropped, before it is all buffered
  r = await raw(['{"jsonrpc":"2.0","method":"x","params":{"pad":"', Buffer.alloc(6 << 20, 0x61)], 1500);
  assert.ok(r.closed, 'a huge request closes its connection');
  assert.match(r.text, /"code":-32600/);
  // id-less: success is not answered, an error is (id null), as SPDK does
  r = await raw(['{"jsonrpc":"2.0","method":"spdk_get_version"}{"jsonrpc":"2.0","method":"nope"}' + get(9)]);
  assert.equal(lines(r.text), [
    { jsonrpc: '2.0', id: null, error: { code: -32601, message: 'Method not found' } },
    lines(r.text)[1],
  ]);
  assert.is((lines(r.text)[1] as { id: number }).id, 9);
  // batches: one array of the replies not skipped; an empty batch is -32600
  r = await raw([
    `[${get(1)},{"jsonrpc":"2.0","method":"nope","id":2},{"jsonrpc":"2.0","method":"spdk_get_version"},5]`,
    '[]',
  ]);
  const [batch, empty] = lines(r.text) as [Array<{ id: number | null; error?: { code: number } }>, unknown];
  assert.equal(
    batch.map((x) => [x.id, x.error?.code ?? 0]),
    [
      [1, 0],
      [2, -32601],
      [null, -32600],
    ],
  );
  assert.equal(empty, { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid request' } });
  // invalid requests
  r = await raw(['{"jsonrpc":"1.0","method":"spdk_get_version","id":1}{"method":5,"id":2}{"method":"x","id":{}}']);
  assert.equal(
    lines(r.text).map((v) => (v as { error: { code: number } }).error.code),
    [-32600, -32600, -32600],
  );
  // several clients at once, and the daemon still serves rpc.py and I/O
  const many = await Promise.all(Array.from({ length: 8 }, (_, i) => raw([get(100 + i)], 400)));
  many.forEach((m, i) => assert.is((lines(m.text)[0] as { id: number }).id, 100 + i));
  assert.match(((await rpcJson('spdk_get_version')) as { version: string }).version, /^stor/);
  const info = await blkioInfo(join(socketDir, 'vn'), ['capacity']);
  assert.ok(ok(info.result), describe(info.result));
  assert.ok(daemon!.proc.exitCode === null, 'the daemon is still running');
});

t('--config with an unknown method or bad JSON: one line, the daemon does not start', async () => {
  const bad = join(dir, 'bad.json');
  writeFileSync(
    bad,
    JSON.stringify({
      subsystems: [{ subsystem: 'bdev', config: [{ method: 'bdev_nvme_attach_controller', params: {} }] }],
    }),
  );
  const other = join(dir, 'r2.sock');
  let r = await runBounded(
    process.execPath,
    [STOR_BIN, 'daemon', '-r', other, '-S', socketDir, '--config', bad],
    30_000,
  );
  assert.is(r.code, 1, say(r));
  assert.match(r.stderr, /^stor: --config .*unknown method 'bdev_nvme_attach_controller'/);
  writeFileSync(bad, '{"subsystems": [');
  r = await runBounded(process.execPath, [STOR_BIN, 'daemon', '-r', other, '-S', socketDir, '--config', bad], 30_000);
  assert.is(r.code, 2, say(r));
  assert.not.ok(existsSync(other), 'no RPC socket left behind');
});

t.run();
