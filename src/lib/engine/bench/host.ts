// What the machine does when a thread sleeps. On a VM this decides what a notify loop costs: under
// the cpuidle "haltpoll" driver an idle vCPU polls for up to guest_halt_poll_ns before it halts, and
// a halted vCPU's wake-up (an eventfd write from the other CPU) exits to the hypervisor and costs
// tens of µs instead of one. Linux's default is 200000 ns; hosts that boot guests with
// haltpoll.guest_halt_poll_ns=0 make every sleep a halt.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export const HALT_POLL_PARAM = '/sys/module/haltpoll/parameters/guest_halt_poll_ns';
const CPUIDLE_DRIVER = '/sys/devices/system/cpu/cpuidle/current_driver';

/** The kernel's default for guest_halt_poll_ns (drivers/cpuidle/governors/haltpoll.c). */
export const KERNEL_DEFAULT_HALT_POLL_NS = 200000;

export interface HostIdle {
  cpus: number;
  /** the cpuidle driver in use ("haltpoll", "intel_idle", "acpi_idle", ...), or "none" */
  cpuidleDriver: string;
  /** guest halt polling window in ns when the haltpoll driver is loaded, else null */
  guestHaltPollNs: number | null;
}

const readTrimmed = (path: string): string | undefined => {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
};

export function hostIdle(): HostIdle {
  const ns = readTrimmed(HALT_POLL_PARAM);
  return {
    cpus: cpus().length,
    cpuidleDriver: readTrimmed(CPUIDLE_DRIVER) ?? 'none',
    guestHaltPollNs: ns === undefined || !/^\d+$/.test(ns) ? null : Number(ns),
  };
}

/** One line for a report header. */
export function describeIdle(h: HostIdle): string {
  if (h.guestHaltPollNs === null) return `cpuidle driver ${h.cpuidleDriver}`;
  const note =
    h.guestHaltPollNs === 0
      ? ': idle vCPUs halt at once'
      : h.guestHaltPollNs === KERNEL_DEFAULT_HALT_POLL_NS
        ? ' (the kernel default)'
        : '';
  return `cpuidle driver ${h.cpuidleDriver}, guest_halt_poll_ns=${h.guestHaltPollNs}${note}`;
}

/** A warning for results that include sleeping completion modes, or undefined when there is none. */
export function sleepCostWarning(h: HostIdle): string | undefined {
  if (h.guestHaltPollNs !== 0) return undefined;
  return (
    'this guest halts idle vCPUs at once (haltpoll guest_halt_poll_ns=0): every sleep of a notify loop is a ' +
    `VM exit, which dominates notify latency; the kernel's default is ${KERNEL_DEFAULT_HALT_POLL_NS} (see ${HALT_POLL_PARAM})`
  );
}
