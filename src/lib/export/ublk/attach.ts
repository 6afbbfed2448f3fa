// `stor attach --ublk`: a backend (any target, vhost-user: included, as a bridge) as /dev/ublkbN, in
// the foreground like `stor serve`. The disk's spec is saved under /run/stor/attach when it is live,
// so that `stor attach --list` shows it and `stor attach --ublk --recover --id N` can serve it again
// after this process died (the kernel keeps the disk quiesced, with its requests, until then).
// SIGINT/SIGTERM: STOP_DEV drains in-flight requests through our queues, the backend is flushed,
// DEL_DEV removes the disk, exit 0.
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { BlockDevice } from '../../client/device.js';
import { StorError, usageError } from '../../core/errors.js';
import { formatTarget, parseTarget, type Target } from '../../core/target.js';
import type { AttachOptions } from '../attach-options.js';
import { readAttached, removeAttached, saveAttached, type AttachedRecord } from '../attached.js';
import { assertUblkAvailable, UblkDisk } from './disk.js';

/** Opens the backend of a disk: every target form, vhost-user: included (as a client of that server). */
async function openTarget(t: Target, queues: number, depth: number, readonly: boolean): Promise<BlockDevice> {
  return BlockDevice.open(t, {
    numQueues: queues,
    queueSize: Math.max(2, depth),
    readOnly: readonly || undefined,
  });
}

/** Whether someone holds the disk open exclusively (a mounted filesystem, mkfs, another exclusive opener). */
function openedExclusively(device: string): boolean {
  try {
    closeSync(openSync(device, fsc.O_RDONLY | fsc.O_EXCL | fsc.O_NONBLOCK));
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EBUSY';
  }
}

export async function attachUblk(opts: AttachOptions): Promise<void> {
  if (opts.queueSize > 4096)
    throw usageError('--depth', `${opts.queueSize} is more than ublk's queue depth limit`, '1 to 4096');
  if (opts.recover && opts.id === undefined)
    throw usageError('--recover', 'needs the device id', '--ublk --recover --id N');

  let record: AttachedRecord | undefined;
  let target: Target;
  let queues = opts.queues;
  let depth = opts.queueSize;
  let blockSize = opts.blockSize;
  let readonly = opts.readonly;
  if (opts.recover) {
    record = readAttached('ublk', String(opts.id));
    const given = opts.backend ? parseTarget(opts.backend, '--backend') : undefined;
    if (!record && !given)
      throw new StorError(`attach --ublk --recover: no saved spec for ublk device ${opts.id}`, {
        hint: 'give --backend with the spec the disk was attached with',
      });
    if (record && given && formatTarget(given) !== record.backend)
      throw usageError(
        '--backend',
        `'${formatTarget(given)}' is not the backend ublk device ${opts.id} was attached with`,
        record.backend,
      );
    target = given ?? parseTarget(record!.backend, 'the saved spec');
    if (record) {
      queues = record.queues;
      depth = Number(record.options.queueSize ?? depth);
      blockSize = Number(record.options.blockSize ?? blockSize) as 512 | 4096;
      readonly = Boolean(record.options.readonly ?? readonly);
    }
    if (target.kind === 'mem')
      throw new StorError(
        `attach --ublk --recover: ublk device ${opts.id} was served from mem:, which died with its server`,
        {
          hint: 'its data is gone; stop the disk instead (it is quiesced: nothing reaches it)',
        },
      );
  } else {
    target = parseTarget(opts.backend, '--backend');
  }

  // the backend first: a bad spec is reported as such on any machine
  const dev = await openTarget(target, queues, depth, readonly);
  try {
    assertUblkAvailable();
  } catch (e) {
    await dev.close();
    throw e;
  }
  let disk: UblkDisk;
  const log = (level: 'info' | 'warn' | 'error', message: string) => opts.log(level, message);
  try {
    disk = opts.recover
      ? await UblkDisk.recover(opts.id!, dev.backend, { blockSize, readonly, mode: opts.completion, log })
      : UblkDisk.create(dev.backend, {
          id: opts.id,
          queues,
          depth,
          blockSize,
          readonly,
          mode: opts.completion,
          log,
        });
  } catch (e) {
    await dev.close();
    throw e;
  }
  const spec = formatTarget(target);
  saveAttached({
    transport: 'ublk',
    name: String(disk.id),
    node: disk.device,
    backend: spec,
    pid: process.pid,
    capacity: disk.capacity,
    queues: disk.queues,
    options: { queueSize: disk.depth, blockSize, readonly: disk.readonly, completion: opts.completion },
    createdAt: record?.createdAt ?? new Date().toISOString(),
  });
  if (opts.recover) log('info', `recovered ublk device ${disk.id}: reissued requests are being served`);
  opts.ready({
    device: disk.device,
    id: disk.id,
    capacity: disk.capacity,
    queues: disk.queues,
    depth: disk.depth,
    blockSize,
    readonly: disk.readonly,
    backend: spec,
    recovered: opts.recover,
    pid: process.pid,
  });

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    // keeps the event loop alive while the native threads serve the disk
    const keepAlive = setInterval(() => {}, 1 << 30);
    const stop = (sig: NodeJS.Signals) => {
      clearInterval(keepAlive);
      process.removeAllListeners('SIGINT');
      process.removeAllListeners('SIGTERM');
      resolve(sig);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  const busy = openedExclusively(disk.device);
  if (busy) log('warn', `${disk.device} is still in use (mounted?): its users will see I/O errors from now on`);
  const stats = disk.stats();
  const { stillOpen } = disk.stop();
  if (stillOpen) log('warn', `${disk.device} is still open: the kernel frees ublk id ${disk.id} when it is closed`);
  removeAttached('ublk', String(disk.id));
  await dev.close();
  const total = stats.reduce((a, q) => ({ requests: a.requests + q.requests, errors: a.errors + q.errors }), {
    requests: 0,
    errors: 0,
  });
  opts.stopped({ device: disk.device, id: disk.id, signal, inUse: busy || stillOpen, ...total, queues: stats });
}
