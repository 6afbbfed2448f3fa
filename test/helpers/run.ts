// Runs a program the way every test needs it: output captured, SIGKILLed after timeoutMs (timedOut
// is then true), killed at process exit if still running, never rejecting for a non-zero exit.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  ms: number;
}

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });

export function runBounded(cmd: string, args: string[], timeoutMs: number,
  opts: { env?: NodeJS.ProcessEnv; onSpawn?: (p: ChildProcess) => void; maxOutput?: number } = {}): Promise<RunResult> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const so: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) };
    const proc = spawn(cmd, args, so);
    live.add(proc);
    opts.onSpawn?.(proc);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    // maxOutput: keep only the last maxOutput characters of each stream (a runaway writer must not
    // exhaust the test's memory)
    const cap = (s: string): string => (opts.maxOutput !== undefined && s.length > opts.maxOutput ? s.slice(-opts.maxOutput) : s);
    proc.stdout!.on('data', (d: Buffer) => { stdout = cap(stdout + d.toString()); });
    proc.stderr!.on('data', (d: Buffer) => { stderr = cap(stderr + d.toString()); });
    const timer = setTimeout(() => { timedOut = true; proc.kill('SIGKILL'); }, timeoutMs);
    proc.once('error', (e) => { clearTimeout(timer); live.delete(proc); reject(e); });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(proc);
      resolve({ code, signal, timedOut, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}
