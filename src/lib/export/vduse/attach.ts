// `stor attach --vduse`: a backend as a kernel virtio-blk disk through VDUSE (issue #11), in the
// foreground like `stor serve`. Checks the kernel and the name (a device left behind by a killed stor
// is removed first; anyone else's is refused), opens the backend (any target the client opens,
// vhost-user: included, which bridges a vhost-user-blk server into the kernel), creates and attaches
// the disk, records it for `stor attach --list`, prints the ready line, and on SIGINT/SIGTERM removes
// it again: the kernel drains in-flight I/O, the device goes, the record goes. A disk still mounted
// at that point is synced first and the exit status says so (1).
// --reconnect --name NAME takes over a disk whose stor died (the kernel keeps the device, its rings and
// /dev/vdX until VDUSE_DESTROY_DEV): the same backend (from the record; --backend only if it matches),
// the same options, the rings resumed from the ring state and the inflight log the dead server kept.
import { execa } from 'execa';
import { StorError, usageError } from '../../core/errors.js';
import { formatTarget, parseTarget } from '../../core/target.js';
import { BlockDevice } from '../../client/device.js';
import { SPIN_US_DEFAULT } from '../../core/completion.js';
import type { AttachOptions } from '../attach-options.js';
import { readAttached, removeAttached, saveAttached, type AttachedRecord } from '../attached.js';
import { VduseBlkExport, checkVduse, diskUsers, inflightLogPath, removeLeftover, vduseDeviceExists } from './export.js';

/** What a VDUSE device (and vDPA device) may be called here: the kernel allows more, paths do not. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** For --reconnect: the disk's record, its backend and options, checked against what was given. */
function reconnectPlan(opts: AttachOptions): { record: AttachedRecord; opts: AttachOptions } {
  const name = opts.name;
  if (!name)
    throw usageError('--name', 'missing: --reconnect needs the name of the disk', 'stor attach --list shows them');
  if (!NAME.test(name))
    throw usageError('--name', `'${name}' is not a device name`, 'letters, digits, . _ - (up to 64, e.g. disk0)');
  checkVduse();
  const record = readAttached('vduse', name);
  if (!record || !vduseDeviceExists(name))
    throw usageError(
      '--name',
      `no VDUSE disk named ${name} was left by stor${record ? ' (its record is, the device is gone)' : ''}`,
      'the name of a dead disk in stor attach --list',
    );
  if (record.alive && record.pid !== process.pid)
    throw usageError('--name', `VDUSE device ${name} is in use by stor (pid ${record.pid})`, 'a disk whose stor died');
  if (opts.backend) {
    const given = formatTarget(parseTarget(opts.backend, '--backend'));
    if (given !== record.backend)
      throw usageError(
        '--backend',
        `'${given}' is not the backend of ${name} (${record.backend})`,
        `--backend ${record.backend}, or no --backend`,
      );
  }
  const o = record.options as Partial<{
    queueSize: number;
    blockSize: 512 | 4096;
    readonly: boolean;
    serial: string;
    completion: AttachOptions['completion'];
  }>;
  return {
    record,
    opts: {
      ...opts,
      backend: record.backend,
      queues: record.queues,
      queueSize: o.queueSize ?? opts.queueSize,
      blockSize: o.blockSize ?? opts.blockSize,
      readonly: o.readonly ?? opts.readonly,
      serial: o.serial ?? opts.serial,
      completion: o.completion ?? opts.completion,
    },
  };
}

export async function attachVduse(given: AttachOptions): Promise<void> {
  const { log } = given;
  const reconnecting = given.recover ? reconnectPlan(given) : undefined;
  const opts = reconnecting?.opts ?? given;
  const name = opts.name ?? `stor-${process.pid}`;
  if (!NAME.test(name))
    throw usageError('--name', `'${name}' is not a device name`, 'letters, digits, . _ - (up to 64, e.g. disk0)');
  const target = parseTarget(opts.backend, '--backend');
  if (!reconnecting) {
    checkVduse();
    // The name: ours from a dead process → remove it; a live stor's or anyone else's → refuse.
    const record = readAttached('vduse', name);
    if (vduseDeviceExists(name)) {
      if (record?.alive && record.pid !== process.pid)
        throw usageError('--name', `VDUSE device ${name} is in use by stor (pid ${record.pid})`, 'another --name');
      if (!record)
        throw usageError(
          '--name',
          `a VDUSE device named ${name} already exists (not attached by stor)`,
          `another --name (or remove it: vdpa dev del ${name}, then its owner)`,
        );
      log('warn', `${name}: left behind by stor pid ${record.pid} (dead): removing it`);
      await removeLeftover(name, record.queues, log);
      removeAttached('vduse', name);
    } else if (record && !record.alive) {
      removeAttached('vduse', name); // the device went with its process; only the record was left
    }
  }

  const dev = await BlockDevice.open(target, {
    numQueues: opts.queues,
    queueSize: opts.queueSize,
    readOnly: opts.readonly,
  });
  const props = dev.properties;
  const readonly = opts.readonly || props.readOnly;
  const backendSpec = formatTarget(target);

  // Signals are caught from here on: a SIGTERM while the disk is being made still removes it.
  let signal: string | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (sig: string) => (): void => {
    if (signal) return;
    signal = sig;
    wake?.();
  };
  const onInt = onSignal('SIGINT');
  const onTerm = onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);

  const exp = new VduseBlkExport({
    name,
    backend: dev.backend,
    capacity: props.capacity,
    readonly,
    queues: opts.queues,
    queueSize: opts.queueSize,
    blockSize: opts.blockSize,
    serial: opts.serial,
    mode: opts.completion,
    spinUs: SPIN_US_DEFAULT,
    inflightLog: inflightLogPath(name),
    log,
  });
  const rec: AttachedRecord = {
    transport: 'vduse',
    name,
    node: '',
    backend: backendSpec,
    pid: process.pid,
    capacity: props.capacity,
    queues: opts.queues,
    options: {
      queueSize: opts.queueSize,
      blockSize: opts.blockSize,
      readonly,
      serial: opts.serial,
      completion: opts.completion,
    },
    createdAt: reconnecting?.record.createdAt ?? new Date().toISOString(),
  };
  let failure: unknown;
  let users: string[] = [];
  try {
    let node: string;
    if (reconnecting) {
      node = exp.reconnect();
      log('info', `${name}: reconnected to ${node} (stor pid ${reconnecting.record.pid} died)`);
    } else {
      exp.create();
      saveAttached(rec); // before the disk exists: a crash from here on leaves a record to clean up by
      node = await exp.attach();
    }
    saveAttached({ ...rec, node });
    if (!signal) {
      opts.ready({
        transport: 'vduse',
        device: node,
        name,
        backend: backendSpec,
        capacity: props.capacity,
        blockSize: opts.blockSize,
        queues: opts.queues,
        queueSize: opts.queueSize,
        readonly,
        completion: opts.completion,
        pid: process.pid,
      });
      // the rings run in native threads the event loop does not see: hold it open until a signal
      const keepAlive = setInterval(() => {}, 1 << 30);
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      clearInterval(keepAlive);
    }
    log('info', `${signal}: detaching ${node} (in-flight requests drain first)`);
    users = diskUsers(node);
    if (users.length) {
      // Removing a disk under a filesystem loses what it has not written yet: write it now.
      log('error', `${node} is still in use (${users.join(', ')}): syncing before it goes`);
      await execa('sync', [], { reject: false, timeout: 120_000 });
    }
  } catch (e) {
    failure = e;
  }
  const stats = exp.stats();
  try {
    await exp.detach();
  } catch (e) {
    failure ??= e;
  }
  await dev.close();
  // a reconnect that failed leaves the disk as it found it, record included (another try may work)
  if (!reconnecting || exp.node) removeAttached('vduse', name);
  process.off('SIGINT', onInt);
  process.off('SIGTERM', onTerm);
  if (failure) throw failure;
  const total = stats.reduce((a, s) => ({ requests: a.requests + s.requests, errors: a.errors + s.errors }), {
    requests: 0,
    errors: 0,
  });
  opts.stopped({ device: exp.node, name, signal, ...total, queues: stats });
  if (users.length)
    throw new StorError(`detach: ${exp.node} was still in use (${users.join(', ')})`, {
      hint: 'synced and removed; unmount the disk before stopping stor next time',
    });
}
