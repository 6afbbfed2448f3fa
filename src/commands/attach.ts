import { Flags } from '@oclif/core';
import chalk from 'chalk';
import { StorCommand } from '../cli/command.js';
import { usageError } from '../lib/core/errors.js';
import { formatSize } from '../lib/core/size.js';
import { BACKEND_FORMS } from '../lib/core/spec.js';
import type { CompletionMode } from '../lib/core/completion.js';
import { listAttached } from '../lib/export/attached.js';
import type { AttachLogLevel, AttachOptions } from '../lib/export/attach-options.js';
import { attachUblk } from '../lib/export/ublk/attach.js';
import { attachVduse } from '../lib/export/vduse/attach.js';

export default class Attach extends StorCommand {
  static override summary = 'Attach a backend as a kernel block device (VDUSE /dev/vdX or ublk /dev/ublkbN)';
  static override description = `Runs in the foreground like stor serve: the disk exists while stor runs; SIGINT/SIGTERM drain in-flight I/O and remove it.
--vduse needs Linux >= 5.15 with the vduse and virtio_vdpa modules; --ublk needs Linux >= 6.0 with ublk_drv. Both need root.
--list shows the disks stor has attached on this machine, including ones left behind by a killed process.`;
  static override examples = [
    '<%= config.bin %> attach --vduse --backend file:/var/tmp/disk.img,create=1G --name disk0',
    '<%= config.bin %> attach --ublk --backend mem:1G --queues 2 --json',
    '<%= config.bin %> attach --ublk --recover --id 0',
    '<%= config.bin %> attach --list',
  ];

  static override flags = {
    vduse: Flags.boolean({ description: 'attach through VDUSE and vDPA as /dev/vdX', exclusive: ['ublk', 'list'] }),
    ublk: Flags.boolean({ description: 'attach through ublk as /dev/ublkbN', exclusive: ['vduse', 'list'] }),
    list: Flags.boolean({
      description: 'list the disks stor has attached on this machine',
      exclusive: ['vduse', 'ublk'],
    }),
    backend: Flags.string({ description: `what to attach: ${BACKEND_FORMS}` }),
    name: Flags.string({ description: 'VDUSE device name (default: stor-<pid>)' }),
    id: Flags.integer({ description: 'ublk device id (default: the kernel picks one)', min: 0, max: 1_048_575 }),
    queues: Flags.integer({
      description: 'number of queues (one native thread each), 1..64',
      default: 1,
      min: 1,
      max: 64,
    }),
    'queue-size': Flags.integer({
      description: 'VDUSE virtqueue size / ublk queue depth (power of 2)',
      default: 128,
      aliases: ['depth'],
    }),
    readonly: Flags.boolean({ description: 'refuse writes; the kernel sees a read-only disk', default: false }),
    'block-size': Flags.string({ description: 'logical block size', options: ['512', '4096'], default: '512' }),
    completion: Flags.string({
      description: 'completion mode of the queue threads: notify, poll, adaptive',
      options: ['notify', 'poll', 'adaptive'],
      default: 'adaptive',
      aliases: ['mode'],
    }),
    serial: Flags.string({
      description: 'serial number (VDUSE: VIRTIO_BLK_T_GET_ID, at most 20 bytes)',
      default: 'stor',
    }),
    recover: Flags.boolean({
      description: 'attach a new server to a disk whose server died (ublk: user recovery; VDUSE: reconnect)',
      default: false,
      aliases: ['reconnect'],
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Attach);
    const json = this.jsonEnabled();
    if (flags.list) return this.list(json);
    if (!flags.vduse && !flags.ublk)
      throw usageError('attach', 'say which kernel interface', '--vduse, --ublk or --list');
    if (!flags.backend && !flags.recover) throw usageError('--backend', 'missing', BACKEND_FORMS);
    const qs = flags['queue-size'];
    if (qs < 1 || qs > 32768 || qs & (qs - 1))
      throw usageError('--queue-size', `${qs} is not a power of 2 from 1 to 32768`, 'e.g. 64, 128, 256');
    if (Buffer.byteLength(flags.serial) > 20)
      throw usageError('--serial', `'${flags.serial}' is longer than 20 bytes`, 'up to 20 bytes');
    const log = (level: AttachLogLevel, message: string): void => {
      if (json)
        process.stderr.write(JSON.stringify({ event: 'log', level, message, time: new Date().toISOString() }) + '\n');
      else {
        const tag =
          level === 'error' ? chalk.red('error') : level === 'warn' ? chalk.yellow('warn ') : chalk.dim('info ');
        process.stderr.write(`${chalk.dim(new Date().toISOString())} ${tag} ${message}\n`);
      }
    };
    const opts: AttachOptions = {
      backend: flags.backend ?? '',
      name: flags.name,
      id: flags.id,
      queues: flags.queues,
      queueSize: qs,
      readonly: flags.readonly,
      blockSize: Number(flags['block-size']) as 512 | 4096,
      completion: flags.completion as CompletionMode,
      serial: flags.serial,
      recover: flags.recover,
      json,
      log,
      ready: (info) => {
        if (json) process.stdout.write(JSON.stringify({ event: 'ready', ...info }) + '\n');
        else
          process.stdout.write(
            `${chalk.bold('stor attach')}: ${chalk.cyan(String(info.device))} (${formatSize(Number(info.capacity))}, ` +
              `${info.queues} queue(s)) backed by ${info.backend}\n` +
              chalk.dim('Ctrl-C detaches the disk (in-flight requests drain first).') +
              '\n',
          );
      },
      stopped: (info) => {
        if (json) process.stdout.write(JSON.stringify({ event: 'stopped', ...info }) + '\n');
        else process.stderr.write(`stopped: ${String(info.device ?? '')} detached\n`);
      },
    };
    if (flags.vduse) await attachVduse(opts);
    else await attachUblk(opts);
  }

  private list(json: boolean): void {
    const disks = listAttached();
    if (json) {
      process.stdout.write(JSON.stringify({ disks }) + '\n');
      return;
    }
    if (!disks.length) {
      process.stdout.write('no disks attached by stor\n');
      return;
    }
    const rows = disks.map((d) => [
      d.transport,
      d.name,
      d.node || '-',
      formatSize(d.capacity),
      d.alive ? String(d.pid) : chalk.yellow(`${d.pid} (dead)`),
      d.backend,
    ]);
    const head = ['TRANSPORT', 'NAME', 'DEVICE', 'SIZE', 'PID', 'BACKEND'];
    const widths = head.map((h, i) =>
      Math.max(h.length, ...rows.map((r) => r[i].replace(/\x1b\[[0-9;]*m/g, '').length)),
    );
    const line = (r: string[]): string =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(widths[i] - c.replace(/\x1b\[[0-9;]*m/g, '').length)))
        .join('  ');
    process.stdout.write([line(head), ...rows.map(line)].join('\n') + '\n');
  }
}
