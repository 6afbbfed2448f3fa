import { Args } from '@oclif/core';
import chalk from 'chalk';
import { StorCommand } from '../cli/command.js';
import { clientFlags, openTarget, TARGET_DESCRIPTION } from '../cli/client-flags.js';
import { StorError } from '../lib/core/errors.js';
import { formatSize } from '../lib/core/size.js';
import type { Properties } from '../lib/client/device.js';

/** libblkio's property names, for --json and the table (so output reads like blkio-info's). */
export function propertiesAsBlkio(p: Properties): Record<string, string | number | boolean | string[]> {
  return {
    driver: p.driver,
    target: p.target,
    capacity: p.capacity,
    'request-alignment': p.requestAlignment,
    'buf-alignment': p.bufAlignment,
    'optimal-io-alignment': p.optimalIoAlignment,
    'optimal-io-size': p.optimalIoSize,
    'max-transfer': p.maxTransfer,
    'max-queues': p.maxQueues,
    'num-queues': p.numQueues,
    'max-segments': p.maxSegments,
    'read-only': p.readOnly,
    'can-discard': p.canDiscard,
    'can-write-zeroes': p.canWriteZeroes,
    'discard-alignment': p.discardAlignment,
    'max-discard-len': p.maxDiscardLength,
    'max-write-zeroes-len': p.maxWriteZeroesLength,
    'max-mem-regions': p.maxMemRegions,
    'needs-mem-regions': p.needsMemRegions,
    features: p.features,
  };
}

export default class Info extends StorCommand {
  static override summary = 'Show what a block target offers: capacity, queues, segments, alignment, features';
  static override description =
    'Opens the target the way an application would (libblkio-style) and prints its properties, named as libblkio names them.';
  static override examples = [
    '<%= config.bin %> info vhost-user:/tmp/stor.sock',
    '<%= config.bin %> info /var/tmp/disk.img --json',
  ];
  static override args = { target: Args.string({ description: TARGET_DESCRIPTION, required: true }) };
  static override flags = { ...clientFlags };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Info);
    let dev;
    try {
      dev = await openTarget(args.target, 'target', flags);
    } catch (e) {
      // An image another process has open for writing (its "write" lock, stor's or QEMU's) can still be
      // looked at, as qemu-img info does: read-only, sharing every permission.
      if (!(e instanceof StorError && e.errno === 16)) throw e;
      dev = await openTarget(args.target, 'target', flags, { readOnly: true });
      process.stderr.write(`stor: note: opened read-only: ${e.message.replace(/^cannot open backend: /, '')}\n`);
    }
    const props = propertiesAsBlkio(dev.properties);
    await dev.close();
    if (!this.jsonEnabled()) {
      const width = Math.max(...Object.keys(props).map((k) => k.length));
      const lines = Object.entries(props).map(([k, v]) => {
        let s = Array.isArray(v) ? v.join(' ') : String(v);
        if (
          (k === 'capacity' || k.startsWith('max-discard') || k.startsWith('max-write')) &&
          typeof v === 'number' &&
          v > 0
        )
          s += chalk.dim(` (${formatSize(v)})`);
        return `${k.padEnd(width)}  ${s}`;
      });
      process.stdout.write(lines.join('\n') + '\n');
    }
    return props;
  }
}
