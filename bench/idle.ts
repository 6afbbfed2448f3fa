// The guest's idle policy decides what a notify loop's sleep costs on a VM. Under the cpuidle
// "haltpoll" driver, a vCPU with nothing to run polls for up to guest_halt_poll_ns before it halts;
// a halt exits to the hypervisor, and the wake-up that follows (an eventfd write from the other
// CPU) costs tens of µs instead of one. The Linux default is 200000 ns; a host that boots its guests
// with haltpoll.guest_halt_poll_ns=0 makes every sleep a halt. Benchmarks record the setting, and
// can change it for their duration (`--halt-poll-ns N`), restoring it on every way out.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const PARAM = '/sys/module/haltpoll/parameters/guest_halt_poll_ns';
const DRIVER = '/sys/devices/system/cpu/cpuidle/current_driver';

/** The kernel's default for guest_halt_poll_ns (drivers/cpuidle/governors/haltpoll.c). */
export const KERNEL_DEFAULT_HALT_POLL_NS = 200000;

const read = (path: string): string | undefined => {
  try { return readFileSync(path, 'utf8').trim(); } catch { return undefined; }
};

export interface IdleState { driver: string; haltPollNs?: number }

export function idleState(): IdleState {
  const ns = read(PARAM);
  return { driver: read(DRIVER) ?? 'unknown', haltPollNs: ns === undefined ? undefined : Number(ns) };
}

/** One line for a report header. */
export function describeIdle(s: IdleState = idleState()): string {
  if (s.haltPollNs === undefined) return `cpuidle driver ${s.driver}`;
  const note = s.haltPollNs === 0 ? ': every idle vCPU halts at once' : s.haltPollNs === KERNEL_DEFAULT_HALT_POLL_NS ? ' (the kernel default)' : '';
  return `cpuidle driver ${s.driver}, guest_halt_poll_ns=${s.haltPollNs}${note}`;
}

/** Parses a --halt-poll-ns value: a count of ns, or "default" for the kernel's default. */
export function parseHaltPollNs(value: string): number {
  if (value === 'default') return KERNEL_DEFAULT_HALT_POLL_NS;
  if (!/^\d+$/.test(value)) throw new Error(`--halt-poll-ns: expected a number of ns or "default", got "${value}"`);
  return Number(value);
}

/** Runs fn with guest_halt_poll_ns set to ns, then puts the old value back, also on SIGINT/SIGTERM. */
export async function withHaltPollNs<T>(ns: number | undefined, fn: () => Promise<T>): Promise<T> {
  if (ns === undefined) return fn();
  if (!existsSync(PARAM)) throw new Error(`--halt-poll-ns: ${PARAM} does not exist (this guest does not use the haltpoll cpuidle driver)`);
  const old = read(PARAM)!;
  const restore = (): void => { try { writeFileSync(PARAM, old); } catch { /* reported by the caller's next read */ } };
  const onSignal = (sig: NodeJS.Signals): void => { restore(); process.kill(process.pid, sig); };
  try {
    writeFileSync(PARAM, String(ns));
  } catch (e) {
    throw new Error(`--halt-poll-ns: cannot write ${PARAM}: ${(e as Error).message} (needs root)`);
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
