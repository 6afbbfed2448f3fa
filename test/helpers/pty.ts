// Runs stor under a real pseudo-terminal, the way a person at a terminal (or a CI runner that
// allocates a pty) runs it: util-linux `script` gives the command a pty whose size the command line
// sets with stty (0 columns is what some ptys report). Bounded like every run (runBounded); the stor
// process's pid is written to a file so a test can signal stor itself rather than `script`.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { STOR_BIN } from './paths.js';
import { runBounded, type RunResult } from './run.js';

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export interface PtyRun {
  pidFile: string;
  result: Promise<RunResult>;
}

/**
 * `script -qec "stty cols C rows 24; echo $$ > pidFile; exec node bin/run.js ARGS" /dev/null`.
 * result.code is stor's exit status (128 + n when a signal ended it); stdout holds everything
 * stor wrote to the terminal (stdout and stderr together, with \r\n line ends; the last MiB of it).
 */
export function storInPty(
  args: string[],
  o: { columns: number; pidFile: string; timeoutMs: number; env?: NodeJS.ProcessEnv },
): PtyRun {
  const cmd = `stty cols ${o.columns} rows 24; echo $$ > ${q(o.pidFile)}; exec ${q(process.execPath)} ${q(STOR_BIN)} ${args.map(q).join(' ')}`;
  const env = { ...process.env, STOR_DEBUG: '', ...o.env };
  return {
    pidFile: o.pidFile,
    result: runBounded('script', ['-qec', cmd, '/dev/null'], o.timeoutMs, { env, maxOutput: 1 << 20 }),
  };
}

/** The pid in pidFile once it is there (undefined after timeoutMs). */
export async function readPid(pidFile: string, timeoutMs: number): Promise<number | undefined> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (pid > 0) return pid;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return undefined;
}

/** Waits until process pid has a thread whose name starts with prefix (e.g. stor-copy): its native job runs. */
export async function waitForThread(pid: number, prefix: string, timeoutMs: number): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        try {
          if (readFileSync(join(`/proc/${pid}/task`, tid, 'comm'), 'utf8').startsWith(prefix)) return true;
        } catch {
          /* ended */
        }
      }
    } catch {
      return false;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}
