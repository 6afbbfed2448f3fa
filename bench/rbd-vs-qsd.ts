// stor's rbd backend vs QEMU's, on the same Ceph image: `stor serve --backend rbd:rbd/test` against
// qemu-storage-daemon's rbd driver (qemu-block-extra), both exporting vhost-user-blk and measured by
// libblkio's blkio-bench (4 KiB randread/randwrite at QD1 and QD16, the servers taking turns and the
// first one alternating); then the in-process engines, `stor bench rbd:rbd/test` against fio's rbd
// engine. CPU per I/O is the whole server (or engine) process — librbd's messenger and finisher threads
// included — divided by the I/Os it did. See bench/README.md.
//
//   node dist/bench/rbd-vs-qsd.js [--runtime S] [--repeat N] [--cells LIST] [--conf CEPH_CONF]
//                                 [--mode adaptive|notify|poll] [--no-engines] [--out bench/RESULTS.md]
//
// Without --conf the script starts its own one-node cluster (tools/ceph.ts) and stops it at the end.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { STOR_BIN } from '../tools/paths.js';
import { cleanupSocket, startQsd, startStor, type RunningServer } from '../tools/servers.js';
import { blkioBench, describe, ok, type BenchJob } from '../tools/blkio.js';
import { runBounded } from '../tools/run.js';
import { startCephCluster, type CephCluster } from '../tools/ceph.js';
import { headCommit, median, processCpuSeconds, writeResultsSection } from './results.js';

const MiB = 1024 * 1024;
const IMAGE = 'rbd/test';

interface Cell {
  id: string;
  readwrite: 'randread' | 'randwrite';
  iodepth: number;
}
const CELLS: Cell[] = [];
for (const readwrite of ['randread', 'randwrite'] as const)
  for (const iodepth of [1, 16]) CELLS.push({ id: `${readwrite} qd${iodepth}`, readwrite, iodepth });

interface Sample {
  kiops: number;
  meanLatUs: number;
  /** CPU microseconds of the whole measured process per I/O */
  cpuPerIoUs: number;
}

const fmt = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : '—');

// the launcher kills every server at exit, tools/ceph.ts stops the cluster: a signal ends through exit
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

async function startServer(name: 'qsd' | 'stor', conf: string, mode: string): Promise<RunningServer> {
  const backend = { kind: 'rbd' as const, image: IMAGE, conf };
  return name === 'qsd'
    ? startQsd({ backend, queues: 1, qsdIothread: {}, startTimeoutMs: 30_000 })
    : startStor({ backend, queues: 1, mode: mode as 'adaptive', startTimeoutMs: 30_000 });
}

/** Servers that had to be killed, and whose exclusive lock was then broken (reported with the table). */
const killed: string[] = [];

/**
 * Stops a server; one that does not exit on SIGTERM within 15 s is killed, and its lock is broken the
 * way a Ceph admin would (`rbd lock rm` blocklists the dead client, which also drops its watch), or the
 * next server would find the image locked by a client whose watch lingers for 30 s. qemu-storage-daemon
 * 7.2 needs this: with its export in an iothread, it can deadlock in vhost_user_server_stop after rbd
 * writes (main thread polling with the iothread's AioContext lock, the iothread waiting for that lock).
 */
async function stopServer(s: RunningServer, conf: string, what: string): Promise<void> {
  const code = await s.stop(15_000);
  cleanupSocket(s.socket);
  if (code === 0) return;
  const rbd = (...args: string[]) => execFileSync('rbd', ['-c', conf, ...args], { encoding: 'utf8', timeout: 30_000 });
  const lockers = JSON.parse(rbd('lock', 'ls', '--format', 'json', IMAGE)) as Array<{ id: string; locker: string }>;
  for (const l of lockers) rbd('lock', 'rm', IMAGE, l.id, l.locker);
  killed.push(
    `${what}: ${s.name} did not exit on SIGTERM (exit ${code ?? 'by signal'}); ${lockers.length} lock(s) broken`,
  );
}

/** One blkio-bench run against a fresh server (one server alive at a time: the image's exclusive lock). */
async function measureServer(name: 'qsd' | 'stor', conf: string, mode: string, cell: Cell, runtimeS: number) {
  const s = await startServer(name, conf, mode);
  try {
    const job: BenchJob = { readwrite: cell.readwrite, iodepth: cell.iodepth, poll: false, runtimeS };
    const c0 = processCpuSeconds(s.pid);
    const { result, out } = await blkioBench(s.socket, job, 30_000);
    const cpu = processCpuSeconds(s.pid) - c0;
    if (!ok(result) || !out) throw new Error(`${name}: ${describe(result)}\n${s.output()}`);
    const ios = out.aggregate.kiops * 1000 * runtimeS;
    return { kiops: out.aggregate.kiops, meanLatUs: out.aggregate.mean_lat_us, cpuPerIoUs: (cpu * 1e6) / ios };
  } finally {
    await stopServer(s, conf, cell.id);
  }
}

/** Runs a program and samples its CPU until it exits (the last sample before exit counts). */
async function runSampled(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number) {
  let pid = 0;
  let cpu = 0;
  const timer = setInterval(() => {
    const c = pid ? processCpuSeconds(pid) : 0;
    if (c > cpu) cpu = c;
  }, 100);
  try {
    const r = await runBounded(cmd, args, timeoutMs, { env, onSpawn: (p) => (pid = p.pid ?? 0) });
    return { r, cpu };
  } finally {
    clearInterval(timer);
  }
}

async function storEngine(conf: string, cell: Cell, runtimeS: number): Promise<Sample> {
  const { r, cpu } = await runSampled(
    process.execPath,
    [
      STOR_BIN,
      'bench',
      `rbd:${IMAGE},conf=${conf}`,
      '--rw',
      cell.readwrite,
      '--iodepth',
      String(cell.iodepth),
      '--runtime',
      `${runtimeS}s`,
      '--ramp',
      '1s',
      '--completion',
      'notify',
      '--json',
    ],
    process.env,
    (runtimeS + 60) * 1000,
  );
  if (r.code !== 0) throw new Error(`stor bench: exit ${r.code}\n${r.stderr}`);
  const job = (JSON.parse(r.stdout) as { jobs: Array<Record<string, { iops: number; lat_ns: { mean: number } }>> })
    .jobs[0]!;
  const side = job[cell.readwrite === 'randread' ? 'read' : 'write']!;
  // the process's CPU includes the 1 s ramp and start-up: per I/O over everything it did
  const ios = side.iops * (runtimeS + 1);
  return { kiops: side.iops / 1000, meanLatUs: side.lat_ns.mean / 1000, cpuPerIoUs: (cpu * 1e6) / ios };
}

/**
 * The cluster's conf with librbd's cache off, for fio's engine: its default (writearound once a flush
 * was seen, which fio's engine leads to) acknowledges writes before the OSDs have them, ~4x faster than
 * a durable write here. stor always runs without it, and qsd with cache.direct=on does too.
 */
function confWithoutCache(conf: string, dir: string): string {
  const path = join(dir, 'ceph-nocache.conf');
  writeFileSync(path, `${readFileSync(conf, 'utf8')}\n[client]\nrbd_cache = false\n`);
  return path;
}

async function fioEngine(conf: string, cell: Cell, runtimeS: number): Promise<Sample> {
  const [pool, image] = IMAGE.split('/');
  const { r, cpu } = await runSampled(
    'fio',
    [
      '--name=rbd',
      '--ioengine=rbd',
      '--clientname=admin',
      `--pool=${pool}`,
      `--rbdname=${image}`,
      `--rw=${cell.readwrite}`,
      '--bs=4k',
      `--iodepth=${cell.iodepth}`,
      '--ramp_time=1',
      `--runtime=${runtimeS}`,
      '--time_based',
      '--output-format=json',
    ],
    { ...process.env, CEPH_CONF: conf },
    (runtimeS + 60) * 1000,
  );
  if (r.code !== 0) throw new Error(`fio: exit ${r.code}\n${r.stderr}`);
  const job = (JSON.parse(r.stdout) as { jobs: Array<Record<string, { iops: number; lat_ns: { mean: number } }>> })
    .jobs[0]!;
  const side = job[cell.readwrite === 'randread' ? 'read' : 'write']!;
  const ios = side.iops * (runtimeS + 1);
  return { kiops: side.iops / 1000, meanLatUs: side.lat_ns.mean / 1000, cpuPerIoUs: (cpu * 1e6) / ios };
}

function fioHasRbd(): boolean {
  try {
    return /\brbd\b/.test(execFileSync('fio', ['--enghelp'], { encoding: 'utf8' }));
  } catch {
    return false;
  }
}

/** Writes every block of the image once, so reads hit allocated objects, not librbd's object map. */
async function fillImage(conf: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stor-rbd-fill-'));
  try {
    const img = join(dir, 'fill.img');
    const size = Number(
      JSON.parse(
        execFileSync(process.execPath, [STOR_BIN, 'info', `rbd:${IMAGE},conf=${conf}`, '--json'], { encoding: 'utf8' }),
      ).capacity,
    );
    const chunk = Buffer.alloc(4 * MiB, 0xa5);
    const parts: Buffer[] = [];
    for (let off = 0; off < size; off += chunk.length) parts.push(chunk);
    writeFileSync(img, Buffer.concat(parts).subarray(0, size));
    const r = await runBounded(process.execPath, [STOR_BIN, 'copy', img, `rbd:${IMAGE},conf=${conf}`], 300_000);
    if (r.code !== 0) throw new Error(`filling ${IMAGE}: ${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Row {
  cell: string;
  a: Sample[];
  b: Sample[];
  errors: string[];
}

function tableOf(title: string, aName: string, bName: string, rows: Row[]): string {
  const head = [
    'cell',
    `${aName} kIOPS`,
    `${bName} kIOPS`,
    `${bName}/${aName}`,
    `${bName}/${aName}, median of pairs`,
    `${aName} mean µs`,
    `${bName} mean µs`,
    `${aName} CPU µs/IO`,
    `${bName} CPU µs/IO`,
    `every run, kIOPS (${aName} · ${bName})`,
  ];
  const lines = [
    `### ${title}`,
    '',
    `| ${head.join(' | ')} |`,
    `| ${head.map((_, i) => (i && i < head.length - 1 ? '---:' : '---')).join(' | ')} |`,
  ];
  for (const r of rows) {
    const ka = median(r.a.map((s) => s.kiops)),
      kb = median(r.b.map((s) => s.kiops));
    lines.push(
      `| ${[
        r.cell,
        fmt(ka, 2),
        fmt(kb, 2),
        fmt(kb / ka, 2),
        // the runs of one repetition ran back to back: their ratio cancels the cluster's drift (the OSD's
        // write rate moves by ±20 % over a few minutes here), which the ratio of medians does not
        fmt(median(r.a.flatMap((s, i) => (r.b[i] && r.a.length === r.b.length ? [r.b[i].kiops / s.kiops] : []))), 2),
        fmt(median(r.a.map((s) => s.meanLatUs)), 0),
        fmt(median(r.b.map((s) => s.meanLatUs)), 0),
        fmt(median(r.a.map((s) => s.cpuPerIoUs)), 0),
        fmt(median(r.b.map((s) => s.cpuPerIoUs)), 0),
        `${r.a.map((s) => fmt(s.kiops, 2)).join(' ')} · ${r.b.map((s) => fmt(s.kiops, 2)).join(' ')}`,
      ].join(' | ')} |`,
    );
  }
  const errs = rows.flatMap((r) => r.errors.map((e) => `- ${r.cell}: ${e.split('\n')[0]}`));
  return [...lines, ...(errs.length ? ['', 'Failed runs:', ...errs] : [])].join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runtime: { type: 'string', default: '10' },
      repeat: { type: 'string', default: '3' },
      cells: { type: 'string' },
      conf: { type: 'string' },
      mode: { type: 'string', default: 'adaptive' },
      'no-engines': { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  const runtimeS = Number(values.runtime);
  const repeat = Number(values.repeat);
  const wanted = values.cells?.split(',').map((s) => s.trim());
  const cells = wanted ? CELLS.filter((c) => wanted.includes(c.id)) : CELLS;
  if (!cells.length || !(runtimeS > 0) || !(repeat > 0)) {
    process.stderr.write(`rbd-vs-qsd: nothing to run (cells: ${CELLS.map((c) => c.id).join(', ')})\n`);
    return 2;
  }
  let cluster: CephCluster | undefined;
  let conf = values.conf;
  if (!conf) {
    process.stderr.write('starting a one-node Ceph cluster...\n');
    cluster = await startCephCluster();
    conf = cluster.conf;
  }
  let failed = false;
  try {
    process.stderr.write(`filling ${IMAGE}...\n`);
    await fillImage(conf);
    const served: Row[] = [];
    for (const cell of cells) {
      const row: Row = { cell: cell.id, a: [], b: [], errors: [] };
      for (let rep = 0; rep < repeat; rep++) {
        const order: Array<'qsd' | 'stor'> = rep % 2 ? ['stor', 'qsd'] : ['qsd', 'stor'];
        for (const name of order) {
          try {
            (name === 'qsd' ? row.a : row.b).push(await measureServer(name, conf, values.mode!, cell, runtimeS));
          } catch (e) {
            row.errors.push(`${name} rep ${rep + 1}: ${(e as Error).message}`);
          }
        }
      }
      served.push(row);
      process.stdout.write(`${tableOf('', 'qsd', 'stor', [row]).split('\n').pop()}\n`);
    }
    const engines: Row[] = [];
    const withFio = !values['no-engines'] && fioHasRbd();
    if (withFio) {
      const confDir = mkdtempSync(join(tmpdir(), 'stor-rbd-conf-'));
      const engineConf = confWithoutCache(conf, confDir);
      for (const cell of cells) {
        const row: Row = { cell: cell.id, a: [], b: [], errors: [] };
        for (let rep = 0; rep < repeat; rep++) {
          const order: Array<'fio' | 'stor'> = rep % 2 ? ['stor', 'fio'] : ['fio', 'stor'];
          for (const name of order) {
            try {
              if (name === 'fio') row.a.push(await fioEngine(engineConf, cell, runtimeS));
              else row.b.push(await storEngine(engineConf, cell, runtimeS));
            } catch (e) {
              row.errors.push(`${name} rep ${rep + 1}: ${(e as Error).message}`);
            }
          }
        }
        engines.push(row);
        process.stdout.write(`${tableOf('', 'fio', 'stor', [row]).split('\n').pop()}\n`);
      }
      rmSync(confDir, { recursive: true, force: true });
    }
    failed = [...served, ...engines].some((r) => r.errors.length > 0);
    const commit = headCommit();
    const section = [
      `## rbd-vs-qsd (${new Date().toISOString().slice(0, 10)}, commit ${commit || '?'})`,
      '',
      `Host: ${cpus().length} CPUs, Linux ${release()}, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')} at the end; ${cluster ? 'a one-node cluster started by the script' : `cluster ${conf}`}; ` +
        `image ${IMAGE} written in full first; ${runtimeS} s per run, median of ${repeat}, alternating order.`,
      '',
      tableOf(
        `vhost-user-blk, blkio-bench notify: qemu-storage-daemon rbd (iothread, cache.direct=on) vs stor serve --completion ${values.mode}`,
        'qsd',
        'stor',
        served,
      ),
      ...(killed.length
        ? ['', 'Servers killed at stop (their lock broken before the next run):', ...killed.map((k) => `- ${k}`)]
        : []),
      ...(withFio
        ? [
            '',
            tableOf(
              'in-process engines, librbd cache off for both: fio --ioengine=rbd vs stor bench rbd: (notify)',
              'fio',
              'stor',
              engines,
            ),
          ]
        : []),
    ].join('\n');
    process.stdout.write(`\n${section}\n`);
    if (values.out) writeResultsSection(values.out, 'rbd-vs-qsd', section);
  } finally {
    await cluster?.stop();
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`rbd-vs-qsd: ${e.message}\n`);
    process.exit(1);
  },
);
