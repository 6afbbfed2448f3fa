// What the client commands share: turning a TARGET argument and flags into an open device, with
// errors a user can act on.
import { Flags } from '@oclif/core';
import { BlockDevice, type Completion } from '../lib/client/device.js';
import { parseTarget, TARGET_FORMS } from '../lib/core/target.js';
import { StorError, usageError } from '../lib/core/errors.js';
import { DURATION_FORMS, parseDuration } from '../lib/core/duration.js';

/** --timeout: a duration with a unit, or a bare number of milliseconds; at least 1 ms. */
export function parseTimeout(text: string): number {
  const ms = /^\s*\d+\s*$/.test(text) ? Number(text) : parseDuration(text, '--timeout');
  if (!(ms >= 1)) throw usageError('--timeout', `'${text}' is shorter than 1 ms`, `${DURATION_FORMS}, or milliseconds`);
  return ms;
}

export const clientFlags = {
  queues: Flags.integer({
    description: 'queues to use (virtqueues or io_uring instances)',
    default: 1,
    min: 1,
    max: 64,
  }),
  completion: Flags.string({
    description:
      'how completions are noticed: notify (the event loop sleeps on the completion fd) or poll (spin, then yield to the event loop); event is an alias of notify',
    options: ['notify', 'poll', 'event'],
    default: 'notify',
  }),
  // a duration like --runtime (5s, 500ms); a bare number is milliseconds, as it always was here
  timeout: Flags.string({
    description: `control-plane reply timeout (vhost-user): ${DURATION_FORMS}, or a bare number of milliseconds`,
    default: '5s',
  }),
};

export const TARGET_DESCRIPTION = `what to open: ${TARGET_FORMS}`;

export async function openTarget(
  text: string,
  what: string,
  f: { queues: number; completion: string; timeout: string },
  extra: { readOnly?: boolean; queueSize?: number } = {},
): Promise<BlockDevice> {
  const t = parseTarget(text, what);
  try {
    return await BlockDevice.open(t, {
      numQueues: f.queues,
      completion: f.completion as Completion,
      timeoutMs: parseTimeout(f.timeout),
      readOnly: extra.readOnly,
      queueSize: extra.queueSize,
    });
  } catch (e) {
    // the library names its option; on the command line it is --queues
    if (e instanceof StorError && e.exitCode === 2 && e.message.startsWith('numQueues'))
      throw usageError('--queues', e.message.replace(/^numQueues: /, ''));
    throw e;
  }
}
