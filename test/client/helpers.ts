// What the client tests (stor info | read | write | copy and the library) share: running the stor
// CLI bounded by a timeout, starting the two servers (stor serve, qemu-storage-daemon) on an image
// file whose bytes are checked on disk, and comparing buffers with a useful message.
import { type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { STOR_BIN } from '../helpers/paths.js';
import { runBounded, type RunResult } from '../helpers/run.js';
import { cleanupSocket, startQsd, startStor, type BackendSpec, type RunningServer } from '../helpers/servers.js';

export type ServerName = 'stor' | 'qsd';
export const SERVERS: ServerName[] = ['stor', 'qsd'];

export interface CliResult extends RunResult {
  args: string[];
}

/**
 * Runs `node bin/run.js ARGS` bounded by timeoutMs (see runBounded); onSpawn sees the child process.
 */
export async function stor(
  args: string[],
  timeoutMs = 20_000,
  env: NodeJS.ProcessEnv = {},
  onSpawn?: (p: ChildProcess) => void,
): Promise<CliResult> {
  // No TTY, no colour, no debug stack traces: what a script sees.
  const r = await runBounded(process.execPath, [STOR_BIN, ...args], timeoutMs, {
    env: { ...process.env, STOR_DEBUG: '', NO_COLOR: '1', FORCE_COLOR: '0', ...env },
    onSpawn,
  });
  return { args, ...r };
}

export function describeRun(r: CliResult): string {
  const how = r.timedOut
    ? `timed out after ${r.ms} ms`
    : r.signal
      ? `killed by ${r.signal}`
      : `exit ${r.code} after ${r.ms} ms`;
  return `\`stor ${r.args.join(' ')}\` ${how}\nstdout: ${r.stdout.trim() || '(empty)'}\nstderr: ${r.stderr.trim() || '(empty)'}`;
}

/** Asserts the run ended by itself with exit 0. */
export function assertOk(r: CliResult): void {
  assert.ok(!r.timedOut && r.signal === null && r.code === 0, describeRun(r));
}

/** Parses the --json output of a successful command (oclif prints one JSON document). */
export function json(r: CliResult): Record<string, unknown> {
  try {
    return JSON.parse(r.stdout) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`stdout is not one JSON document (${String(e)}):\n${describeRun(r)}`);
  }
}

/**
 * A user-facing failure: ended by itself (no timeout, no signal) with `code`, stderr is at most two
 * lines (the error and a hint), the first starting with `stor: `, and no stack trace anywhere.
 */
export function assertCleanError(r: CliResult, code: number, message?: RegExp): void {
  const d = describeRun(r);
  assert.not.ok(r.timedOut, `hung: ${d}`);
  assert.is(r.signal, null, `killed by a signal: ${d}`);
  assert.is(r.code, code, `exit code: ${d}`);
  const lines = r.stderr.split('\n').filter((l) => l.trim().length > 0);
  assert.ok(lines.length >= 1 && lines.length <= 2, `stderr has ${lines.length} lines, want 1 or 2: ${d}`);
  assert.ok(lines[0]!.startsWith('stor: '), `stderr does not start with 'stor: ': ${d}`);
  assert.not.match(r.stderr + r.stdout, /\n\s+at .+[:(]/, `a stack trace was printed: ${d}`);
  assert.not.match(
    r.stderr,
    /TypeError|ReferenceError|RangeError|SyntaxError|ERR_[A-Z_]+/,
    `an internal error leaked: ${d}`,
  );
  if (message) assert.match(lines[0]!, message, `error text: ${d}`);
}

export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `stor-client-${name}-`));
}

/** Writes a file of `size` bytes, every byte `fill`. */
export function filledFile(path: string, size: number, fill: number): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20, fill);
    for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  } finally {
    closeSync(fd);
  }
}

/** Reads `length` bytes at `offset` of a file (short if the file is). */
export function readRange(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n <= 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** Index of the first byte where a and b differ, or -1 if equal (a length difference counts). */
export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i += 65536) {
    const end = Math.min(n, i + 65536);
    if (Buffer.from(a.buffer, a.byteOffset + i, end - i).equals(Buffer.from(b.buffer, b.byteOffset + i, end - i)))
      continue;
    for (let j = i; j < end; j++) if (a[j] !== b[j]) return j;
  }
  return a.length === b.length ? -1 : n;
}

export function assertSame(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const d = firstDiff(actual, expected);
  assert.ok(
    d === -1,
    `${what}: first difference at byte ${d} (length ${actual.length} vs ${expected.length}; ` +
      `got 0x${actual[d]?.toString(16)}, want 0x${expected[d]?.toString(16)})`,
  );
}

/** True if every byte is `fill`. */
export function allBytes(b: Uint8Array, fill: number): boolean {
  return firstDiff(b, Buffer.alloc(b.length, fill)) === -1;
}

export interface Server {
  name: ServerName;
  srv: RunningServer;
  socket: string;
  /** The image file (file backend). */
  image?: string;
  stop(): Promise<number | null>;
}

/**
 * Starts one server on a backend. A file backend is an image filled with `fill` (so "untouched"
 * differs from "zeroed"), created here and served as an existing file by both servers.
 */
export async function startServer(
  name: ServerName,
  o:
    | { queues?: number; backend: 'file'; size: number; fill: number }
    | { queues?: number; backend: 'null' | 'mem'; size: number },
): Promise<Server> {
  let dir: string | undefined;
  let image: string | undefined;
  let backend: BackendSpec;
  if (o.backend === 'file') {
    dir = tempDir('img');
    image = join(dir, 'disk.img');
    filledFile(image, o.size, o.fill);
    backend = { kind: 'file', path: image };
  } else if (o.backend === 'mem' && name === 'qsd') {
    // qemu-storage-daemon has no memory backend: a file on tmpfs.
    dir = mkdtempSync(join('/dev/shm', 'stor-client-'));
    image = join(dir, 'disk.img');
    filledFile(image, o.size, 0);
    backend = { kind: 'file', path: image };
  } else {
    backend = { kind: o.backend, size: o.size };
  }
  const opts = { backend, queues: o.queues ?? 1 };
  let srv: RunningServer;
  try {
    srv = name === 'stor' ? await startStor(opts) : await startQsd(opts);
  } catch (e) {
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    name,
    srv,
    socket: srv.socket,
    image,
    stop: async () => {
      const code = await srv.stop(5_000);
      cleanupSocket(srv.socket);
      if (dir) rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

/** Starts a server, runs fn, always stops it; the server's output is appended to a failure. */
export async function withServer(
  name: ServerName,
  o: Parameters<typeof startServer>[1],
  fn: (s: Server) => Promise<void>,
): Promise<void> {
  const s = await startServer(name, o);
  try {
    await fn(s);
  } catch (e) {
    if (e instanceof Error) e.message += `\n--- ${name} server output ---\n${s.srv.output()}`;
    await s.stop();
    throw e;
  }
  await s.stop();
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `pred(output)` holds, polling every 10 ms; rejects after timeoutMs. */
export async function waitFor(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}
