// `stor daemon`: one process holding a device table that SPDK-dialect JSON-RPC manages at run time —
// spdk_tgt's -r (RPC socket) and -S (where vhost controllers' sockets go) — so SPDK's rpc.py and
// `stor rpc` create, list and delete bdevs and vhost-blk controllers while the others keep serving
// I/O. --config replays a save_config document at start. --state FILE keeps the configuration on disk,
// rewritten atomically after every change that succeeded, and replayed before the RPC socket opens, so
// a daemon killed in any way and started again with the same --state serves the same controllers on
// the same sockets (a front-end that reconnects sees a pause), and takes over its ublk disks (user
// recovery) and VDUSE devices (reconnect) the kernel kept (a process on /dev/ublkbN or /dev/vdX sees a
// pause). SIGINT/SIGTERM stop every export and kernel disk (in-flight requests drain), flush every
// backend and remove the sockets; the process exits 0.
import { Flags } from '@oclif/core';
import chalk from 'chalk';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { StorCommand } from '../cli/command.js';
import { StorError, usageError } from '../lib/core/errors.js';
import { DeviceTable, type CompletionMode } from '../lib/export/table.js';
import type { LogLevel } from '../lib/export/vhost-user/server.js';
import { JsonRpcError } from '../lib/rpc/jsonrpc.js';
import { JsonRpcServer } from '../lib/rpc/server.js';
import { SpdkMethods } from '../lib/rpc/spdk-methods.js';
import { readStateFile, writeStateFile } from '../lib/rpc/state-file.js';
import type { SpdkConfig } from '../lib/rpc/spdk-client.js';

export default class Daemon extends StorCommand {
  static override summary = 'Serve devices managed over SPDK-compatible JSON-RPC (rpc.py, stor rpc)';
  static override description = `A device table managed at run time, the way spdk_tgt is: bdev_malloc_create (a mem: backend), bdev_null_create, bdev_aio_create / bdev_uring_create (file:), bdev_rbd_register_cluster / bdev_rbd_unregister_cluster / bdev_rbd_get_clusters_info and bdev_rbd_create (rbd:), bdev_get_bdevs and the deletes; vhost_create_blk_controller (a vhost-user-blk export on SOCKET_DIR/CTRLR), vhost_get_controllers, vhost_delete_controller; ublk_create_target, ublk_start_disk (a /dev/ublkbN of a bdev), ublk_recover_disk, ublk_stop_disk, ublk_get_disks, ublk_destroy_target; vduse_create_blk_device, vduse_delete_blk_device, vduse_get_devices (stor's own: a bdev as a VDUSE virtio-blk disk /dev/vdX); framework_get_subsystems / framework_get_config (so rpc.py's save_config and load_config work), save_config, load_config; rpc_get_methods, spdk_get_version.
A bdev a controller or kernel disk uses cannot be deleted (-16), nor a mounted disk stopped (-16); SPDK's own error codes otherwise. With --state, ublk disks come back through user recovery and VDUSE devices through reconnect.`;
  static override examples = [
    '<%= config.bin %> daemon --rpc-socket /var/tmp/stor-rpc.sock --socket-dir /var/tmp/vhost',
    'rpc.py -s /var/tmp/stor-rpc.sock bdev_malloc_create -b Malloc0 256 512',
    'rpc.py -s /var/tmp/stor-rpc.sock vhost_create_blk_controller vhost.0 Malloc0',
    'rpc.py -s /var/tmp/stor-rpc.sock save_config > stor.json && <%= config.bin %> daemon ... --config stor.json',
    '<%= config.bin %> daemon -r /var/tmp/stor-rpc.sock -S /var/tmp/vhost --state /var/lib/stor/daemon.json',
    'rpc.py -s /var/tmp/stor-rpc.sock ublk_create_target && rpc.py -s /var/tmp/stor-rpc.sock ublk_start_disk Malloc0 1   # /dev/ublkb1',
    '<%= config.bin %> rpc -s /var/tmp/stor-rpc.sock vduse_create_blk_device name=vd0 bdev_name=Malloc0   # /dev/vdX',
  ];
  static override flags = {
    'rpc-socket': Flags.string({
      char: 'r',
      description: 'the JSON-RPC socket to listen on (spdk_tgt -r)',
      default: '/var/tmp/spdk.sock',
    }),
    'socket-dir': Flags.string({
      char: 'S',
      description: 'directory for vhost controllers’ sockets: controller N listens on DIR/N (spdk_tgt -S)',
      required: true,
    }),
    config: Flags.string({ char: 'c', description: 'a save_config JSON document to replay at start' }),
    state: Flags.string({
      description:
        'keep the configuration in FILE (a save_config document), rewritten atomically after every change and replayed at start; --config only seeds a FILE that does not exist yet',
    }),
    completion: Flags.string({
      description: 'default completion mode of new controllers’ queue threads (a controller may set its own)',
      options: ['notify', 'poll', 'adaptive'],
      default: 'adaptive',
    }),
    queues: Flags.integer({ description: 'default virtqueues per controller', default: 4, min: 1, max: 64 }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Daemon);
    const json = this.jsonEnabled();
    const dir = flags['socket-dir'];
    if (!existsSync(dir) || !statSync(dir).isDirectory())
      throw usageError('--socket-dir', `${dir} is not a directory`, 'an existing directory (as spdk_tgt -S)');
    let config: SpdkConfig | undefined;
    if (flags.config !== undefined) {
      let text: string;
      try {
        text = readFileSync(flags.config, 'utf8');
      } catch (e) {
        throw usageError(
          '--config',
          `cannot read ${flags.config}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        );
      }
      try {
        config = JSON.parse(text) as SpdkConfig;
      } catch (e) {
        throw usageError(
          '--config',
          `${flags.config} is not JSON (${(e as Error).message})`,
          'what save_config writes',
        );
      }
      if (typeof config !== 'object' || config === null || !Array.isArray(config.subsystems))
        throw usageError('--config', `${flags.config} has no "subsystems" array`, 'what save_config writes');
    }
    const log = (level: LogLevel, message: string): void => {
      if (json)
        process.stderr.write(JSON.stringify({ event: 'log', level, message, time: new Date().toISOString() }) + '\n');
      else {
        const tag =
          level === 'error' ? chalk.red('error') : level === 'warn' ? chalk.yellow('warn ') : chalk.dim('info ');
        process.stderr.write(`${chalk.dim(new Date().toISOString())} ${tag} ${message}\n`);
      }
    };
    const statePath = flags.state;
    // read before anything is created: a state file that cannot be read stops the daemon here
    const saved = statePath !== undefined ? readStateFile(statePath) : undefined;
    if (saved && config) log('info', `--state ${statePath} exists: it is replayed, --config ${flags.config} is not`);
    const restore = saved ?? config;
    const restoreFrom = saved ? `--state ${statePath}` : `--config ${flags.config}`;
    const table = new DeviceTable(log);
    // off while the saved configuration is replayed: a replay that fails half-way must leave the file as it was
    let persisting = false;
    const persist = (): void => {
      if (persisting && statePath !== undefined) writeStateFile(statePath, methods.saveConfig());
    };
    const methods: SpdkMethods = new SpdkMethods(table, {
      socketDir: dir,
      version: this.config.version,
      queues: flags.queues,
      completion: flags.completion as CompletionMode,
      log,
      onChange: persist,
    });
    const server = new JsonRpcServer({ socketPath: flags['rpc-socket'], methods: methods.methods, log });
    if (restore) {
      try {
        // a ublk disk or VDUSE device the kernel kept from a daemon that died is taken over, not made anew
        methods.kernel.restoring = true;
        await methods.loadConfig(restore);
        methods.kernel.restoring = false;
      } catch (e) {
        // kernel disks taken over so far are left for the next start to take over again
        methods.kernel.abandonAll();
        await table.closeAll();
        const why = e instanceof JsonRpcError ? `${e.message} (code ${e.code})` : (e as Error).message;
        throw new StorError(`${restoreFrom}: ${why}`);
      }
      if (saved)
        log(
          'info',
          `--state ${statePath}: restored ${table.listBackends().length} bdev(s), ${table.listExports().length} controller(s) and ${methods.kernel.diskCount()} kernel disk(s)`,
        );
    }
    if (statePath !== undefined) {
      persisting = true;
      try {
        // written now, so a first start creates the file (and a path that cannot be written fails at once)
        persist();
      } catch (e) {
        methods.kernel.abandonAll();
        await table.closeAll();
        throw e;
      }
    }
    try {
      await server.listen();
    } catch (e) {
      methods.kernel.abandonAll();
      await table.closeAll();
      throw e;
    }

    const stopped = new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (sig: string): void => {
        if (stopping) return;
        stopping = true;
        log('info', `${sig}: stopping the RPC server and ${table.listExports().length} controller(s)`);
        void server
          .close()
          .then(() => methods.kernel.closeAll())
          .then(() => table.closeAll())
          .then(() => {
            if (json) process.stdout.write(JSON.stringify({ event: 'stopped', signal: sig }) + '\n');
            else process.stderr.write('stopped\n');
            resolve();
          });
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    const t = table.toJSON();
    const ready = {
      event: 'ready',
      rpcSocket: flags['rpc-socket'],
      socketDir: dir,
      bdevs: t.backends.map((b) => b.name),
      controllers: t.exports.map((e) => ({ name: e.name, socket: e.socket })),
      disks: methods.kernel.list(),
      pid: process.pid,
    };
    if (json) process.stdout.write(JSON.stringify(ready) + '\n');
    else
      process.stdout.write(
        [
          `${chalk.bold('stor daemon')}: JSON-RPC on ${chalk.cyan(ready.rpcSocket)}, controllers in ${dir}`,
          ...(ready.bdevs.length ? [`  bdevs        ${ready.bdevs.join(', ')}`] : []),
          ...(ready.controllers.length ? [`  controllers  ${ready.controllers.map((c) => c.name).join(', ')}`] : []),
          ...(ready.disks.length ? [`  disks        ${ready.disks.map((d) => d.device).join(', ')}`] : []),
          '',
          `Manage with:  stor rpc -s ${ready.rpcSocket} rpc_get_methods`,
          `              rpc.py -s ${ready.rpcSocket} bdev_malloc_create -b Malloc0 64 512`,
          `              rpc.py -s ${ready.rpcSocket} vhost_create_blk_controller vhost.0 Malloc0   # → ${join(dir, 'vhost.0')}`,
          chalk.dim('Ctrl-C stops it (in-flight requests drain, the sockets are removed).'),
        ].join('\n') + '\n',
      );
    await stopped;
  }
}
