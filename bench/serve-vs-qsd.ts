// stor serve vs qemu-storage-daemon, both measured by libblkio's blkio-bench over vhost-user-blk,
// side by side in one run. See bench/README.md for how to run it and why the modes are paired so.
//
//   node dist/bench/serve-vs-qsd.js [--runtime S] [--repeat N] [--pairs adaptive,notify,poll]
//                                   [--cells LIST] [--image PATH] [--halt-poll-ns N|default] [--out bench/RESULTS.md]
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { parseArgs } from 'node:util';
import { ROOT } from '../tools/paths.js';
import { cleanupSocket, startQsd, startStor, type RunningServer } from '../tools/servers.js';
import { blkioBench, describe, ok, type BenchJob } from '../tools/blkio.js';
import { describeHostIdle, withHaltPollNs } from './idle.js';
import { headCommit, median, processCpuSeconds, resultsTag, writeResultsSection } from './results.js';

const GiB = 1024 ** 3;

// ---------------------------------------------------------------------------------------------
// Cells and server pairings

interface Cell {
  id: string;
  backend: 'null' | 'file';
  job: Omit<BenchJob, 'runtimeS'>;
}

const CELLS: Cell[] = [];
for (const rw of ['randread', 'randwrite'] as const) {
  for (const iodepth of [1, 32]) {
    for (const poll of [false, true]) {
      CELLS.push({
        id: `null ${rw} qd${iodepth} ${poll ? 'poll' : 'notify'}`,
        backend: 'null',
        job: { readwrite: rw, iodepth, poll },
      });
    }
  }
}
CELLS.push({
  id: 'file randread qd32 notify',
  backend: 'file',
  job: { readwrite: 'randread', iodepth: 32, poll: false },
});
CELLS.push({ id: 'file randread qd32 poll', backend: 'file', job: { readwrite: 'randread', iodepth: 32, poll: true } });

/**
 * How each server waits for requests. qemu-storage-daemon's export runs in an iothread whose
 * AioContext polls adaptively for up to poll-max-ns (default 32768 ns) before sleeping in the kernel;
 * stor's --mode names the same three behaviours.
 */
type Pair = 'adaptive' | 'notify' | 'poll';
const PAIRS: Record<Pair, { qsdPollMaxNs?: number; storMode: 'notify' | 'poll' | 'adaptive'; desc: string }> = {
  adaptive: { storMode: 'adaptive', desc: 'qsd iothread (default poll-max-ns=32768) vs stor --mode adaptive' },
  notify: { qsdPollMaxNs: 0, storMode: 'notify', desc: 'qsd iothread poll-max-ns=0 vs stor --mode notify' },
  // poll-max-ns of 1 s: the iothread keeps spinning as long as requests keep coming.
  poll: { qsdPollMaxNs: 1_000_000_000, storMode: 'poll', desc: 'qsd iothread poll-max-ns=1e9 vs stor --mode poll' },
};

// ---------------------------------------------------------------------------------------------
// Servers, both through the one launcher (tools/servers.ts); qemu-storage-daemon's export runs in an
// iothread there, as QEMU's own vhost-user-blk benchmarks run it.

interface Srv {
  name: 'qsd' | 'stor';
  pid: number;
  socket: string;
  stop(): Promise<number | null>;
  alive(): boolean;
  output(): string;
}

function procStatus(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`${key}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

// The launcher kills every server it started at exit; a signal must end the process through exit.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130)); // runs the exit hooks

/** Wraps a launched server for the measurement loop; stop() also removes its socket directory. */
function benchServer(r: RunningServer): Srv {
  return {
    name: r.name,
    pid: r.pid,
    socket: r.socket,
    output: r.output,
    alive: () => r.proc.exitCode === null && r.proc.signalCode === null,
    stop: async () => {
      const c = await r.stop();
      cleanupSocket(r.socket);
      return c;
    },
  };
}

// Both servers of a pair stay up while they take turns on the one image, read-only in effect
// (randread): image locking is turned off on both, or each would refuse the other's write lock.
const FILE_LOCKING = 'off' as const;

async function startQsdBench(backend: 'null' | 'file', image: string, pollMaxNs: number | undefined): Promise<Srv> {
  return benchServer(
    await startQsd({
      backend: backend === 'null' ? { kind: 'null', size: GiB } : { kind: 'file', path: image, locking: FILE_LOCKING },
      queues: 1,
      qsdIothread: { pollMaxNs },
      startTimeoutMs: 15_000,
    }),
  );
}

async function startStorBench(
  backend: 'null' | 'file',
  image: string,
  mode: 'notify' | 'poll' | 'adaptive',
): Promise<Srv> {
  const r: RunningServer = await startStor({
    backend: backend === 'null' ? { kind: 'null', size: GiB } : { kind: 'file', path: image, locking: FILE_LOCKING },
    queues: 1,
    mode,
    startTimeoutMs: 30_000,
  });
  return benchServer(r);
}

// ---------------------------------------------------------------------------------------------
// The file image: 1 GiB, every block written (non-zero), so reads hit allocated blocks.

function ensureImage(path: string): void {
  if (existsSync(path) && statSync(path).size === GiB && statSync(path).blocks * 512 >= GiB) return;
  process.stderr.write(`writing ${path} (1 GiB)...\n`);
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(4 << 20);
    for (let off = 0; off < GiB; off += chunk.length) {
      // Each 4 KiB block carries its own offset so nothing in the image is sparse or deduplicable.
      for (let b = 0; b < chunk.length; b += 4096) {
        chunk.fill(0xa5, b, b + 4096);
        chunk.writeBigUInt64LE(BigInt(off + b), b);
      }
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Sample {
  kiops: number;
  meanLatUs: number;
  cpuPct: number;
}
interface Row {
  cell: string;
  pair: Pair;
  qsd: Sample[];
  stor: Sample[];
  qsdRssKiB: number;
  storRssKiB: number;
  errors: string[];
  /** Things worth knowing that do not make the run invalid (restarts of qsd after its known abort). */
  notes: string[];
}

async function measure(srv: Srv, job: BenchJob): Promise<Sample> {
  const c0 = processCpuSeconds(srv.pid);
  const t0 = Date.now();
  const { result, out } = await blkioBench(srv.socket, job, 30_000);
  const wall = (Date.now() - t0) / 1000;
  if (!ok(result) || !out) throw new Error(describe(result));
  const cpuPct = (100 * (processCpuSeconds(srv.pid) - c0)) / wall;
  return { kiops: out.aggregate.kiops, meanLatUs: out.aggregate.mean_lat_us, cpuPct };
}

interface Opts {
  runtimeS: number;
  repeat: number;
  pairs: Pair[];
  cells: Cell[];
  image: string;
  servers: ('qsd' | 'stor')[];
}

const QSD_KNOWN_CRASH = /vhost_user_server_ref: Assertion `!server->wait_idle' failed/;

async function runPair(o: Opts, pair: Pair, backend: 'null' | 'file', cells: Cell[], rows: Row[]): Promise<void> {
  const p = PAIRS[pair];
  const start = {
    qsd: () => startQsdBench(backend, o.image, p.qsdPollMaxNs),
    stor: () => startStorBench(backend, o.image, p.storMode),
  };
  // A polling server spins a core from start to stop, whether or not it is being measured: in the
  // poll pair only the server under test runs, started afresh for each run.
  const perRun = pair === 'poll';
  const srv: Partial<Record<'qsd' | 'stor', Srv>> = {};
  const acquire = async (name: 'qsd' | 'stor', notes: string[]): Promise<Srv> => {
    const s = srv[name];
    if (s && !s.alive()) {
      // qsd 7.2 sometimes aborts after a client disconnects with requests in flight (see test/peers).
      notes.push(
        QSD_KNOWN_CRASH.test(s.output())
          ? `${name} restarted after its known disconnect abort`
          : `${name} died between runs:\n${s.output()}`,
      );
      await s.stop();
      delete srv[name];
    }
    if (perRun)
      for (const other of o.servers)
        if (other !== name && srv[other]) {
          await srv[other]!.stop();
          delete srv[other];
        }
    return (srv[name] ??= await start[name]());
  };
  try {
    for (const cell of cells) {
      const row: Row = { cell: cell.id, pair, qsd: [], stor: [], qsdRssKiB: 0, storRssKiB: 0, errors: [], notes: [] };
      for (let rep = 0; rep < o.repeat; rep++) {
        // Alternate who goes first so slow drift of the machine does not favour one server.
        const order = rep % 2 === 0 ? o.servers : [...o.servers].reverse();
        for (const name of order) {
          const job: BenchJob = { ...cell.job, runtimeS: o.runtimeS };
          let s: Srv;
          try {
            s = await acquire(name, row.notes);
          } catch (e) {
            // Record and go on: one server failing to start must not lose the whole table.
            row.errors.push(`${name} rep ${rep + 1}: could not start: ${(e as Error).message.trim()}`);
            continue;
          }
          try {
            row[name].push(await measure(s, job));
          } catch (e) {
            await new Promise((r) => setTimeout(r, 200));
            const known = name === 'qsd' && !s.alive() && QSD_KNOWN_CRASH.test(s.output());
            (known ? row.notes : row.errors).push(
              `${name} rep ${rep + 1}: ${(e as Error).message}` +
                `${s.alive() ? '' : `\n${name} died:\n${s.output()}`}`,
            );
          }
          // Resident memory after the server's last run in this cell.
          if (s.alive()) row[name === 'qsd' ? 'qsdRssKiB' : 'storRssKiB'] = procStatus(s.pid, 'VmRSS');
        }
      }
      rows.push(row);
      printRow(row);
    }
  } finally {
    for (const s of Object.values(srv)) if (s) await s.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

const HEAD = [
  'cell',
  'server modes',
  'qsd kIOPS',
  'stor kIOPS',
  'stor/qsd',
  'qsd mean µs',
  'stor mean µs',
  'qsd CPU %',
  'stor CPU %',
  'qsd RSS MiB',
  'stor RSS MiB',
];

function fmt(x: number, digits = 1): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '—';
}

function cells(r: Row): string[] {
  const q = median(r.qsd.map((s) => s.kiops));
  const s = median(r.stor.map((x) => x.kiops));
  return [
    r.cell,
    r.pair,
    fmt(q),
    fmt(s),
    fmt(s / q, 2),
    fmt(median(r.qsd.map((x) => x.meanLatUs))),
    fmt(median(r.stor.map((x) => x.meanLatUs))),
    fmt(median(r.qsd.map((x) => x.cpuPct)), 0),
    fmt(median(r.stor.map((x) => x.cpuPct)), 0),
    r.qsdRssKiB ? fmt(r.qsdRssKiB / 1024) : '—',
    r.storRssKiB ? fmt(r.storRssKiB / 1024) : '—',
  ];
}

function printRow(r: Row): void {
  const c = cells(r);
  process.stdout.write(
    `${c[0]!.padEnd(28)} ${c[1]!.padEnd(9)} qsd ${c[2]!.padStart(8)} kIOPS ${c[5]!.padStart(7)} µs | ` +
      `stor ${c[3]!.padStart(8)} kIOPS ${c[6]!.padStart(7)} µs | ratio ${c[4]}\n`,
  );
  for (const e of r.errors) process.stdout.write(`  error: ${e.split('\n').join('\n    ')}\n`);
  for (const n of r.notes) process.stdout.write(`  note: ${n.split('\n')[0]}\n`);
}

function markdownTable(rows: Row[]): string {
  const lines = [`| ${HEAD.join(' | ')} |`, `| ${HEAD.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`];
  for (const r of rows) lines.push(`| ${cells(r).join(' | ')} |`);
  return lines.join('\n');
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '?';
  }
}

function report(o: Opts, rows: Row[], started: Date, loadStart: number, idle: string): string {
  const commit = headCommit() || '?';
  const dirty = sh('git', ['status', '--porcelain', '--', 'src', 'native'])
    ? ' (+ uncommitted changes in src/native)'
    : '';
  const qsdVer = sh('qemu-storage-daemon', ['--version']).split('\n')[0];
  const notes = rows.flatMap((r) => r.notes.map((n) => `- ${r.cell} (${r.pair}): ${n.split('\n')[0]}`));
  const errs = rows.flatMap((r) => r.errors.map((e) => `- ${r.cell} (${r.pair}): ${e.split('\n')[0]}`));
  return [
    `## serve-vs-qsd — ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${commit}${dirty}`,
    '',
    `blkio-bench (libblkio example), 4 KiB, 1 queue, ${o.runtimeS} s per run, median of ${o.repeat} runs per server, ` +
      `servers alternated within each cell. null: qsd null-co,read-zeroes=on vs stor null:1G; ` +
      `file: 1 GiB fully written image, qsd driver=file,aio=io_uring vs stor file:. ` +
      `Client "notify"/"poll" is blkio-bench without/with --poll; "server modes" pairs: ` +
      o.pairs.map((p) => `${p} = ${PAIRS[p].desc}`).join('; ') +
      '. CPU % is the server process over the run.',
    '',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Linux ${release()}, ${qsdVer}, Node ${process.version}; 1-minute load average ${loadStart.toFixed(1)} at start, ${loadavg()[0]!.toFixed(1)} at end. Guest idle: ${idle}.`,
    '',
    markdownTable(rows),
    ...(errs.length ? ['', 'Errors:', ...errs] : []),
    ...(notes.length ? ['', 'Notes:', ...notes] : []),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: 'string', default: '3' },
      repeat: { type: 'string', default: '3' },
      pairs: { type: 'string', default: 'adaptive,notify' },
      cells: { type: 'string' },
      image: { type: 'string', default: '/var/tmp/stor-bench-1g.img' },
      servers: { type: 'string', default: 'qsd,stor' },
      out: { type: 'string' },
      'halt-poll-ns': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/serve-vs-qsd.js [--runtime S=3] [--repeat N=3] [--pairs adaptive,notify,poll]\n' +
        '         [--cells SUBSTRING,...] [--image PATH] [--servers qsd,stor] [--halt-poll-ns N|default] [--out bench/RESULTS.md]\n' +
        `cells: ${CELLS.map((c) => c.id).join('; ')}\n`,
    );
    return;
  }
  const pairs = values.pairs!.split(',').map((p) => p.trim()) as Pair[];
  for (const p of pairs) if (!(p in PAIRS)) throw new Error(`unknown pair '${p}' (adaptive, notify, poll)`);
  const filters = values.cells
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const o: Opts = {
    runtimeS: Number(values.runtime),
    repeat: Number(values.repeat),
    pairs,
    image: values.image!,
    cells: filters ? CELLS.filter((c) => filters.some((f) => c.id.includes(f))) : CELLS,
    servers: values.servers!.split(',').map((s) => s.trim()) as ('qsd' | 'stor')[],
  };
  if (!(o.runtimeS >= 1) || !Number.isInteger(o.runtimeS))
    throw new Error('--runtime must be a whole number of seconds >= 1');
  if (!(o.repeat >= 1) || !Number.isInteger(o.repeat)) throw new Error('--repeat must be a whole number >= 1');
  const started = new Date();
  const loadStart = loadavg()[0]!;
  if (o.cells.some((c) => c.backend === 'file')) ensureImage(o.image);

  const rows: Row[] = [];
  const haltPoll = values['halt-poll-ns'];
  let idle = '';
  await withHaltPollNs(haltPoll, async () => {
    idle = describeHostIdle(haltPoll);
    for (const backend of ['null', 'file'] as const) {
      const cs = o.cells.filter((c) => c.backend === backend);
      if (cs.length === 0) continue;
      for (const pair of o.pairs) {
        await runPair(o, pair, backend, cs, rows);
      }
    }
  });
  const section = report(o, rows, started, loadStart, idle);
  process.stdout.write(`\n${section}`);
  if (values.out) {
    writeResultsSection(values.out, resultsTag('serve-vs-qsd', haltPoll), section);
    process.stdout.write(`wrote ${values.out}\n`);
  }
  if (rows.some((r) => r.errors.length)) process.exitCode = 1;
}

main().catch((e) => {
  process.stderr.write(`serve-vs-qsd: ${(e as Error).message}\n`);
  process.exit(1);
});
