// SPDK's delay and error bdevs on `stor daemon`, driven by SPDK's own rpc.py and used by stor's client
// over vhost-user: data written to a malloc bdev is read back through a delay and an error bdev stacked
// on it (the base is wrapped, not reopened), an injected failure reaches the client as EIO exactly
// `num` times, "pending" holds a write until bdev_error_resume_pending, a latency shows in a read's time
// (a lower bound only) and bdev_delay_update_latency changes it, the claimed base and a bdev in use are
// not deleted (-16), save_config and a restart with --config bring the stack back (base first), and a
// controller whose error bdev holds a request still stops. Last, the same calls to spdk_tgt and to
// stor daemon get the same codes and messages (spdk_tgt built from the vendored tarball has both modules).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBounded, type RunResult } from '../helpers/run.js';
import { cleanupDir, startSpdkTgt, startStorDaemon, type StorDaemon } from '../../tools/servers.js';
import { requireSpdk } from '../../tools/spdk.js';
import { open, type BlockDevice } from '../../src/lib/client/device.js';
import { JsonRpcClient } from '../../src/lib/rpc/jsonrpc.js';

const t = suite('rpc: bdev_delay_* and bdev_error_* on stor daemon');
const dir = mkdtempSync(join(tmpdir(), 'stor-flt-'));
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

const say = (r: RunResult): string => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
function rpcPy(...args: string[]): Promise<RunResult> {
  return runBounded('python3', [requireSpdk().rpc, '-s', rpcSocket, ...args], 30_000);
}
async function rpcOk(...args: string[]): Promise<unknown> {
  const r = await rpcPy(...args);
  assert.is(r.code, 0, say(r));
  try {
    return JSON.parse(r.stdout);
  } catch {
    return r.stdout.trim();
  }
}
async function rpcFails(code: number, ...args: string[]): Promise<void> {
  const r = await rpcPy(...args);
  assert.is(r.code, 1, say(r));
  assert.match(r.stdout + r.stderr, new RegExp(`"code": ${code}\\b`), say(r));
}

const SLOW = { timeoutMs: 30_000 };
const dev = (ctrlr: string): Promise<BlockDevice> => open(`vhost-user:${join(socketDir, ctrlr)}`, SLOW);
async function timedRead(d: BlockDevice, offset: number, length: number): Promise<{ ms: number; data: Buffer }> {
  const t0 = process.hrtime.bigint();
  const data = await d.read(offset, length);
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, data };
}
const errnoOf = (p: Promise<unknown>): Promise<number> =>
  p.then(
    () => 0,
    (e: { errno?: number }) => e.errno ?? -1,
  );

t(
  'data written to a malloc bdev is read through delay + error bdevs stacked on it; errors and latency as set',
  async () => {
    assert.is(await rpcOk('bdev_malloc_create', '-b', 'Malloc0', '16', '512'), 'Malloc0');
    await rpcOk('vhost_create_blk_controller', 'vm', 'Malloc0');
    let d = await dev('vm');
    await d.write(1 << 20, Buffer.alloc(65536, 0x5a));
    await d.close();
    await rpcOk('vhost_delete_controller', 'vm');

    // 20 ms on every read (avg and p99), none on writes; an error bdev on top of the delay bdev
    const delay = ['-r', '20000', '-t', '20000', '-w', '0', '-n', '0'];
    assert.is(await rpcOk('bdev_delay_create', '-b', 'Malloc0', '-d', 'Delay0', ...delay), 'Delay0');
    assert.is(await rpcOk('bdev_error_create', 'Delay0'), true);
    await rpcOk('vhost_create_blk_controller', 've', 'EE_Delay0');
    d = await dev('ve');
    try {
      const first = await timedRead(d, 1 << 20, 65536);
      assert.ok(
        first.data.every((b) => b === 0x5a),
        'what was written to Malloc0 is read through EE_Delay0 → Delay0',
      );
      assert.ok(first.ms >= 19, `a read took ${first.ms} ms, at least the 20 ms latency`);

      // two reads fail with EIO, then reads succeed again; writes are untouched
      await rpcOk('bdev_error_inject_error', 'EE_Delay0', 'read', 'failure', '-n', '2');
      const results: number[] = [];
      for (let i = 0; i < 4; i++) results.push(await errnoOf(d.read(0, 4096)));
      results.push(await errnoOf(d.write(0, Buffer.alloc(4096, 1))));
      assert.equal(results, [5, 5, 0, 0, 0], 'exactly the injected count failed, with EIO');

      await rpcOk('bdev_delay_update_latency', 'Delay0', 'avg_read', '80000');
      await rpcOk('bdev_delay_update_latency', 'Delay0', 'p99_read', '80000');
      const slower = await timedRead(d, 0, 4096);
      assert.ok(slower.ms >= 79, `after update_latency a read took ${slower.ms} ms, at least 80`);

      // pending: a write is held until bdev_error_resume_pending
      await rpcOk('bdev_error_inject_error', 'EE_Delay0', 'write', 'pending', '-n', '1');
      let written = false;
      const w = d.write(8192, Buffer.alloc(4096, 7)).then(() => (written = true));
      await new Promise((r) => setTimeout(r, 400));
      assert.is(written, false, 'the write is held');
      await rpcOk('bdev_error_resume_pending', 'EE_Delay0'); // rpc.py prints nothing for true
      await w;
      assert.ok(
        (await d.read(8192, 4096)).every((b) => b === 7),
        'the held write reached the bdev',
      );
    } finally {
      await d.close();
    }

    const bdevs = (await rpcOk('bdev_get_bdevs')) as Array<Record<string, unknown>>;
    const by = (n: string): Record<string, unknown> => bdevs.find((b) => b.name === n)!;
    assert.equal(
      bdevs.map((b) => b.name),
      ['Malloc0', 'Delay0', 'EE_Delay0'],
    );
    assert.is(by('Delay0').product_name, 'delay');
    assert.is(by('EE_Delay0').product_name, 'Error Injection Disk');
    assert.equal(by('EE_Delay0').driver_specific, { error_disk: { base_bdev: 'Delay0' } });
    const ds = (by('Delay0').driver_specific as { delay: Record<string, unknown> }).delay;
    assert.is(ds.base_bdev_name, 'Malloc0');
    assert.is(ds.avg_read_latency, 80000);
    assert.is(ds.avg_write_latency, 0);
    assert.is(by('Malloc0').claimed, true);
    assert.is(by('Malloc0').claim_type, 'exclusive_write');
    assert.is(by('EE_Delay0').claimed, false);
    assert.is(by('EE_Delay0').num_blocks, by('Malloc0').num_blocks);

    // nothing under a user goes: the claimed base, the claimed delay bdev, the error bdev a controller uses
    await rpcFails(-16, 'bdev_malloc_delete', 'Malloc0');
    await rpcFails(-16, 'bdev_delay_delete', 'Delay0');
    await rpcFails(-16, 'bdev_error_delete', 'EE_Delay0');
    // a second wrapper on a claimed bdev: SPDK's -1
    await rpcFails(-1, 'bdev_error_create', 'Malloc0');
    await rpcFails(-22, 'bdev_error_inject_error', 'EE_Delay0', 'read', 'corrupt_data', '-v', '1');
  },
);

t('save_config, then a restart with --config: the stack comes back in order, with its latencies', async () => {
  const saved = join(dir, 'saved.json');
  const r = await rpcPy('save_config');
  assert.is(r.code, 0, say(r));
  writeFileSync(saved, r.stdout);
  const calls = (
    JSON.parse(r.stdout) as { subsystems: Array<{ subsystem: string; config: Array<{ method: string }> }> }
  ).subsystems
    .find((s) => s.subsystem === 'bdev')!
    .config.map((c) => c.method);
  assert.equal(calls, ['bdev_malloc_create', 'bdev_delay_create', 'bdev_error_create']);
  await daemon!.stop(5000);
  daemon = await startStorDaemon({ rpcSocket, socketDir, config: saved });
  const bdevs = (await rpcOk('bdev_get_bdevs')) as Array<{ name: string; driver_specific: Record<string, unknown> }>;
  assert.equal(
    bdevs.map((b) => b.name),
    ['Malloc0', 'Delay0', 'EE_Delay0'],
  );
  const ds = bdevs[1]!.driver_specific.delay as Record<string, number>;
  assert.is(ds.avg_read_latency, 80000, 'the updated latency was saved');
  const d = await dev('ve');
  try {
    const rd = await timedRead(d, 0, 4096);
    assert.ok(rd.ms >= 79, `the restored delay bdev delays reads (${rd.ms} ms)`);
  } finally {
    await d.close();
  }
});

t('a controller whose error bdev holds a request stops; then everything is deleted, top first', async () => {
  await rpcOk('bdev_error_inject_error', 'EE_Delay0', 'all', 'pending', '-n', '1');
  const d = await dev('ve');
  const held = d.write(0, Buffer.alloc(4096, 3)).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await rpcOk('vhost_delete_controller', 've');
  assert.ok(Date.now() - t0 < 10_000, 'the controller stopped without waiting for a resume');
  await Promise.race([held, new Promise((r) => setTimeout(r, 5000))]);
  await d.close().catch(() => undefined);
  await rpcFails(-16, 'bdev_delay_delete', 'Delay0');
  await rpcOk('bdev_error_delete', 'EE_Delay0'); // rpc.py prints nothing for true
  await rpcOk('bdev_delay_delete', 'Delay0'); // rpc.py prints nothing for true
  await rpcOk('bdev_malloc_delete', 'Malloc0'); // rpc.py prints nothing for true
  assert.equal(await rpcOk('bdev_get_bdevs'), []);
});

t('the same calls to spdk_tgt and stor daemon: the same results, codes and messages', async () => {
  const calls: Array<[string, Record<string, unknown>]> = [
    ['bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 }],
    ['bdev_malloc_create', { name: 'M1', num_blocks: 2048, block_size: 512 }],
    [
      'bdev_delay_create',
      {
        base_bdev_name: 'M0',
        name: 'D0',
        avg_read_latency: 10,
        p99_read_latency: 20,
        avg_write_latency: 30,
        p99_write_latency: 40,
      },
    ],
    [
      'bdev_delay_create',
      {
        base_bdev_name: 'M0',
        name: 'D1',
        avg_read_latency: 1,
        p99_read_latency: 1,
        avg_write_latency: 1,
        p99_write_latency: 1,
      },
    ],
    [
      'bdev_delay_create',
      {
        base_bdev_name: 'M1',
        name: 'D0',
        avg_read_latency: 1,
        p99_read_latency: 1,
        avg_write_latency: 1,
        p99_write_latency: 1,
      },
    ],
    [
      'bdev_delay_create',
      {
        base_bdev_name: 'M1',
        name: 'D2',
        avg_read_latency: 10,
        p99_read_latency: 5,
        avg_write_latency: 1,
        p99_write_latency: 1,
      },
    ],
    ['bdev_delay_create', { base_bdev_name: 'M1', name: 'D3' }],
    ['bdev_error_create', { base_name: 'M0' }],
    ['bdev_error_create', { base_name: 'M1' }],
    ['bdev_error_create', { base_name: 'M1' }],
    ['bdev_delay_update_latency', { delay_bdev_name: 'D0', latency_type: 'avg_read', latency_us: 15 }],
    ['bdev_delay_update_latency', { delay_bdev_name: 'M1', latency_type: 'avg_read', latency_us: 15 }],
    ['bdev_delay_update_latency', { delay_bdev_name: 'D0', latency_type: 'slow', latency_us: 15 }],
    ['bdev_error_inject_error', { name: 'EE_M1', io_type: 'read', error_type: 'failure', num: 3 }],
    ['bdev_error_inject_error', { name: 'M1', io_type: 'read', error_type: 'failure' }],
    ['bdev_error_inject_error', { name: 'EE_M1', io_type: 'read', error_type: 'nvme_failure' }],
    ['bdev_error_inject_error', { name: 'EE_M1', io_type: 'read', error_type: 'corrupt_data' }],
    ['bdev_error_inject_error', { name: 'EE_M1', io_type: 'sideways', error_type: 'failure' }],
    ['bdev_error_resume_pending', { name: 'EE_M1' }],
    ['bdev_error_resume_pending', { name: 'M1' }],
    ['bdev_delay_delete', { name: 'M1' }],
    ['bdev_error_delete', { name: 'Nope' }],
    ['bdev_delay_delete', { name: 'D0' }],
    ['bdev_error_delete', { name: 'EE_M1' }],
  ];
  const answers = async (socket: string): Promise<string[]> => {
    const c = await JsonRpcClient.connect(socket, SLOW);
    const out: string[] = [];
    try {
      for (const [m, p] of calls)
        out.push(
          await c.call(m, p).then(
            (v) => `${m}: ${JSON.stringify(v)}`,
            (e: { code?: number; message: string }) => `${m}: error ${e.code} ${e.message}`,
          ),
        );
    } finally {
      c.close();
    }
    return out;
  };
  const spdk = await startSpdkTgt();
  let theirs: string[];
  try {
    theirs = await answers(spdk.rpcSocket);
  } finally {
    await spdk.stop(5000);
    cleanupDir(spdk.dir);
  }
  const ours = await answers(rpcSocket);
  assert.equal(ours, theirs);
});

t.run();
