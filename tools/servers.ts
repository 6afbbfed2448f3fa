// Starts (through execa) the servers every peer test and bench script runs against: stor's own
// (`stor serve`, `stor daemon`) and the references, qemu-storage-daemon and SPDK's spdk_tgt. All are
// bounded: start times out, stop() sends SIGTERM and then SIGKILL, and every started server is killed
// at process exit (run.ts's spawnChild starts them).
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from './paths.js';
import { spawnChild } from './run.js';
import { formatSpec } from '../src/lib/core/spec.js';
import { JsonRpcClient } from '../src/lib/rpc/jsonrpc.js';
import { requireSpdk, SPDK_MEMORY_FLAGS } from './spdk.js';
import { rbdSpec } from '../src/lib/core/target.js';

export type BackendSpec =
  | {
      kind: 'null';
      size: number;
      /** false: reads leave buffers untouched (both servers) */
      readZeroes?: boolean;
      /** qemu-storage-daemon only (null-co latency-ns): every request completes this late */
      latencyNs?: number;
    }
  | { kind: 'mem'; size: number }
  | {
      kind: 'file';
      path: string;
      create?: number;
      direct?: boolean;
      ringSize?: number;
      /** the file driver's locking= (QEMU-compatible image locks; both servers take it; default auto). */
      locking?: 'on' | 'off' | 'auto';
      /** qemu-storage-daemon only: discard=unmap (QEMU ignores discards by default); stor always punches holes. */
      discard?: boolean;
      /** stor only: fault-injection properties (delay-us, delay-jitter-us, error-rate, ...: native/bdev/fault.c). */
      faults?: Record<string, string>;
    }
  | {
      /** a Ceph RBD image (stor's rbd backend, qemu-storage-daemon's rbd driver from qemu-block-extra) */
      kind: 'rbd';
      /** POOL/IMAGE */
      image: string;
      conf?: string;
      id?: string;
      keyring?: string;
    };

export interface ServerOptions {
  backend: BackendSpec;
  queues?: number;
  readonly?: boolean;
  /** stor only: completion mode of the server's queue threads. */
  mode?: 'notify' | 'poll' | 'adaptive';
  socket?: string;
  /**
   * qemu-storage-daemon only: run the export in an iothread (what the benchmarks compare against),
   * with this poll-max-ns (undefined: QEMU's default adaptive polling).
   */
  qsdIothread?: { pollMaxNs?: number };
  extraArgs?: string[];
  startTimeoutMs?: number;
}

export type ServerName = 'stor' | 'qsd' | 'spdk' | 'stor-daemon';

export interface RunningServer<N extends ServerName = 'stor' | 'qsd'> {
  name: N;
  socket: string;
  pid: number;
  proc: ChildProcess;
  /** Everything the server wrote to stdout and stderr so far. */
  output(): string;
  /** Resident set size in KiB, read from /proc. */
  rssKiB(): number;
  /** SIGTERM, wait up to timeoutMs, then SIGKILL. Resolves to the exit code (null if killed). */
  stop(timeoutMs?: number): Promise<number | null>;
}

function tmpSocket(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `stor-${name}-`));
  return join(dir, `${name}.sock`);
}

export function storBackendArg(b: BackendSpec): string {
  switch (b.kind) {
    case 'null':
      if (b.latencyNs) throw new Error("stor's null backend has no latency: use qemu-storage-daemon's null-co");
      return formatSpec({
        driver: 'null',
        props: { size: String(b.size), ...(b.readZeroes === false ? { 'read-zeroes': 'off' } : {}) },
      });
    case 'mem':
      return formatSpec({ driver: b.kind, props: { size: String(b.size) } });
    case 'file': {
      const props: Record<string, string> = { path: b.path };
      if (b.create !== undefined) props.create = String(b.create);
      if (b.direct) props.direct = 'on';
      if (b.ringSize) props['ring-size'] = String(b.ringSize);
      if (b.locking) props.locking = b.locking;
      Object.assign(props, b.faults ?? {});
      return formatSpec({ driver: 'file', props });
    }
    case 'rbd':
      return formatSpec(rbdSpec({ ...b, readonly: false }));
  }
}

function launch<N extends ServerName>(
  name: N,
  cmd: string,
  args: string[],
  socket: string,
  ready: (out: string) => boolean,
  timeoutMs: number,
  probe?: () => Promise<boolean>,
): Promise<RunningServer<N>> {
  return new Promise((resolve, reject) => {
    // stop() and run.ts's exit hook do the killing
    let out = '';
    let settled = false;
    const onOutput = (text: string): void => {
      out += text;
      if (!settled && ready(out)) {
        settled = true;
        clearTimeout(timer);
        resolve(server);
      }
    };
    const { proc, ended } = spawnChild(cmd, args, onOutput);
    const server: RunningServer<N> = {
      name,
      socket,
      proc,
      pid: proc.pid ?? -1,
      output: () => out,
      rssKiB: () => {
        try {
          const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'));
          return m ? Number(m[1]) : 0;
        } catch {
          return 0;
        }
      },
      stop: (stopMs = 10_000) =>
        new Promise((res) => {
          if (proc.exitCode !== null || proc.signalCode !== null) {
            res(proc.exitCode);
            return;
          }
          const t = setTimeout(() => proc.kill('SIGKILL'), stopMs);
          proc.once('exit', (code) => {
            clearTimeout(t);
            res(code);
          });
          proc.kill('SIGTERM');
        }),
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      proc.kill('SIGKILL');
      reject(new Error(`${name} did not become ready in ${timeoutMs} ms; output:\n${out}`));
    }, timeoutMs);
    // reported once its output is read, so the server's own reason is in the message
    void ended.then(({ code, signal, error }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const how = error ? `could not be started: ${error.message}` : `exited (${code ?? signal}) before ready`;
      reject(new Error(`${name} ${how}; output:\n${out}`));
    });
    // a server that says nothing when ready (spdk_tgt) is asked, one probe at a time, until it answers
    if (probe) {
      const again = (): void => {
        if (settled) return;
        void probe().then((up) => {
          if (settled) return;
          if (up) {
            settled = true;
            clearTimeout(timer);
            resolve(server);
          } else setTimeout(again, 50);
        });
      };
      again();
    }
    // qemu-storage-daemon prints nothing when ready: the socket appearing is the signal.
    if (name === 'qsd') {
      const poll = setInterval(() => {
        if (settled) {
          clearInterval(poll);
          return;
        }
        if (existsSync(socket)) {
          settled = true;
          clearInterval(poll);
          clearTimeout(timer);
          resolve(server);
        }
      }, 20);
    }
  });
}

/** `stor serve ... --json`; ready when it prints its {"event":"ready"} line. */
export function startStor(o: ServerOptions): Promise<RunningServer> {
  const socket = o.socket ?? tmpSocket('stor');
  const args = [
    STOR_BIN,
    'serve',
    '--socket',
    socket,
    '--backend',
    storBackendArg(o.backend),
    '--json',
    '--queues',
    String(o.queues ?? 1),
  ];
  if (o.readonly) args.push('--readonly');
  if (o.mode) args.push('--completion', o.mode);
  args.push(...(o.extraArgs ?? []));
  return launch(
    'stor',
    process.execPath,
    args,
    socket,
    (out) => out.includes('"event":"ready"'),
    o.startTimeoutMs ?? 15_000,
  );
}

/** qemu-storage-daemon with a vhost-user-blk export of the same backend. */
export function startQsd(o: ServerOptions): Promise<RunningServer> {
  const socket = o.socket ?? tmpSocket('qsd');
  const b = o.backend;
  let blockdev: string;
  switch (b.kind) {
    case 'null':
      blockdev = `driver=null-co,node-name=disk0,size=${b.size},read-zeroes=${b.readZeroes === false ? 'off' : 'on'}${b.latencyNs ? `,latency-ns=${b.latencyNs}` : ''}`;
      break;
    case 'mem':
      throw new Error('qemu-storage-daemon has no memory backend; use a file in /dev/shm');
    case 'file':
      blockdev = `driver=file,node-name=disk0,filename=${b.path},aio=io_uring${b.direct ? ',cache.direct=on' : ''}${b.discard ? ',discard=unmap' : ''}${b.locking ? `,locking=${b.locking}` : ''}`;
      break;
    case 'rbd': {
      // cache.direct=on is QEMU's rbd_cache=false, which stor always sets: both acknowledge a write once
      // the OSDs have it
      const [pool, image] = b.image.split('/');
      blockdev = `driver=rbd,node-name=disk0,pool=${pool},image=${image}${b.conf ? `,conf=${b.conf}` : ''}${b.id ? `,user=${b.id}` : ''},discard=unmap,cache.direct=on`;
      if (b.keyring)
        throw new Error('qemu-storage-daemon: pass the keyring through conf= (its rbd driver has no keyring option)');
      break;
    }
  }
  const io = o.qsdIothread;
  const iothread = io
    ? ['--object', `iothread,id=io0${io.pollMaxNs === undefined ? '' : `,poll-max-ns=${io.pollMaxNs}`}`]
    : [];
  const args = [
    ...iothread,
    '--blockdev',
    blockdev,
    '--export',
    `type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=${socket},writable=${o.readonly ? 'off' : 'on'},num-queues=${o.queues ?? 1}${io ? ',iothread=io0' : ''}`,
    ...(o.extraArgs ?? []),
  ];
  return launch('qsd', 'qemu-storage-daemon', args, socket, () => false, o.startTimeoutMs ?? 15_000);
}

export interface SpdkTarget extends RunningServer<'spdk'> {
  /** The JSON-RPC socket (-r). */
  rpcSocket: string;
  /** Where vhost controllers' sockets appear (-S); a controller named N listens on vhostDir/N. */
  vhostDir: string;
  /** The temporary directory holding both; remove it with cleanupDir after stop(). */
  dir: string;
}

/** Is a JSON-RPC server answering on this socket? (one spdk_get_version, bounded) */
async function rpcAnswers(socket: string, timeoutMs = 1000): Promise<boolean> {
  if (!existsSync(socket)) return false;
  try {
    const c = await JsonRpcClient.connect(socket, { timeoutMs });
    try {
      await c.call('spdk_get_version');
      return true;
    } finally {
      c.close();
    }
  } catch {
    return false;
  }
}

/**
 * SPDK's spdk_tgt with the vendored README's memory flags, its RPC socket and vhost directory in a fresh
 * temp directory (short paths: a Unix socket path has at most 107 bytes). Ready when spdk_get_version
 * answers. Its reactor spins a core from start to stop: keep one alive at a time, and stop it soon.
 */
export function startSpdkTgt(o: { startTimeoutMs?: number; extraArgs?: string[] } = {}): Promise<SpdkTarget> {
  const { tgt } = requireSpdk();
  const dir = mkdtempSync(join(tmpdir(), 'spdk-'));
  const rpcSocket = join(dir, 'rpc.sock');
  const vhostDir = join(dir, 'v');
  mkdirSync(vhostDir);
  const args = [...SPDK_MEMORY_FLAGS, '-r', rpcSocket, '-S', vhostDir, ...(o.extraArgs ?? [])];
  return launch(
    'spdk',
    tgt,
    args,
    rpcSocket,
    () => false,
    o.startTimeoutMs ?? 30_000,
    () => rpcAnswers(rpcSocket),
  ).then(
    (s) => Object.assign(s, { rpcSocket, vhostDir, dir }),
    (e: Error) => {
      cleanupDir(dir);
      throw e;
    },
  );
}

export interface StorDaemon extends RunningServer<'stor-daemon'> {
  rpcSocket: string;
  socketDir: string;
  /** The daemon's {"event":"ready"} line. */
  ready: Record<string, unknown>;
}

/** `stor daemon --rpc-socket ... --socket-dir ... --json`; ready when it prints its ready line. */
export function startStorDaemon(o: {
  rpcSocket: string;
  socketDir: string;
  config?: string;
  /** --state FILE: the configuration kept on disk and replayed at start. */
  state?: string;
  extraArgs?: string[];
  startTimeoutMs?: number;
}): Promise<StorDaemon> {
  const args = [STOR_BIN, 'daemon', '--rpc-socket', o.rpcSocket, '--socket-dir', o.socketDir, '--json'];
  if (o.config) args.push('--config', o.config);
  if (o.state) args.push('--state', o.state);
  args.push(...(o.extraArgs ?? []));
  return launch(
    'stor-daemon',
    process.execPath,
    args,
    o.rpcSocket,
    (out) => out.includes('"event":"ready"'),
    o.startTimeoutMs ?? 15_000,
  ).then((s) => {
    const line = s
      .output()
      .split('\n')
      .find((l) => l.includes('"event":"ready"'))!;
    return Object.assign(s, { rpcSocket: o.rpcSocket, socketDir: o.socketDir, ready: JSON.parse(line) });
  });
}

/** Removes a directory tree, best effort. */
export function cleanupDir(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}

/** Removes the temp directory a server's socket lived in. */
export function cleanupSocket(socket: string): void {
  try {
    rmSync(join(socket, '..'), { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}
