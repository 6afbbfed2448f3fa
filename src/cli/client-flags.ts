// What the client commands share: turning a TARGET argument and flags into an open device, with
// errors a user can act on.
import { Flags } from '@oclif/core';
import { BlockDevice, type Completion } from '../lib/client/device.js';
import { parseTarget, TARGET_FORMS } from '../lib/core/target.js';
import { StorError, usageError } from '../lib/core/errors.js';

export const clientFlags = {
  queues: Flags.integer({ description: 'queues to use (virtqueues or io_uring instances)', default: 1, min: 1, max: 64 }),
  completion: Flags.string({ description: 'how completions are noticed: notify (the event loop sleeps on the completion fd) or poll (spin, then yield to the event loop); event is an alias of notify', options: ['notify', 'poll', 'event'], default: 'notify' }),
  timeout: Flags.integer({ description: 'control-plane reply timeout in milliseconds (vhost-user)', default: 5000, min: 1 }),
};

export const TARGET_DESCRIPTION = `what to open: ${TARGET_FORMS}`;

export async function openTarget(text: string, what: string, f: { queues: number; completion: string; timeout: number },
  extra: { readOnly?: boolean; queueSize?: number } = {}): Promise<BlockDevice> {
  const t = parseTarget(text, what);
  try {
    return await BlockDevice.open(t, {
      numQueues: f.queues, completion: f.completion as Completion, timeoutMs: f.timeout, readOnly: extra.readOnly,
      queueSize: extra.queueSize,
    });
  } catch (e) {
    // the library names its option; on the command line it is --queues
    if (e instanceof StorError && e.exitCode === 2 && e.message.startsWith('numQueues')) throw usageError('--queues', e.message.replace(/^numQueues: /, ''));
    throw e;
  }
}
