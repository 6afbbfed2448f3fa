// `stor rpc` and stor's client against the real SPDK target (spdk_tgt built from the vendored tarball by
// setup): stor rpc creates malloc and null bdevs and vhost-blk controllers, stor info/write/read/copy
// --verify run on SPDK's controller sockets, SPDK's errors come back with their codes as
// `stor: METHOD: message (code N)`, and a spdk_tgt killed while a call waits gives one clean line.
// One spdk_tgt for the whole file (its reactor spins a core), stopped in after().
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';
import { runBounded, type RunResult } from '../helpers/run.js';
import { cleanupDir, startSpdkTgt, type SpdkTarget } from '../../tools/servers.js';
import { SpdkClient } from '../../src/lib/rpc/spdk-client.js';

const t = suite('rpc: stor rpc and stor client against spdk_tgt');
let spdk: SpdkTarget;
const work = mkdtempSync(join(tmpdir(), 'stor-spdk-'));

t.before(async () => {
  spdk = await startSpdkTgt();
});
t.after(async () => {
  await spdk?.stop(5000);
  if (spdk) cleanupDir(spdk.dir);
  rmSync(work, { recursive: true, force: true });
});

// SPDK registers a front-end's memory table slowly when the machine is busy (seen: over 5 s), so the
// client commands get a longer control-plane timeout than their default
const SLOW = ['--timeout', '30s'];

function stor(args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return runBounded(process.execPath, [STOR_BIN, ...args], timeoutMs, { env: { ...process.env, NO_COLOR: '1' } });
}
const say = (r: RunResult): string => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
const rpc = (...args: string[]): Promise<RunResult> => stor(['rpc', '-s', spdk.rpcSocket, ...args]);

t('stor rpc spdk_get_version prints SPDK’s version object as JSON', async () => {
  const r = await rpc('spdk_get_version');
  assert.is(r.code, 0, say(r));
  const v = JSON.parse(r.stdout);
  assert.match(v.version, /^SPDK v26\.05/);
  assert.is(v.fields.major, 26);
});

t('stor rpc creates a malloc and a null bdev (NAME=VALUE and --params) that bdev_get_bdevs lists', async () => {
  let r = await rpc('bdev_malloc_create', 'name=Malloc0', 'num_blocks=65536', 'block_size=512');
  assert.is(r.code, 0, say(r));
  assert.is(JSON.parse(r.stdout), 'Malloc0');
  r = await rpc('bdev_null_create', '--params', '{"name":"Null0","num_blocks":16384,"block_size":4096}');
  assert.is(r.code, 0, say(r));
  r = await rpc('bdev_get_bdevs');
  assert.is(r.code, 0, say(r));
  const bdevs = JSON.parse(r.stdout) as Array<{ name: string; block_size: number; num_blocks: number }>;
  const m = bdevs.find((b) => b.name === 'Malloc0');
  const n = bdevs.find((b) => b.name === 'Null0');
  assert.ok(m && n, r.stdout);
  assert.is(m!.block_size * m!.num_blocks, 32 << 20);
  assert.is(n!.block_size, 4096);
});

t('vhost-blk controllers from stor rpc: stor info, write, read and copy --verify on SPDK’s sockets', async () => {
  for (const [ctrlr, bdev] of [
    ['vm', 'Malloc0'],
    ['vn', 'Null0'],
  ]) {
    const r = await rpc('vhost_create_blk_controller', `ctrlr=${ctrlr}`, `dev_name=${bdev}`);
    assert.is(r.code, 0, say(r));
    assert.is(r.stdout.trim(), 'true');
  }
  const vm = join(spdk.vhostDir, 'vm');
  assert.ok(existsSync(vm));
  const ctrls = JSON.parse((await rpc('vhost_get_controllers')).stdout) as Array<{ ctrlr: string }>;
  assert.equal(ctrls.map((c) => c.ctrlr).sort(), ['vm', 'vn']);

  let r = await stor(['info', `vhost-user:${vm}`, '--json', ...SLOW]);
  assert.is(r.code, 0, say(r));
  assert.is(JSON.parse(r.stdout).capacity, 32 << 20);
  r = await stor(['info', `vhost-user:${join(spdk.vhostDir, 'vn')}`, '--json', ...SLOW]);
  assert.is(r.code, 0, say(r));
  assert.is(JSON.parse(r.stdout).capacity, 64 << 20);

  r = await stor(['write', `vhost-user:${vm}`, '--offset', '1M', '--length', '256k', '--pattern', '0x5a', ...SLOW]);
  assert.is(r.code, 0, say(r));
  const out = join(work, 'read.bin');
  r = await stor(['read', `vhost-user:${vm}`, '--offset', '1M', '--length', '256k', '--output', out, ...SLOW]);
  assert.is(r.code, 0, say(r));
  const data = readFileSync(out);
  assert.is(data.length, 256 << 10);
  assert.ok(
    data.every((b) => b === 0x5a),
    'what was written through SPDK is read back',
  );

  // a file → SPDK's malloc controller, verified by reading it back through SPDK
  const src = join(work, 'src.img');
  r = await stor(['write', `file:${src},create=4M`, '--offset', '0', '--length', '4M', '--pattern', '0xc3']);
  assert.is(r.code, 0, say(r));
  r = await stor(['copy', src, `vhost-user:${vm}`, '--verify', '--queues', '2', '--json', ...SLOW]);
  assert.is(r.code, 0, say(r));
  r = await stor(['read', `vhost-user:${vm}`, '--offset', '4M', '--length', '4k', '--output', out, ...SLOW]);
  assert.ok(
    readFileSync(out).every((b) => b === 0),
    'nothing past the copied range changed',
  );
});

t('SPDK’s errors come back with SPDK’s codes: one line, exit 1', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['no_such_method'], /^stor: no_such_method: Method not found \(code -32601\)$/],
    [['bdev_malloc_create', 'name=Malloc0', 'num_blocks=8', 'block_size=512'], /File exists \(code -17\)$/],
    [['bdev_get_bdevs', 'name=absent'], /No such device \(code -19\)$/],
    [['bdev_null_create', 'name=X'], /spdk_json_decode_object failed \(code -32603\)$/],
    [['spdk_get_version', 'x=1'], /requires no parameters \(code -32602\)$/],
  ];
  for (const [args, re] of cases) {
    const r = await rpc(...args);
    assert.is(r.code, 1, say(r));
    assert.is(r.stderr.trim().split('\n').length, 1, say(r));
    assert.match(r.stderr.trim(), re);
  }
  // the library's typed client gets the code as a number
  const c = await SpdkClient.connect(spdk.rpcSocket, { timeoutMs: 5000 });
  try {
    const err = await c.bdevMallocDelete('absent').catch((e: unknown) => e);
    assert.is((err as { code: number }).code, -19);
    const saved = await c.saveConfig();
    const vhost = saved.subsystems.find((s) => s.subsystem === 'vhost_blk');
    assert.ok(
      vhost?.config?.some((x) => x.method === 'vhost_create_blk_controller'),
      JSON.stringify(vhost),
    );
  } finally {
    c.close();
  }
});

t('bad flags exit 2 without contacting anyone; no server is one clear line, exit 1', async () => {
  for (const args of [['bdev_get_bdevs', 'novalue'], ['bdev_get_bdevs', '--params', '{oops'], ['bad-method!']]) {
    const r = await stor(['rpc', '-s', join(work, 'absent.sock'), ...args]);
    assert.is(r.code, 2, say(r));
    assert.match(r.stderr, /^stor: /);
  }
  const r = await stor(['rpc', '-s', join(work, 'absent.sock'), 'spdk_get_version']);
  assert.is(r.code, 1, say(r));
  assert.match(r.stderr, /^stor: spdk_get_version: cannot connect to .*absent\.sock: no such socket\n/);
  assert.not.match(r.stderr, /\bat .*\.js:\d+/);
});

// last: it kills the target
t('spdk_tgt killed while a call waits: stor rpc ends with a clean line, exit 1, promptly', async () => {
  // bdev_get_bdevs with a timeout waits for the bdev to appear: the call is in flight when the target dies
  const call = rpc('bdev_get_bdevs', 'name=NotYet', 'timeout=20000', '--timeout', '25s');
  // node starts slowly on a busy machine: wait until SPDK holds an accepted connection on its RPC socket
  const until = Date.now() + 20_000;
  for (;;) {
    const ss = await runBounded('ss', ['-xH', 'state', 'connected'], 5000);
    if (ss.stdout.includes(spdk.rpcSocket)) break;
    assert.ok(Date.now() < until, 'stor rpc never connected');
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 300));
  spdk.proc.kill('SIGKILL');
  const t0 = Date.now();
  const r = await call;
  assert.is(r.code, 1, say(r));
  assert.ok(Date.now() - t0 < 5000, 'ended when the target died, not at its timeout');
  assert.match(r.stderr.trim(), /^stor: bdev_get_bdevs: .*closed the connection before replying/, say(r));
  assert.is(r.stderr.trim().split('\n').length, 1, say(r));
});

t.run();
