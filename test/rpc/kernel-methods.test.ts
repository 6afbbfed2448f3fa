// The ublk and VDUSE methods of `stor daemon` (spdk-kernel-methods.ts), checked on the host without a
// kernel disk: SPDK 26.05's parameter decoding and error codes for the ublk_* methods (a parameter
// object SPDK cannot decode is -32603 "spdk_json_decode_object failed", ublk_create_target's is -32603
// "Invalid argument", no target is -19, an unknown id -19), the same style for stor's vduse_* methods,
// the "ublk" and "vduse" subsystems in framework_get_subsystems / save_config, and a bdev a kernel disk
// uses refused for deletion with -16. The disks themselves are made in the Linux guest
// (test/vm/daemon-kernel.test.ts): this host has no ublk_drv and no VDUSE.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceTable } from '../../src/lib/export/table.js';
import { JsonRpcError } from '../../src/lib/rpc/jsonrpc.js';
import { SpdkMethods } from '../../src/lib/rpc/spdk-methods.js';
import { SpdkClient } from '../../src/lib/rpc/spdk-client.js';
import { startStorDaemon } from '../../tools/servers.js';

const t = suite('rpc: ublk_* and vduse_* methods of stor daemon (decoding, codes, shapes)');

function daemon(): {
  table: DeviceTable;
  m: SpdkMethods;
  call: (method: string, params?: unknown) => Promise<unknown>;
} {
  const table = new DeviceTable();
  const m = new SpdkMethods(table, { socketDir: '/nonexistent', version: '0.1.0' });
  const call = async (method: string, params?: unknown): Promise<unknown> => {
    const h = m.methods.get(method);
    if (!h) throw new Error(`no method ${method}`);
    return h(params as Record<string, unknown> | undefined);
  };
  return { table, m, call };
}

/** The JSON-RPC error a call fails with (code and message). */
async function fails(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, JsonRpcError, String(e));
    return { code: (e as JsonRpcError).code, message: (e as JsonRpcError).message };
  }
  assert.unreachable('the call succeeded');
  throw new Error('unreachable');
}

t('rpc_get_methods lists the ublk methods and stor’s VDUSE methods', async () => {
  const { call } = daemon();
  const methods = (await call('rpc_get_methods')) as string[];
  for (const name of [
    'ublk_create_target',
    'ublk_destroy_target',
    'ublk_start_disk',
    'ublk_recover_disk',
    'ublk_stop_disk',
    'ublk_get_disks',
    'vduse_create_blk_device',
    'vduse_delete_blk_device',
    'vduse_get_devices',
  ])
    assert.ok(methods.includes(name), `${name} is listed`);
});

t('ublk: SPDK’s decode failures, no target, unknown ids', async () => {
  const { call } = daemon();
  await call('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 });
  const decodeFailed = { code: -32603, message: 'spdk_json_decode_object failed' };
  for (const params of [
    { bdev_name: 'M0' }, // ublk_id is required
    { bdev_name: 'M0', ublk_id: '1' },
    { bdev_name: 'M0', ublk_id: -1 },
    { bdev_name: 'M0', ublk_id: 1, nr_queues: 2 },
    undefined,
  ])
    assert.equal(await fails(call('ublk_start_disk', params)), decodeFailed, JSON.stringify(params));
  assert.equal(await fails(call('ublk_recover_disk', { ublk_id: 1 })), decodeFailed);
  assert.equal(await fails(call('ublk_stop_disk', {})), decodeFailed);
  assert.equal(await fails(call('ublk_get_disks', { id: 1 })), decodeFailed);
  // no ublk_create_target yet: -ENODEV, as spdk_tgt
  const noTarget = await fails(call('ublk_start_disk', { bdev_name: 'M0', ublk_id: 1 }));
  assert.is(noTarget.code, -19);
  assert.match(noTarget.message, /^No such device/);
  assert.is((await fails(call('ublk_recover_disk', { bdev_name: 'M0', ublk_id: 1 }))).code, -19);
  assert.is((await fails(call('ublk_stop_disk', { ublk_id: 7 }))).code, -19);
  assert.equal(await call('ublk_get_disks'), []);
  assert.equal(await call('ublk_get_disks', { ublk_id: 0 }), [], 'ublk_id 0 lists every disk, as SPDK');
  assert.equal(await fails(call('ublk_get_disks', { ublk_id: 3 })), { code: -19, message: 'No such device' });
  assert.equal(await fails(call('ublk_create_target', { cpumask: 3 })), { code: -32603, message: 'Invalid argument' });
  assert.equal(await fails(call('ublk_create_target', { cpumask: 'zz' })), {
    code: -32603,
    message: 'Invalid argument: cpumask zz',
  });
  const destroy = await fails(call('ublk_destroy_target'));
  assert.is(destroy.code, -32603);
  assert.match(destroy.message, /^No such file or directory/);
  if (!existsSync('/dev/ublk-control')) {
    const noDriver = await fails(call('ublk_create_target', { cpumask: '0x1' }));
    assert.is(noDriver.code, -32603);
    assert.match(noDriver.message, /^No such file or directory: \/dev\/ublk-control does not exist/);
  }
});

t('vduse: decode failures, a missing bdev, bad sizes, unknown names', async () => {
  const { call } = daemon();
  await call('bdev_null_create', { name: 'N0', num_blocks: 2048, block_size: 512 });
  const decodeFailed = { code: -32603, message: 'spdk_json_decode_object failed' };
  for (const params of [
    { name: 'v0' },
    { bdev_name: 'N0' },
    { name: 'v0', bdev_name: 'N0', num_queues: 'two' },
    { name: 'v0', bdev_name: 'N0', ctrlr: 'x' },
  ])
    assert.equal(await fails(call('vduse_create_blk_device', params)), decodeFailed, JSON.stringify(params));
  const missing = await fails(call('vduse_create_blk_device', { name: 'v0', bdev_name: 'Nope' }));
  assert.is(missing.code, -19);
  assert.match(missing.message, /^No such device: no bdev named Nope/);
  for (const [params, why] of [
    [{ name: 'v0', bdev_name: 'N0', queue_size: 100 }, /queue_size 100/],
    [{ name: 'v0', bdev_name: 'N0', num_queues: 0 }, /num_queues 0/],
    [{ name: 'v0', bdev_name: 'N0', serial: 'x'.repeat(21) }, /longer than 20 bytes/],
    [{ name: 'a/b', bdev_name: 'N0' }, /not a device name/],
  ] as const) {
    const e = await fails(call('vduse_create_blk_device', params));
    assert.is(e.code, -22, JSON.stringify(params));
    assert.match(e.message, why);
  }
  if (!existsSync('/dev/vduse/control')) {
    const e = await fails(call('vduse_create_blk_device', { name: 'v0', bdev_name: 'N0' }));
    assert.is(e.code, -19);
    assert.match(e.message, /\/dev\/vduse\/control does not exist/);
  }
  assert.equal(await call('vduse_get_devices'), []);
  assert.equal(await fails(call('vduse_get_devices', { name: 'v0' })), { code: -19, message: 'No such device' });
  assert.is((await fails(call('vduse_delete_blk_device', { name: 'v0' }))).code, -19);
  assert.equal(await fails(call('vduse_delete_blk_device', {})), decodeFailed);
});

t('framework_get_subsystems and save_config carry "ublk" and "vduse" subsystems after bdev and vhost_blk', async () => {
  const { call, m } = daemon();
  assert.equal(await call('framework_get_subsystems'), [
    { subsystem: 'bdev', depends_on: [] },
    { subsystem: 'vhost_blk', depends_on: ['bdev'] },
    { subsystem: 'ublk', depends_on: ['bdev'] },
    { subsystem: 'vduse', depends_on: ['bdev'] },
  ]);
  assert.equal(await call('framework_get_config', { name: 'ublk' }), []);
  assert.equal(await call('framework_get_config', { name: 'vduse' }), []);
  assert.equal(
    m.saveConfig().subsystems.map((s) => s.subsystem),
    ['bdev', 'vhost_blk', 'ublk', 'vduse'],
  );
  // an empty ublk/vduse configuration loads (rpc.py load_config of stor's own save_config)
  assert.is(await call('load_config', m.saveConfig()), true);
});

t('a bdev a kernel disk uses is not deleted: -16, and deleted once released', async () => {
  const { call, table } = daemon();
  await call('bdev_malloc_create', { name: 'M1', num_blocks: 2048, block_size: 512 });
  table.claimBackend('M1', 'ublk disk 5');
  const busy = await fails(call('bdev_malloc_delete', { name: 'M1' }));
  assert.is(busy.code, -16);
  assert.match(busy.message, /^Device or resource busy: .*M1 is in use by ublk disk 5/);
  table.releaseBackend('M1', 'ublk disk 5');
  assert.is(await call('bdev_malloc_delete', { name: 'M1' }), true);
});

t('over the socket: stor’s typed client, and the ready line lists no disks', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stor-kdm-'));
  mkdirSync(join(dir, 'v'));
  const d = await startStorDaemon({ rpcSocket: join(dir, 'rpc.sock'), socketDir: join(dir, 'v') });
  try {
    assert.equal(d.ready.disks, []);
    const c = await SpdkClient.connect(d.rpcSocket);
    try {
      assert.equal(await c.vduseGetDevices(), []);
      assert.equal(await c.ublkGetDisks(), []);
      for (const p of [
        c.vduseCreateBlkDevice({ name: 'v0', bdev_name: 'Nope' }),
        c.vduseDeleteBlkDevice('v0'),
        c.ublkRecoverDisk({ bdev_name: 'Nope', ublk_id: 1 }),
      ]) {
        const e = await fails(p);
        assert.is(e.code, -19, e.message);
      }
    } finally {
      c.close();
    }
  } finally {
    await d.stop(5000);
    rmSync(dir, { recursive: true, force: true });
  }
});

t.run();
