import { Flags } from '@oclif/core';
import chalk from 'chalk';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorCommand } from '../cli/command.js';
import { usageError } from '../lib/core/errors.js';
import { formatSize } from '../lib/core/size.js';
import { BACKEND_FORMS } from '../lib/core/spec.js';
import { DeviceTable, type CompletionMode } from '../lib/export/table.js';
import type { LogLevel } from '../lib/export/vhost-user/server.js';
import { SPIN_US_DEFAULT } from '../lib/core/completion.js';
import { parseBackend } from '../lib/core/target.js';
import { assertWholeSectors } from '../lib/bdev/identity.js';

export const DEFAULT_SOCKET = join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), 'stor.sock');

export default class Serve extends StorCommand {
  static override summary = 'Serve a backend as a vhost-user-blk device on a Unix socket';
  static override description = `A vhost-user-blk back-end for QEMU guests, libblkio applications and any other vhost-user front-end.
The data plane runs in native threads, one per queue; completion by notification (eventfd), polling, or adaptive (poll briefly, then sleep).
With no flags: a 1 GiB in-memory disk at ${DEFAULT_SOCKET}.`;
  static override examples = [
    '<%= config.bin %> serve',
    '<%= config.bin %> serve --socket /tmp/vhost.sock --backend file:/var/tmp/disk.img,create=1G --queues 2',
    '<%= config.bin %> serve --backend null:1G --completion poll --json',
  ];

  static override flags = {
    socket: Flags.string({ description: 'Unix socket path to listen on', default: DEFAULT_SOCKET }),
    backend: Flags.string({ description: `what to serve: ${BACKEND_FORMS}`, default: 'mem:1G' }),
    readonly: Flags.boolean({
      description: 'refuse writes; the device is read-only (VIRTIO_BLK_F_RO)',
      default: false,
    }),
    queues: Flags.integer({
      description: 'number of virtqueues (one native thread each), 1..64',
      default: 1,
      min: 1,
      max: 64,
    }),
    'queue-size': Flags.integer({
      description: 'largest virtqueue a front-end may set up (power of 2, 4..32768); seg_max follows it',
      default: 1024,
    }),
    'block-size': Flags.string({
      description: 'logical block size advertised to the driver',
      options: ['512', '4096'],
      default: '512',
    }),
    // one name for the idea in every command: --completion (--mode is the old spelling, still accepted)
    completion: Flags.string({
      description:
        'completion mode of the queue threads: notify (sleep on the kick eventfd), poll (spin on the ring), adaptive (spin up to --spin-us after the last request, then sleep)',
      options: ['notify', 'poll', 'adaptive'],
      default: 'adaptive',
      aliases: ['mode'],
    }),
    'spin-us': Flags.integer({
      description: `adaptive mode: the longest a queue spins after its last request before sleeping (the window adapts below it; default ${SPIN_US_DEFAULT})`,
      min: 0,
      max: 1_000_000,
    }),
    // the old name of --spin-us, still accepted
    'poll-us': Flags.integer({ hidden: true, min: 0, max: 1_000_000, exclusive: ['spin-us'] }),
    serial: Flags.string({
      description: 'serial number returned to VIRTIO_BLK_T_GET_ID (at most 20 bytes)',
      default: 'stor',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    const qs = flags['queue-size'];
    if (qs < 4 || qs > 32768 || qs & (qs - 1))
      throw usageError('--queue-size', `${qs} is not a power of 2 from 4 to 32768`, 'e.g. 128, 256, 1024');
    if (Buffer.byteLength(flags.serial) > 20)
      throw usageError('--serial', `'${flags.serial}' is longer than 20 bytes`, 'up to 20 bytes');
    const json = this.jsonEnabled();
    const blockSize = Number(flags['block-size']) as 512 | 4096;
    const target = parseBackend(flags.backend, '--backend');
    if (target.kind === 'file') assertWholeSectors(target.path);
    const log = (level: LogLevel, message: string): void => {
      if (json)
        process.stderr.write(JSON.stringify({ event: 'log', level, message, time: new Date().toISOString() }) + '\n');
      else {
        const tag =
          level === 'error' ? chalk.red('error') : level === 'warn' ? chalk.yellow('warn ') : chalk.dim('info ');
        process.stderr.write(`${chalk.dim(new Date().toISOString())} ${tag} ${message}\n`);
      }
    };
    // one backend and one vhost-user-blk export, through the device table
    const table = new DeviceTable(log);
    const backend = table.addBackend('disk0', flags.backend, { readonly: flags.readonly, what: '--backend' });
    const info = backend.info;
    const exp = table.addVhostUserBlkExport('vhost0', 'disk0', {
      socket: flags.socket,
      queues: flags.queues,
      queueSize: qs,
      blockSize,
      readonly: flags.readonly || info.readonly,
      serial: flags.serial,
      mode: flags.completion as CompletionMode,
      pollUs: flags['spin-us'] ?? flags['poll-us'] ?? SPIN_US_DEFAULT,
    });
    const server = exp.server;

    // Signal handlers go in before "ready" is printed: whoever reads that line may stop us at once.
    const stopped = new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (sig: string): void => {
        if (stopping) return;
        stopping = true;
        log('info', `${sig}: draining in-flight requests, flushing, removing ${flags.socket}`);
        const stats = server.stats();
        void table.closeAll().then(() => {
          const total = stats.reduce((a, s) => ({ requests: a.requests + s.requests, errors: a.errors + s.errors }), {
            requests: 0,
            errors: 0,
          });
          if (json)
            process.stdout.write(
              JSON.stringify({
                event: 'stopped',
                signal: sig,
                connections: server.connectionCount,
                ...total,
                queues: stats,
              }) + '\n',
            );
          else
            process.stderr.write(
              `stopped: ${server.connectionCount} front-end(s), ${total.requests} requests, ${total.errors} failed\n`,
            );
          resolve();
        });
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    const ready = {
      event: 'ready',
      socket: flags.socket,
      backend: backend.spec,
      capacity: info.capacity,
      blockSize,
      queues: flags.queues,
      queueSize: qs,
      mode: flags.completion,
      completion: flags.completion,
      readonly: flags.readonly || info.readonly,
      pid: process.pid,
    };
    if (json) process.stdout.write(JSON.stringify(ready) + '\n');
    else this.printReady(ready, info.capacity);

    await stopped;
  }

  private printReady(
    r: {
      socket: string;
      backend: string;
      queues: number;
      queueSize: number;
      mode: string;
      readonly: boolean;
      blockSize: number;
    },
    capacity: number,
  ): void {
    const out = [
      `${chalk.bold('stor serve')}: vhost-user-blk on ${chalk.cyan(r.socket)}`,
      `  backend   ${r.backend} (${formatSize(capacity)}, ${r.readonly ? 'read-only' : 'read-write'}, ${r.blockSize}-byte blocks)`,
      `  queues    ${r.queues} × up to ${r.queueSize} entries, completion: ${r.mode}`,
      '',
      'Connect with:',
      `  QEMU      qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\`,
      `              -chardev socket,id=vub,path=${r.socket} -device vhost-user-blk-pci,chardev=vub,num-queues=${r.queues}`,
      `  libblkio  blkio-info virtio-blk-vhost-user path=${r.socket}`,
      '',
      chalk.dim('Ctrl-C stops the server (in-flight requests drain, the socket is removed).'),
    ];
    process.stdout.write(out.join('\n') + '\n');
  }
}
