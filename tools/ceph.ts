// A throw-away one-node Ceph cluster (one mon, one BlueStore OSD on a sparse file, pool rbd, image
// rbd/test) for the rbd tests and the rbd benchmark, started and stopped with the project's shared
// scripts: start-ceph.sh DIR / stop-ceph.sh DIR, found in ../shared/ceph beside the repository or
// wherever STOR_CEPH_SCRIPTS points. The cluster lives in a fresh directory under the temp dir (a
// real file system: BlueStore opens its file with O_DIRECT, so not tmpfs) and is stopped and removed
// like a shell trap would: by stop(), and failing that at process exit or on SIGINT/SIGTERM/SIGHUP.
import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SHARED } from './paths.js';
import { runBounded } from './run.js';

export const CEPH_SCRIPTS = process.env.STOR_CEPH_SCRIPTS ?? join(SHARED, 'ceph');

export interface CephCluster {
  dir: string;
  /** ceph.conf: all a librados client needs (its [client] section names the admin keyring) */
  conf: string;
  /** the client.admin keyring */
  keyring: string;
  /** the OSD's process id (for SIGSTOP/SIGCONT) */
  osdPid(): number;
  /** Runs the rbd CLI against the cluster (bounded); resolves to its stdout, rejects on failure. */
  rbd(args: string[], timeoutMs?: number): Promise<string>;
  /** Stops the daemons and removes the directory; safe to call twice. */
  stop(): Promise<void>;
}

const running = new Set<string>();
/** start-ceph.sh runs still going, by cluster directory: the process group to kill on an abort. */
const starting = new Map<string, number>();

function stopNow(dir: string): void {
  if (!running.delete(dir)) return;
  const pgid = starting.get(dir);
  if (pgid) {
    // an interrupted start: its mkfs steps would outlive it (the daemons are in their own sessions,
    // started with setsid, and stop-ceph.sh stops them by their pid files)
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      /* gone */
    }
    starting.delete(dir);
  }
  try {
    execFileSync('bash', [join(CEPH_SCRIPTS, 'stop-ceph.sh'), dir], { stdio: 'ignore', timeout: 60_000 });
  } catch {
    /* a daemon that did not stop is reported by stop-ceph.sh; the directory goes anyway */
  }
  rmSync(dir, { recursive: true, force: true });
}

process.on('exit', () => {
  for (const dir of [...running]) stopNow(dir);
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, function onSignal() {
    if (!running.size) return; // not ours to handle: another listener decides
    for (const dir of [...running]) stopNow(dir);
    process.removeListener(sig, onSignal);
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  });
}

/** Why the cluster cannot be started here, or undefined when it can. */
export function cephMissing(): string | undefined {
  if (!existsSync(join(CEPH_SCRIPTS, 'start-ceph.sh')))
    return `no start-ceph.sh in ${CEPH_SCRIPTS} (set STOR_CEPH_SCRIPTS to the directory holding it)`;
  for (const bin of ['/usr/bin/ceph-mon', '/usr/bin/ceph-osd', '/usr/bin/ceph', '/usr/bin/rbd'])
    if (!existsSync(bin))
      return `${bin} is missing: run scripts/setup-debian.sh (installs ceph-mon ceph-osd ceph-common)`;
  return undefined;
}

/** Starts a new cluster (about 15 s); env adds start-ceph.sh's knobs (CEPH_IMAGE_SIZE, ...). */
export async function startCephCluster(env: Record<string, string> = {}): Promise<CephCluster> {
  const missing = cephMissing();
  if (missing) throw new Error(`cannot start the Ceph test cluster: ${missing}`);
  const dir = mkdtempSync(join(tmpdir(), 'stor-ceph-'));
  running.add(dir);
  // its own process group, so an abort can end it with every step it started
  const sub = execa('bash', [join(CEPH_SCRIPTS, 'start-ceph.sh'), dir], {
    env: { ...process.env, ...env },
    stdin: 'ignore',
    reject: false,
    detached: true,
    cleanup: false,
    timeout: 180_000,
    killSignal: 'SIGKILL',
  });
  if (sub.pid) starting.set(dir, sub.pid);
  const r = await sub;
  starting.delete(dir);
  if (r.exitCode !== 0) {
    stopNow(dir);
    throw new Error(
      `start-ceph.sh failed (exit ${r.exitCode}${r.timedOut ? ', timed out' : ''}):\n${String(r.stderr).slice(-3000)}`,
    );
  }
  const conf = join(dir, 'ceph.conf');
  return {
    dir,
    conf,
    keyring: join(dir, 'ceph.client.admin.keyring'),
    osdPid: () => Number(readFileSync(join(dir, 'run', 'osd.0.pid'), 'utf8').trim()),
    rbd: async (args, timeoutMs = 60_000) => {
      const res = await runBounded('rbd', ['-c', conf, ...args], timeoutMs);
      if (res.code !== 0) throw new Error(`rbd ${args.join(' ')}: exit ${res.code}\n${res.stderr}`);
      return res.stdout;
    },
    stop: async () => {
      if (!running.has(dir)) return;
      running.delete(dir);
      await runBounded('bash', [join(CEPH_SCRIPTS, 'stop-ceph.sh'), dir], 90_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
