// `stor daemon`'s SPDK rbd methods driven by SPDK's own rpc.py, against the suite's Ceph cluster: a
// registered cluster, an rbd bdev on it and a vhost-blk controller; stor's client writes and reads
// back through the controller; bdev_get_bdevs and bdev_rbd_get_clusters_info in SPDK's shapes; a bdev
// with its own config map (mon_host + key, read-only); SPDK's error codes for a missing pool, image and
// cluster, a name taken, a delete while a controller uses the bdev and an unregister while a bdev uses
// the cluster; then save_config, the daemon stopped and started again with --config (and --state):
// the same bdev, uuid and controller come back and the data written before is still there.
// The vendored SPDK is built --without-rbd, so there is no spdk_tgt to compare with here; the shapes
// follow SPDK 26.05's bdev_rbd.c, and were compared once by hand with a spdk_tgt built --with-rbd.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open } from '../../src/lib/index.js';
import type { CephCluster } from '../../tools/ceph.js';
import { startStorDaemon, type StorDaemon } from '../../tools/servers.js';
import { requireSpdk } from '../../tools/spdk.js';
import { runBounded, type RunResult } from '../helpers/run.js';
import { suiteCluster } from './cluster.js';

const t = suite('rbd: stor daemon bdev_rbd_* methods through SPDK rpc.py');
const MiB = 1024 * 1024;
let cluster: CephCluster;
let dir: string;
let daemon: StorDaemon | undefined;

t.before(async () => {
  cluster = await suiteCluster();
  dir = join(cluster.dir, 'daemon');
  mkdirSync(join(dir, 'v'), { recursive: true });
  await cluster.rbd(['create', '--size', '64M', 'rbd/dmn']);
});

t.after(async () => {
  await daemon?.stop(10_000);
  rmSync(dir, { recursive: true, force: true });
});

const say = (r: RunResult): string => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
const rpcRaw = (...args: string[]): Promise<RunResult> =>
  runBounded('python3', [requireSpdk().rpc, '-s', join(dir, 'rpc.sock'), ...args], 60_000);
async function rpc(...args: string[]): Promise<unknown> {
  const r = await rpcRaw(...args);
  assert.is(r.code, 0, say(r));
  try {
    return JSON.parse(r.stdout);
  } catch {
    return r.stdout.trim();
  }
}
/** An rpc.py call that must fail: its JSON-RPC error (rpc.py prints it after "response:"). */
async function rpcError(...args: string[]): Promise<{ code: number; message: string }> {
  const r = await rpcRaw(...args);
  assert.is.not(r.code, 0, say(r));
  const m = /response:\s*(\{[\s\S]*?\n\})/.exec(r.stdout + r.stderr);
  assert.ok(m, `no error response:\n${say(r)}`);
  return JSON.parse(m![1]) as { code: number; message: string };
}
const start = (o: { config?: string; state?: string } = {}): Promise<StorDaemon> =>
  startStorDaemon({ rpcSocket: join(dir, 'rpc.sock'), socketDir: join(dir, 'v'), startTimeoutMs: 60_000, ...o });

interface Bdev {
  name: string;
  product_name: string;
  block_size: number;
  num_blocks: number;
  uuid: string;
  supported_io_types: Record<string, boolean>;
  driver_specific: { rbd: Record<string, unknown> };
}

const writes = Array.from({ length: 16 }, (_, i) => ({ offset: i * 3 * MiB + 4096, data: randomBytes(64 * 1024) }));

t('register a cluster, an rbd bdev and a controller; verified I/O through it; SPDK-style errors', async () => {
  daemon = await start();
  assert.is(
    await rpc('bdev_rbd_register_cluster', 'ceph0', '--config-file', cluster.conf, '--key-file', cluster.keyring),
    'ceph0',
  );
  assert.equal(await rpc('bdev_rbd_get_clusters_info', '-b', 'ceph0'), {
    cluster_name: 'ceph0',
    config_file: cluster.conf,
    key_file: cluster.keyring,
  });
  assert.is(await rpc('bdev_rbd_create', '-b', 'Rbd0', '-c', 'ceph0', 'rbd', 'dmn', '512'), 'Rbd0');
  const [b] = (await rpc('bdev_get_bdevs', '-b', 'Rbd0')) as Bdev[];
  assert.is(b.product_name, 'Ceph Rbd Disk');
  assert.is(b.block_size * b.num_blocks, 64 * MiB);
  assert.equal(b.driver_specific.rbd, {
    pool_name: 'rbd',
    rbd_name: 'dmn',
    config_file: cluster.conf,
    key_file: cluster.keyring,
  });
  assert.ok(b.supported_io_types.write && b.supported_io_types.unmap && b.supported_io_types.write_zeroes);

  // SPDK's codes: -1 for what its rbd module cannot open, -17 a name taken, -32603 bad parameters
  let e = await rpcError('bdev_rbd_create', '-c', 'ceph0', 'nopool', 'dmn', '512');
  assert.is(e.code, -1);
  assert.match(e.message, /^Operation not permitted: rbd: pool 'nopool' does not exist/);
  e = await rpcError('bdev_rbd_create', '-c', 'ceph0', 'rbd', 'nosuch', '512');
  assert.is(e.code, -1);
  assert.match(e.message, /image rbd\/nosuch does not exist/);
  e = await rpcError('bdev_rbd_create', '-c', 'nocluster', 'rbd', 'dmn', '512');
  assert.is(e.code, -1);
  assert.match(e.message, /no cluster nocluster/);
  e = await rpcError('bdev_rbd_create', '-b', 'Rbd0', '-c', 'ceph0', 'rbd', 'dmn', '512');
  assert.is(e.code, -17);
  e = await rpcError('bdev_rbd_create', '-c', 'ceph0', 'rbd', 'dmn', '0');
  assert.is(e.code, -22);
  e = await rpcError('bdev_rbd_register_cluster', 'ceph0', '--config-file', cluster.conf);
  assert.is(e.code, -1);
  assert.match(e.message, /exists already/);
  e = await rpcError('bdev_rbd_register_cluster', 'bad', '--config-file', join(dir, 'missing.conf'));
  assert.is(e.code, -1);
  assert.match(e.message, /missing\.conf: No such file/);
  e = await rpcError('bdev_rbd_get_clusters_info', '-b', 'nocluster');
  assert.is(e.code, -2);
  e = await rpcError('bdev_rbd_delete', 'nosuch');
  assert.is(e.code, -19);
  // the rbd methods delete only rbd bdevs
  assert.is(await rpc('bdev_malloc_create', '-b', 'M0', '1', '512'), 'M0');
  e = await rpcError('bdev_rbd_delete', 'M0');
  assert.is(e.code, -19);
  await rpc('bdev_malloc_delete', 'M0'); // (rpc.py prints nothing for the deletes: their effect is checked)

  // a bdev with its own connection: mon_host and key as a config map, read-only (no lock taken)
  const monHost = /^mon_host = (.*)$/m.exec(readFileSync(cluster.conf, 'utf8'))![1];
  const key = /key = (\S+)/.exec(readFileSync(cluster.keyring, 'utf8'))![1];
  assert.is(
    await rpc(
      'bdev_rbd_create',
      '-r',
      '--config',
      `mon_host=${monHost}`,
      '--config',
      `key=${key}`,
      'rbd',
      'dmn',
      '4096',
    ),
    'Ceph1',
  );
  const [ro] = (await rpc('bdev_get_bdevs', '-b', 'Ceph1')) as Bdev[];
  assert.is(ro.num_blocks, (64 * MiB) / 4096);
  assert.equal(ro.driver_specific.rbd, { pool_name: 'rbd', rbd_name: 'dmn', config: { mon_host: monHost, key } });
  assert.is(ro.supported_io_types.write, false);
  await rpc('bdev_rbd_delete', 'Ceph1');
  assert.is((await rpcError('bdev_get_bdevs', '-b', 'Ceph1')).code, -19);

  await rpc('vhost_create_blk_controller', 'vr0', 'Rbd0');
  const dev = await open(`vhost-user:${join(dir, 'v', 'vr0')}`);
  try {
    assert.is(dev.properties.capacity, 64 * MiB);
    await Promise.all(writes.map((w) => dev.write(w.offset, w.data)));
    await dev.flush();
    for (const w of writes) assert.ok((await dev.read(w.offset, w.data.length)).equals(w.data), `at ${w.offset}`);
  } finally {
    await dev.close();
  }
  e = await rpcError('bdev_rbd_delete', 'Rbd0');
  assert.is(e.code, -16);
  assert.match(e.message, /in use by vhost controller vr0/);
  e = await rpcError('bdev_rbd_unregister_cluster', 'ceph0');
  assert.is(e.code, -1);
  assert.match(e.message, /used by bdev Rbd0/);
});

t('save_config, restart with --config: the cluster, bdev and controller come back with the data', async () => {
  const saved = join(dir, 'saved.json');
  const r = await rpcRaw('save_config');
  assert.is(r.code, 0, say(r));
  writeFileSync(saved, r.stdout);
  const methods = (
    JSON.parse(r.stdout) as { subsystems: Array<{ config: Array<{ method: string }> | null }> }
  ).subsystems
    .flatMap((s) => s.config ?? [])
    .map((c) => c.method);
  assert.equal(methods, ['bdev_rbd_register_cluster', 'bdev_rbd_create', 'vhost_create_blk_controller']);
  const [before] = (await rpc('bdev_get_bdevs', '-b', 'Rbd0')) as Bdev[];
  assert.is(await daemon!.stop(30_000), 0, daemon!.output());
  daemon = undefined;

  const state = join(dir, 'state.json');
  daemon = await start({ config: saved, state });
  assert.ok(existsSync(state), '--state was written from --config');
  const [after] = (await rpc('bdev_get_bdevs', '-b', 'Rbd0')) as Bdev[];
  assert.is(after.uuid, before.uuid);
  assert.equal(after.driver_specific, before.driver_specific);
  const dev = await open(`vhost-user:${join(dir, 'v', 'vr0')}`);
  try {
    for (const w of writes) assert.ok((await dev.read(w.offset, w.data.length)).equals(w.data), `at ${w.offset}`);
  } finally {
    await dev.close();
  }

  // and everything goes away in order
  await rpc('vhost_delete_controller', 'vr0');
  await rpc('bdev_rbd_delete', 'Rbd0');
  assert.equal(await rpc('bdev_get_bdevs'), []);
  await rpc('bdev_rbd_unregister_cluster', 'ceph0');
  const e = await rpcError('bdev_rbd_get_clusters_info');
  assert.is(e.code, -2);
  assert.equal(
    JSON.parse(readFileSync(state, 'utf8')).subsystems.flatMap((s: { config: unknown[] }) => s.config),
    [],
  );
  assert.is(await daemon.stop(30_000), 0, daemon.output());
  daemon = undefined;
});

t.run();
