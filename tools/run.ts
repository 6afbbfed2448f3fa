// Runs a program the way every test and bench script needs it (through execa): output captured,
// SIGKILLed after timeoutMs (timedOut is then true), killed at process exit if still running,
// never rejecting for a non-zero exit (only when the program cannot be started at all).
import type { ChildProcess } from 'node:child_process';
import { execa } from 'execa';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  ms: number;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

export async function runBounded(
  cmd: string,
  args: string[],
  timeoutMs: number,
  opts: { env?: NodeJS.ProcessEnv; onSpawn?: (p: ChildProcess) => void; maxOutput?: number } = {},
): Promise<RunResult> {
  const t0 = Date.now();
  const sub = execa(cmd, args, {
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    reject: false,
    stripFinalNewline: false,
    // maxOutput: a runaway writer must not exhaust the test's memory (execa keeps the first bytes)
    ...(opts.maxOutput !== undefined ? { maxBuffer: opts.maxOutput } : {}),
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    forceKillAfterDelay: false,
    // an env given replaces the whole environment, as spawn's does
    ...(opts.env ? { env: opts.env, extendEnv: false } : {}),
  });
  const proc = sub as unknown as ChildProcess;
  live.add(proc);
  opts.onSpawn?.(proc);
  const r = await sub;
  live.delete(proc);
  // could not start at all (no such program, not executable): an error, as spawn's 'error' was
  if (r.failed && r.exitCode === undefined && r.signal === undefined && !r.timedOut)
    throw r.cause ?? new Error(r.message);
  return {
    code: r.exitCode ?? null,
    signal: (r.signal as NodeJS.Signals | undefined) ?? null,
    timedOut: r.timedOut,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    ms: Date.now() - t0,
  };
}
