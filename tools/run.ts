// Runs programs the way every test and bench script needs them (through execa), killed at process
// exit if still running. runBounded: output captured, SIGKILLed after timeoutMs (timedOut is then
// true), never rejecting for a non-zero exit (only when the program cannot be started at all).
// spawnChild: a long-lived child (a server, a QEMU guest) whose output is streamed to the caller and
// whose end is reported once its output has all been read.
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

/** How a spawnChild child ended; error: it could not be started at all (code and signal null). */
export interface ChildEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

export interface SpawnedChild {
  proc: ChildProcess;
  /** Resolves once the child is gone and its output read (never rejects). */
  ended: Promise<ChildEnd>;
}

/**
 * Starts a long-lived child with stdin closed and stdout and stderr piped to onOutput as text, as it
 * comes. The caller does any killing (besides the kill at process exit). `ended` resolves at 'close',
 * when both pipes are drained: 'exit' can come first, and a reason reported then would lose the
 * child's last words. Something else holding the pipes (a grandchild) delays 'close' indefinitely,
 * so it resolves 1 s after 'exit' at the latest.
 */
export function spawnChild(cmd: string, args: string[], onOutput: (text: string) => void): SpawnedChild {
  const proc = execa(cmd, args, {
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    cleanup: false,
    // the caller owns the escalation (SIGTERM, then SIGKILL after its own delay): execa's default SIGKILL
    // 5 s after any kill() cut qemu-storage-daemon's rbd shutdown short, leaving the image's lock and
    // watch behind for the next server
    forceKillAfterDelay: false,
  }) as unknown as ChildProcess;
  live.add(proc);
  const onData = (d: Buffer): void => onOutput(d.toString());
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const ended = new Promise<ChildEnd>((resolve) => {
    proc.once('error', (error) => {
      if (proc.pid !== undefined) return; // started: 'exit' and 'close' follow
      live.delete(proc);
      resolve({ code: null, signal: null, error });
    });
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      setTimeout(() => resolve({ code, signal }), 1000).unref();
    });
    proc.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal }));
  });
  return { proc, ended };
}
