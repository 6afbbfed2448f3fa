// `stor bench`'s embedded server, started through the library: a null backend served over
// vhost-user-blk from a device table in a worker thread of this process (embedded-worker.ts), on a
// socket in a private temp directory. Nothing is spawned, so nothing can outlive the process; the
// temp directory is removed on stop, at exit, and on SIGINT, SIGTERM and SIGHUP, after which the
// signal takes its course (the default action, unless the application handles it too).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { StorError, type ExitCode } from '../../core/errors.js';
import type { CompletionMode } from '../../native.js';

export interface EmbeddedServerOptions {
  size: number;
  queues: number;
  mode: CompletionMode;
  /** adaptive mode's spin window (the server's --poll-us); default 64 */
  pollUs?: number;
  startTimeoutMs?: number;
}

export interface EmbeddedServer {
  socket: string;
  /** Drains and stops the export, then removes the socket directory. */
  stop(): Promise<void>;
}

const liveDirs = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let cleanupInstalled = false;

function removeLiveDirs(): void {
  for (const d of liveDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  liveDirs.clear();
}

function onSignal(sig: NodeJS.Signals): void {
  removeLiveDirs();
  // Alone on this signal: restore the default action and re-raise it, so the exit status says which
  // signal ended the run. Otherwise the application's own handler decides what happens next.
  if (process.listenerCount(sig) === 1) {
    for (const s of SIGNALS) process.removeListener(s, onSignal);
    cleanupInstalled = false;
    process.kill(process.pid, sig);
  }
}

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  for (const s of SIGNALS) process.on(s, onSignal);
  process.once('exit', removeLiveDirs);
}

function uninstallCleanupIfIdle(): void {
  if (liveDirs.size || !cleanupInstalled) return;
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  process.removeListener('exit', removeLiveDirs);
  cleanupInstalled = false;
}

export async function startEmbeddedServer(o: EmbeddedServerOptions): Promise<EmbeddedServer> {
  const dir = mkdtempSync(join(tmpdir(), 'stor-bench-'));
  liveDirs.add(dir);
  installCleanup();
  const socket = join(dir, 'bench.sock');
  const logs: string[] = [];
  const worker = new Worker(new URL('./embedded-worker.js', import.meta.url), { workerData: { ...o, socket } });
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  const cleanup = (): void => {
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    uninstallCleanupIfIdle();
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new StorError(`the embedded server did not start in ${o.startTimeoutMs ?? 15_000} ms: ${logs.join('; ')}`),
          ),
        o.startTimeoutMs ?? 15_000,
      );
      worker.on(
        'message',
        (m: { event: string; level?: string; message?: string; hint?: string; exitCode?: ExitCode }) => {
          if (m.event === 'log') {
            logs.push(`${m.level}: ${m.message}`);
            if (logs.length > 20) logs.shift();
          } else if (m.event === 'ready') {
            clearTimeout(timer);
            resolve();
          } else if (m.event === 'error') {
            clearTimeout(timer);
            reject(
              new StorError(`the embedded server did not start: ${m.message}`, { hint: m.hint, exitCode: m.exitCode }),
            );
          }
        },
      );
      worker.once('error', (e) => {
        clearTimeout(timer);
        reject(new StorError(`the embedded server failed: ${e.message}`, { cause: e }));
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new StorError(`the embedded server ended (${code}): ${logs.join('; ')}`));
      });
    });
  } catch (e) {
    await worker.terminate();
    cleanup();
    throw e;
  }
  let stopping: Promise<void> | undefined;
  return {
    socket,
    stop: () =>
      (stopping ??= (async () => {
        worker.postMessage('stop');
        const t = setTimeout(() => void worker.terminate(), 5000);
        await exited;
        clearTimeout(t);
        cleanup();
      })()),
  };
}
