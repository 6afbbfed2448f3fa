// Runs libblkio's example programs (blkio-info, blkio-copy, blkio-bench) against a
// vhost-user-blk socket, each bounded by a timeout, and parses what they print.
// Shared by test/peers/*.test.ts and the bench/ scripts.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PEER_BIN } from './paths.js';
import { runBounded, type RunResult } from './run.js';

export type PeerProgram = 'blkio-info' | 'blkio-copy' | 'blkio-bench';

export interface PeerResult extends RunResult {
  cmd: string;
}

export function peerPath(prog: PeerProgram): string {
  const p = join(PEER_BIN, prog);
  if (!existsSync(p)) throw new Error(`${p} is missing: run scripts/setup-debian.sh`);
  return p;
}

/** Runs one peer program; SIGKILLs it after timeoutMs. Never rejects for a non-zero exit. */
export async function runPeer(prog: PeerProgram, args: string[], timeoutMs: number): Promise<PeerResult> {
  const r = await runBounded(peerPath(prog), args, timeoutMs);
  return { cmd: [prog, ...args].join(' '), ...r };
}

/** A one-paragraph description of a run, for assertion messages. */
export function describe(r: PeerResult): string {
  const how = r.timedOut ? `timed out after ${r.ms} ms` : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return `\`${r.cmd}\` ${how}\nstdout: ${r.stdout.trim() || '(empty)'}\nstderr: ${r.stderr.trim() || '(empty)'}`;
}

export function ok(r: PeerResult): boolean {
  return !r.timedOut && r.signal === null && r.code === 0;
}

/** The driver arguments every program takes to reach a vhost-user-blk socket. */
export function vhostUser(socket: string): string[] {
  return ['virtio-blk-vhost-user', `path=${socket}`];
}

/**
 * Queries properties with blkio-info. Its text output has one line per queried property, in
 * argument order (its --output=json prints no commas between members, so it is not JSON).
 */
export async function blkioInfo(
  socket: string,
  props: string[],
  timeoutMs = 10_000,
): Promise<{ result: PeerResult; values: Record<string, string> }> {
  const result = await runPeer('blkio-info', [...vhostUser(socket), ...props], timeoutMs);
  const values: Record<string, string> = {};
  if (ok(result)) {
    const lines = result.stdout.split('\n').filter((l) => l.length > 0);
    const queried = props.filter((p) => !p.includes('='));
    if (lines.length !== queried.length) {
      throw new Error(
        `blkio-info printed ${lines.length} lines for ${queried.length} properties:\n${describe(result)}`,
      );
    }
    queried.forEach((p, i) => {
      values[p] = lines[i]!;
    });
  }
  return { result, values };
}

export interface BenchStats {
  kiops: number;
  gips: number;
  min_lat_us: number;
  mean_lat_us: number;
  max_lat_us: number;
  calls: number;
  min_completions: number;
  mean_completions: number;
  max_completions: number;
}
export interface BenchOutput {
  aggregate: BenchStats;
  threads: BenchStats[];
}

export const BENCH_FIELDS: (keyof BenchStats)[] = [
  'kiops',
  'gips',
  'min_lat_us',
  'mean_lat_us',
  'max_lat_us',
  'calls',
  'min_completions',
  'mean_completions',
  'max_completions',
];

/** Parses blkio-bench's JSON and checks every field is a finite number; throws with the text otherwise. */
export function parseBench(stdout: string): BenchOutput {
  let j: unknown;
  try {
    j = JSON.parse(stdout);
  } catch (e) {
    throw new Error(`blkio-bench output is not JSON (${String(e)}):\n${stdout}`);
  }
  const checkStats = (s: unknown, where: string): BenchStats => {
    if (typeof s !== 'object' || s === null) throw new Error(`blkio-bench ${where} is not an object:\n${stdout}`);
    for (const f of BENCH_FIELDS) {
      const v = (s as Record<string, unknown>)[f];
      if (typeof v !== 'number' || !Number.isFinite(v))
        throw new Error(`blkio-bench ${where}.${f} is ${String(v)}:\n${stdout}`);
    }
    return s as BenchStats;
  };
  const o = j as { aggregate?: unknown; threads?: unknown };
  if (!Array.isArray(o.threads)) throw new Error(`blkio-bench output has no threads array:\n${stdout}`);
  return {
    aggregate: checkStats(o.aggregate, 'aggregate'),
    threads: o.threads.map((t, i) => checkStats(t, `threads[${i}]`)),
  };
}

export interface BenchJob {
  readwrite: 'read' | 'write' | 'randread' | 'randwrite';
  iodepth: number;
  poll: boolean;
  runtimeS: number;
  threads?: number;
  blocksize?: number;
}

export function benchArgs(socket: string, j: BenchJob): string[] {
  const a = [
    `--runtime=${j.runtimeS}`,
    `--iodepth=${j.iodepth}`,
    `--readwrite=${j.readwrite}`,
    `--blocksize=${j.blocksize ?? 4096}`,
    `--num-threads=${j.threads ?? 1}`,
  ];
  if (j.poll) a.push('--poll');
  return [...a, ...vhostUser(socket)];
}

/** Runs blkio-bench; the timeout is the runtime plus a generous margin for connect and teardown. */
export async function blkioBench(
  socket: string,
  j: BenchJob,
  marginMs = 15_000,
): Promise<{ result: PeerResult; out?: BenchOutput }> {
  const result = await runPeer('blkio-bench', benchArgs(socket, j), j.runtimeS * 1000 + marginMs);
  return { result, out: ok(result) ? parseBench(result.stdout) : undefined };
}
