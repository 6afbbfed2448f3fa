// `stor bench` orchestration: for each completion mode, the same workload on a fresh connection,
// run by the native engine (native/bench.c), then summarized. With no target, each mode gets its
// own embedded server (a null backend exported over vhost-user-blk through the device table, same
// completion mode on the server side; embedded.ts), in this process: its queue threads (stor-vq*)
// are told apart from the client's (stor-bench*) by name, so the server's CPU is reported beside
// the client's.
import { readdirSync, readFileSync } from 'node:fs';
import { BlockDevice } from '../../client/device.js';
import { StorError, usageError } from '../../core/errors.js';
import { native, type BenchRunConfig, type BenchRunResult } from '../../native.js';
import { parseTarget, formatTarget, type Target } from '../../core/target.js';
import { formatSpec } from '../../core/spec.js';
import { summarizeLatency, timeline, type LatencySummary } from './stats.js';
import { hostIdle, type HostIdle } from './host.js';
import { startEmbeddedServer } from './embedded.js';

export type Mode = 'notify' | 'poll' | 'adaptive';
export type Rw = BenchRunConfig['rw'];

export interface BenchOptions {
  /** undefined: an embedded `stor serve --backend null:<size>` per mode */
  target?: string;
  rw: Rw;
  rwmixread: number;
  bs: number;
  iodepth: number;
  queues: number;
  runtimeMs: number;
  rampMs: number;
  /** bytes of the target the workload touches (from offset 0); default: all of it */
  size?: number;
  modes: Mode[];
  verify: boolean;
  direct: boolean;
  /** adaptive: spin budget after the last completion before sleeping */
  spinUs: number;
  /**
   * eager: refill after every reap pass (fio's default); drain: after a wake-up, reap until nothing is
   * left, then refill (blkio-bench, event-driven libblkio applications)
   */
  refill?: Refill;
  seed: number;
  onProgress?: (mode: Mode, ios: number, elapsedMs: number) => void;
}

export type Refill = 'eager' | 'drain';

export interface IoStats {
  ios: number;
  bytes: number;
  iops: number;
  bwBytes: number;
}
export interface CpuSeconds {
  user: number;
  sys: number;
}

export interface ModeResult {
  mode: Mode;
  runtimeMs: number;
  read: IoStats;
  write: IoStats;
  total: IoStats;
  latency: LatencySummary;
  histogram: Array<[number, number]>;
  /** IOPS per tick */
  timeline: number[];
  tickMs: number;
  cpu: { client: CpuSeconds; server?: CpuSeconds };
  /** context switches of the client threads: voluntary ones are sleeps waiting for completions */
  contextSwitches: { voluntary: number; involuntary: number };
  /** CPU seconds (client + server when known) per I/O, in microseconds; and IOPS per CPU core used */
  cpuPerIoUs: number;
  iopsPerCpu: number;
  errors: number;
  verify?: { verified: number; failures: number; firstBadOffset: number | null };
}

export interface BenchReport {
  target: string;
  embeddedServer: boolean;
  driver: string;
  ioEngineNote: string;
  /** how this machine sleeps: sets what notify costs on a VM */
  host: HostIdle;
  options: Omit<BenchOptions, 'onProgress' | 'target'> & { size: number };
  results: ModeResult[];
  comparisons: Array<{
    of: Mode;
    over: Mode;
    meanLatencyRatio: number;
    p99LatencyRatio: number;
    iopsRatio: number;
    cpuPerIoRatio: number;
  }>;
}

/** CPU seconds (user, sys) of a process's threads whose name starts with prefix. */
function threadCpu(pid: number, prefix: string): CpuSeconds {
  const hz = 100; // USER_HZ on Linux
  let user = 0,
    sys = 0;
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { user, sys };
  }
  for (const tid of tasks) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (!comm.startsWith(prefix)) continue;
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      user += Number(f[11]) / hz;
      sys += Number(f[12]) / hz;
    } catch {
      /* thread ended */
    }
  }
  return { user, sys };
}

function ioStats(ios: number, bytes: number, ms: number): IoStats {
  const s = ms / 1000;
  return { ios, bytes, iops: s ? ios / s : 0, bwBytes: s ? bytes / s : 0 };
}

async function runMode(
  mode: Mode,
  o: BenchOptions,
  target: Target | undefined,
  size: number,
): Promise<{ r: ModeResult; driver: string }> {
  const embedded = target ? undefined : await startEmbeddedServer({ mode, size, queues: o.queues });
  try {
    const t: Target = target ?? { kind: 'vhost-user', path: embedded!.socket };
    let dev: BlockDevice;
    try {
      dev = await BlockDevice.open(t.kind === 'file' ? { ...t, direct: o.direct || t.direct } : t, {
        numQueues: o.queues,
        queueSize: Math.min(1024, Math.max(256, 2 ** Math.ceil(Math.log2(o.iodepth * 3)))),
        readOnly: !o.rw.includes('write') && o.rw !== 'rw' && o.rw !== 'randrw',
      });
    } catch (e) {
      if (e instanceof StorError && e.exitCode === 2) throw e;
      throw new StorError(`cannot open ${formatTarget(t)}: ${(e as Error).message}`, { hint: (e as StorError).hint });
    }
    try {
      const p = dev.properties;
      if (p.readOnly && o.rw !== 'read' && o.rw !== 'randread')
        throw usageError('--rw', `${o.rw} writes and the target is read-only`, 'read, randread');
      if (o.bs % p.requestAlignment)
        throw usageError('--bs', `${o.bs} is not a multiple of the target's request alignment (${p.requestAlignment})`);
      const span = Math.min(size, p.capacity);
      if (o.size !== undefined && o.size > p.capacity)
        throw usageError('--size', `${o.size} is larger than the target (${p.capacity} bytes)`);
      if (span < o.bs * o.queues)
        throw usageError('--size', `${span} bytes cannot hold one ${o.bs}-byte block per queue`);
      const pool =
        p.driver === 'virtio-blk-vhost-user' ? dev.allocMemRegion(o.queues * o.iodepth * o.bs).buffer : undefined;
      const job = native().benchRun(
        dev.backend,
        {
          rw: o.rw,
          rwmixread: o.rwmixread,
          bs: o.bs,
          iodepth: o.iodepth,
          threads: o.queues,
          offset: 0,
          span: Math.floor(span / o.bs) * o.bs,
          runtimeMs: o.runtimeMs,
          rampMs: o.rampMs,
          wait: mode,
          spinUs: o.spinUs,
          refill: o.refill,
          verify: o.verify,
          seed: o.seed,
          tickMs: 100,
        },
        pool,
      );
      // server CPU over the measured window: sampled when the ramp ends and when the run ends
      let serverStart: CpuSeconds | undefined;
      const sampleStart = setTimeout(() => {
        if (embedded) serverStart = threadCpu(process.pid, 'stor-vq');
      }, o.rampMs);
      if (!o.rampMs && embedded) serverStart = threadCpu(process.pid, 'stor-vq');
      const t0 = performance.now();
      const progress = o.onProgress
        ? setInterval(() => o.onProgress!(mode, job.progress(), performance.now() - t0), 200)
        : undefined;
      let raw: BenchRunResult;
      try {
        raw = await job.promise;
      } catch (e) {
        throw new StorError(`benchmark (${mode}) failed: ${(e as Error).message}`);
      } finally {
        clearTimeout(sampleStart);
        if (progress) clearInterval(progress);
      }
      let server: CpuSeconds | undefined;
      if (embedded && serverStart) {
        const end = threadCpu(process.pid, 'stor-vq');
        server = { user: end.user - serverStart.user, sys: end.sys - serverStart.sys };
      }
      return { r: summarize(mode, o, raw, server), driver: p.driver };
    } finally {
      await dev.close();
    }
  } finally {
    if (embedded) await embedded.stop();
  }
}

function summarize(mode: Mode, o: BenchOptions, raw: BenchRunResult, server?: CpuSeconds): ModeResult {
  const th = raw.threads;
  const sum = (f: (t: BenchRunResult['threads'][number]) => number): number => th.reduce((a, t) => a + f(t), 0);
  const ms = o.runtimeMs;
  const read = ioStats(
    sum((t) => t.readIos),
    sum((t) => t.readBytes),
    ms,
  );
  const write = ioStats(
    sum((t) => t.writeIos),
    sum((t) => t.writeBytes),
    ms,
  );
  const total = ioStats(read.ios + write.ios, read.bytes + write.bytes, ms);
  const client = { user: sum((t) => t.cpuUser), sys: sum((t) => t.cpuSys) };
  const cpu = client.user + client.sys + (server ? server.user + server.sys : 0);
  const errors = sum((t) => t.errors);
  const firstError = th.find((t) => t.error)?.error;
  // A failed request ends the run (as fio does without continue_on_error): the figures of a run cut
  // short would be neither the workload asked for nor comparable, so none are reported as a result.
  if (errors) {
    throw new StorError(
      `benchmark (${mode}) stopped: ${firstError ?? 'a request failed'} (${errors} request(s) failed, ${total.ios} completed)`,
      {
        hint: /not connected|broken pipe|reset by peer/i.test(firstError ?? '')
          ? 'the server went away during the run'
          : undefined,
      },
    );
  }
  const bad = th.filter((t) => t.verifyFailures > 0).map((t) => t.firstBadOffset);
  return {
    mode,
    runtimeMs: ms,
    read,
    write,
    total,
    latency: summarizeLatency(raw),
    histogram: raw.histogram,
    timeline: timeline(raw, o.runtimeMs),
    tickMs: raw.tickMs,
    cpu: { client, ...(server ? { server } : {}) },
    contextSwitches: { voluntary: sum((t) => t.ctxVoluntary), involuntary: sum((t) => t.ctxInvoluntary) },
    cpuPerIoUs: total.ios ? (cpu / total.ios) * 1e6 : 0,
    iopsPerCpu: cpu ? total.ios / cpu : 0,
    errors,
    ...(o.verify
      ? {
          verify: {
            verified: sum((t) => t.verified),
            failures: sum((t) => t.verifyFailures),
            firstBadOffset: bad.length ? Math.min(...bad) : null,
          },
        }
      : {}),
  };
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const o = { ...options, refill: options.refill ?? 'eager' };
  const target = o.target !== undefined ? parseTarget(o.target, 'target') : undefined;
  const size = o.size ?? (target ? Number.MAX_SAFE_INTEGER : 1 << 30);
  const results: ModeResult[] = [];
  let driver = 'virtio-blk-vhost-user';
  for (const mode of o.modes) {
    const { r, driver: d } = await runMode(mode, o, target, size);
    results.push(r);
    driver = d;
  }
  const comparisons: BenchReport['comparisons'] = [];
  const by = new Map(results.map((r) => [r.mode, r]));
  for (const [of, over] of [
    ['poll', 'notify'],
    ['adaptive', 'notify'],
    ['poll', 'adaptive'],
  ] as Array<[Mode, Mode]>) {
    const a = by.get(of),
      b = by.get(over);
    if (!a || !b) continue;
    comparisons.push({
      of,
      over,
      meanLatencyRatio: b.latency.meanNs ? a.latency.meanNs / b.latency.meanNs : 0,
      p99LatencyRatio: b.latency.percentiles['99.000000']
        ? a.latency.percentiles['99.000000'] / b.latency.percentiles['99.000000']
        : 0,
      iopsRatio: b.total.iops ? a.total.iops / b.total.iops : 0,
      cpuPerIoRatio: b.cpuPerIoUs ? a.cpuPerIoUs / b.cpuPerIoUs : 0,
    });
  }
  const ioEngineNote =
    driver === 'io_uring'
      ? 'io_uring: IORING_OP_READV/WRITEV, one ring per queue; notify waits in io_uring_enter(GETEVENTS) (interrupt-driven completion, eventfd registered), poll spins on the completion ring in user space without syscalls (no IORING_SETUP_IOPOLL/SQPOLL)'
      : driver === 'virtio-blk-vhost-user'
        ? 'virtio-blk over vhost-user: split virtqueues in shared memory, direct descriptor chains (indirect when the ring is short of descriptors), EVENT_IDX; notify sleeps on the call eventfd (asking for it only after several completions while they come densely), poll spins on the used ring with interrupts suppressed'
        : driver === 'rbd'
          ? "rbd: librbd's rbd_aio_readv/writev from the queue thread; librbd's callbacks (its own threads) push completions to a per-queue list and signal an eventfd: notify sleeps on it, poll spins on the list. Client CPU counts stor's queue threads only, not librbd's messenger and finisher threads"
          : `${driver}: in-process backend (no device latency)`;
  const { onProgress: _p, target: _t, ...rest } = o;
  void _p;
  void _t;
  return {
    target: target
      ? formatTarget(target)
      : `embedded stor serve (${formatSpec({ driver: 'null', props: { size: String(size) } })})`,
    embeddedServer: !target,
    driver,
    ioEngineNote,
    host: hostIdle(),
    options: { ...rest, size: target ? (o.size ?? 0) : size },
    results,
    comparisons,
  };
}
