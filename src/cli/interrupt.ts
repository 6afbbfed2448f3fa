// What a one-shot command (copy, bench, read, write) does when SIGINT, SIGTERM or SIGHUP arrives:
// clear its progress line, say how far it got (`stor: copy: interrupted by SIGTERM after ...`, or a
// JSON error document on stdout with --json), run its bounded cleanup, then end as killed by that
// signal — the default action re-raised, so the shell sees 130/143/129 and a parent sees the signal,
// as cat and dd behave. A second signal ends it at once. Servers (serve) have their own, gentler
// policy: they drain and exit 0.
import { writeSync } from 'node:fs';
import { constants } from 'node:os';

export type InterruptSignal = 'SIGINT' | 'SIGTERM' | 'SIGHUP';
export const INTERRUPT_SIGNALS: readonly InterruptSignal[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface InterruptOptions {
  /** The command's name, first in the message: "copy". */
  command: string;
  json: boolean;
  /** How far the command got, e.g. "after copying 12 MiB of 64 MiB (18%)". */
  progress: () => string;
  /** Runs first, synchronously: clear a progress line. */
  before?: () => void;
  /** Awaited for at most cleanupMs before the process ends: stop children, remove temporary files. */
  cleanup?: () => Promise<void> | void;
  cleanupMs?: number;
}

/** 128 + the signal's number: the status a shell reports for a process the signal ended. */
export function signalExitCode(sig: InterruptSignal): number {
  return 128 + constants.signals[sig];
}

function say(fd: number, text: string): void {
  try {
    writeSync(fd, text);
  } catch {
    /* the terminal or pipe is gone (SIGHUP): nothing to tell */
  }
}

function endBy(sig: InterruptSignal): void {
  // With no listener left, Node restores the default action and the signal ends the process.
  for (const s of INTERRUPT_SIGNALS) process.removeAllListeners(s);
  try {
    process.kill(process.pid, sig);
  } catch {
    /* fall through */
  }
  // only reached if something still catches it
  setTimeout(() => process.exit(signalExitCode(sig)), 200);
}

/** Installs the handlers; returns a function that removes them (call it when the command is done). */
export function exitOnInterrupt(o: InterruptOptions): () => void {
  let fired = false;
  const handler = (sig: InterruptSignal): void => {
    if (fired) {
      endBy(sig);
      return;
    }
    fired = true;
    try {
      o.before?.();
    } catch {
      /* best effort */
    }
    let how = '';
    try {
      how = o.progress();
    } catch {
      /* best effort */
    }
    const message = `${o.command}: interrupted by ${sig}${how ? ` ${how}` : ''}`;
    if (o.json) say(1, JSON.stringify({ error: { code: signalExitCode(sig), message, signal: sig } }) + '\n');
    else say(2, `stor: ${message}\n`);
    const bound = new Promise<void>((r) => setTimeout(r, o.cleanupMs ?? 3000));
    Promise.race([
      Promise.resolve()
        .then(() => o.cleanup?.())
        .catch(() => undefined),
      bound,
    ]).finally(() => endBy(sig));
  };
  for (const s of INTERRUPT_SIGNALS) process.on(s, handler);
  return () => {
    for (const s of INTERRUPT_SIGNALS) process.off(s, handler);
  };
}
