// On a VM the notify cells of a benchmark also measure the guest's idle policy (src/lib/engine/bench/host.ts):
// benchmark scripts record it, and can set guest halt polling for their duration
// (`--halt-poll-ns N|default`), restoring the old value on every way out.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { HALT_POLL_PARAM, KERNEL_DEFAULT_HALT_POLL_NS, describeIdle, hostIdle } from '../src/lib/engine/bench/host.js';

/** The header line: this machine's idle policy, and whether --halt-poll-ns set it. */
export const describeHostIdle = (haltPollArg: string | undefined): string =>
  `${describeIdle(hostIdle())}${haltPollArg === undefined ? ' (unchanged by this run)' : ' (set by --halt-poll-ns for this run)'}`;

/** Parses a --halt-poll-ns value: a count of ns, or "default" for the kernel's default. */
function parseHaltPollNs(value: string): number {
  if (value === 'default') return KERNEL_DEFAULT_HALT_POLL_NS;
  if (!/^\d+$/.test(value)) throw new Error(`--halt-poll-ns: expected a number of ns or "default", got "${value}"`);
  return Number(value);
}

/** Runs fn with guest_halt_poll_ns set as --halt-poll-ns asks (untouched without it), then puts the
 * old value back, also on SIGINT/SIGTERM. */
export async function withHaltPollNs<T>(haltPollArg: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (haltPollArg === undefined) return fn();
  const ns = parseHaltPollNs(haltPollArg);
  if (!existsSync(HALT_POLL_PARAM))
    throw new Error(
      `--halt-poll-ns: ${HALT_POLL_PARAM} does not exist (this guest does not use the haltpoll cpuidle driver)`,
    );
  const old = readFileSync(HALT_POLL_PARAM, 'utf8').trim();
  const restore = (): void => {
    try {
      writeFileSync(HALT_POLL_PARAM, old);
    } catch {
      /* the next report's header shows the value */
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    restore();
    process.kill(process.pid, sig);
  };
  try {
    writeFileSync(HALT_POLL_PARAM, String(ns));
  } catch (e) {
    throw new Error(`--halt-poll-ns: cannot write ${HALT_POLL_PARAM}: ${(e as Error).message} (needs root)`);
  }
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await fn();
  } finally {
    restore();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
