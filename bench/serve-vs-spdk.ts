// stor serve vs SPDK's vhost-blk target (spdk_tgt from the vendored tarball), both over a null backend,
// both measured by the same client, `stor bench` (libblkio cannot connect to SPDK's controllers).
// SPDK's reactor spins a core from start to stop, so only one server is alive at a time: each round
// starts one server, runs every cell on it, stops it, then the next; the order of the servers
// alternates between rounds so drift on the machine falls on both sides. Cells: 4k randread and
// randwrite, QD1 and QD32, client completion notify and poll; stor runs in its default (adaptive) mode
// and in --mode poll (SPDK always polls). Printed and written to bench/RESULTS.md: median IOPS and
// latency per server, the stor/SPDK ratio, and CPU per I/O (server process and client).
//
//   node dist/bench/serve-vs-spdk.js [--runtime S] [--repeat N] [--cells SUBSTRING] [--no-pin]
//                                    [--out FILE | --no-write]
//
// Needs the machine alone (see bench/README.md); a one-pair smoke run:
//   node dist/bench/serve-vs-spdk.js --runtime 1 --repeat 1 --cells 'randread qd1 notify' --no-write
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, STOR_BIN } from '../tools/paths.js';
import { runBounded } from '../tools/run.js';
import { cleanupDir, cleanupSocket, startSpdkTgt, startStor } from '../tools/servers.js';
import { JsonRpcClient } from '../src/lib/rpc/jsonrpc.js';
import { headCommit, median, processCpuSeconds, resultsTag, writeResultsSection } from './results.js';

const GiB = 1024 ** 3;

interface Cell {
  id: string;
  rw: 'randread' | 'randwrite';
  iodepth: number;
  client: 'notify' | 'poll';
}
const CELLS: Cell[] = [];
for (const rw of ['randread', 'randwrite'] as const)
  for (const iodepth of [1, 32])
    for (const client of ['notify', 'poll'] as const)
      CELLS.push({ id: `${rw} qd${iodepth} ${client}`, rw, iodepth, client });

type ServerId = 'spdk' | 'stor' | 'stor-poll';
const SERVERS: ServerId[] = ['spdk', 'stor', 'stor-poll'];
const LABEL: Record<ServerId, string> = { spdk: 'SPDK', stor: 'stor (adaptive)', 'stor-poll': 'stor --mode poll' };

interface Sample {
  iops: number;
  meanLatUs: number;
  serverCpuPerIoUs: number;
  clientCpuPerIoUs: number;
}

interface Running {
  socket: string;
  pid: number;
  stop: () => Promise<void>;
}

// Pinned (the default on 2+ CPUs): the server on the last CPU, the client on CPU 0. SPDK's reactor
// is pinned by design (its core mask, -m); without pinning stor as well, a run's figure depends on
// whether the client happened to land on the server's core, and QD32 poll cells split into two
// populations (3–4.6 M and 7–12 M IOPS for both servers in one unpinned run).
const NCPU = cpus().length;
const SERVER_CPU = NCPU - 1,
  CLIENT_CPU = 0;
let pin = NCPU >= 2;

async function startServer(id: ServerId): Promise<Running> {
  if (id === 'spdk') {
    const s = await startSpdkTgt(pin ? { extraArgs: ['-m', `0x${(1 << SERVER_CPU).toString(16)}`] } : {});
    const c = await JsonRpcClient.connect(s.rpcSocket, { timeoutMs: 10_000 });
    try {
      await c.call('bdev_null_create', { name: 'Null0', num_blocks: GiB / 512, block_size: 512 });
      await c.call('vhost_create_blk_controller', { ctrlr: 'vb', dev_name: 'Null0' });
    } finally {
      c.close();
    }
    return {
      socket: join(s.vhostDir, 'vb'),
      pid: s.pid,
      stop: async () => {
        await s.stop(10_000);
        cleanupDir(s.dir);
      },
    };
  }
  const s = await startStor({
    // SPDK's null bdev leaves read buffers alone: stor's does the same here, so the servers match
    backend: { kind: 'null', size: GiB, readZeroes: false },
    queues: 1,
    mode: id === 'stor-poll' ? 'poll' : 'adaptive',
    startTimeoutMs: 30_000,
  });
  // every thread, and the queue threads it starts later inherit it
  if (pin) execFileSync('taskset', ['-a', '-p', '-c', String(SERVER_CPU), String(s.pid)], { stdio: 'ignore' });
  return {
    socket: s.socket,
    pid: s.pid,
    stop: async () => {
      await s.stop();
      cleanupSocket(s.socket);
    },
  };
}

async function measure(srv: Running, cell: Cell, runtimeS: number): Promise<Sample> {
  const c0 = processCpuSeconds(srv.pid);
  const args = [
    STOR_BIN,
    'bench',
    `vhost-user:${srv.socket}`,
    '--rw',
    cell.rw,
    '--bs',
    '4k',
    '--iodepth',
    String(cell.iodepth),
    '--completion',
    cell.client,
    '--runtime',
    `${runtimeS}s`,
    '--ramp',
    '1s',
    '--json',
  ];
  const r = pin
    ? await runBounded('taskset', ['-c', String(CLIENT_CPU), process.execPath, ...args], (runtimeS + 60) * 1000)
    : await runBounded(process.execPath, args, (runtimeS + 60) * 1000);
  const c1 = processCpuSeconds(srv.pid);
  if (r.code !== 0) throw new Error(`stor bench on ${srv.socket}: exit ${r.code}\n${r.stderr}${r.stdout}`);
  const job = (JSON.parse(r.stdout) as { jobs: Array<Record<string, unknown>> }).jobs[0]!;
  const side = job[cell.rw === 'randread' ? 'read' : 'write'] as {
    iops: number;
    total_ios: number;
    lat_ns: { mean: number };
  };
  return {
    iops: side.iops,
    meanLatUs: side.lat_ns.mean / 1000,
    // includes the ramp and the connection set-up: an upper bound on the server's cost per I/O
    serverCpuPerIoUs: ((c1 - c0) * 1e6) / Math.max(1, side.total_ios),
    clientCpuPerIoUs: Number(job.cpu_per_io_us),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: 'string', default: '2' },
      repeat: { type: 'string', default: '9' },
      cells: { type: 'string' },
      out: { type: 'string', default: join(ROOT, 'bench', 'RESULTS.md') },
      'no-write': { type: 'boolean', default: false },
      'no-pin': { type: 'boolean', default: false },
    },
  });
  if (values['no-pin']) pin = false;
  const runtimeS = Number(values.runtime);
  const repeat = Number(values.repeat);
  const cells = CELLS.filter((c) => !values.cells || c.id.includes(values.cells));
  if (!cells.length) throw new Error(`no cell matches '${values.cells}'; cells: ${CELLS.map((c) => c.id).join(', ')}`);
  const samples = new Map<string, Sample[]>();
  const key = (s: ServerId, c: Cell): string => `${s}|${c.id}`;
  for (let round = 0; round < repeat; round++) {
    // alternate which server goes first, so slow drift on the machine falls on both sides
    const order = round % 2 ? [...SERVERS].reverse() : SERVERS;
    for (const id of order) {
      process.stderr.write(`round ${round + 1}/${repeat}: ${LABEL[id]}\n`);
      const srv = await startServer(id);
      try {
        for (const c of cells) {
          const s = await measure(srv, c, runtimeS);
          process.stderr.write(
            `  ${c.id.padEnd(22)} ${(s.iops / 1000).toFixed(1).padStart(8)} kIOPS  ${s.meanLatUs.toFixed(2)} µs\n`,
          );
          samples.set(key(id, c), [...(samples.get(key(id, c)) ?? []), s]);
        }
      } finally {
        await srv.stop();
      }
    }
  }

  const lines = [
    `## stor serve vs SPDK vhost-blk (null backend, client: stor bench)`,
    '',
    `${new Date().toISOString()}, commit ${headCommit() || '?'}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), ` +
      `kernel ${release()}, load ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')} at the end; ${repeat} round(s) of ${runtimeS} s per cell, medians; ` +
      `one server alive at a time, order alternating by round; ` +
      (pin
        ? `server pinned to CPU ${SERVER_CPU} (SPDK -m 0x${(1 << SERVER_CPU).toString(16)}, stor by taskset), client on CPU ${CLIENT_CPU}.`
        : 'nothing pinned (SPDK at its default core mask 0x1).'),
    '',
    '| cell | SPDK kIOPS | stor kIOPS | stor/SPDK | stor poll kIOPS | stor poll/SPDK | mean lat µs SPDK / stor / stor poll | server CPU µs/IO SPDK / stor / stor poll | client CPU µs/IO |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |',
  ];
  for (const c of cells) {
    const m = (id: ServerId, f: keyof Sample): number => median((samples.get(key(id, c)) ?? []).map((s) => s[f]));
    const spdk = m('spdk', 'iops');
    const stor = m('stor', 'iops');
    const poll = m('stor-poll', 'iops');
    lines.push(
      `| ${c.id} | ${(spdk / 1000).toFixed(1)} | ${(stor / 1000).toFixed(1)} | ${(stor / spdk).toFixed(2)} | ` +
        `${(poll / 1000).toFixed(1)} | ${(poll / spdk).toFixed(2)} | ` +
        `${SERVERS.map((s) => m(s, 'meanLatUs').toFixed(2)).join(' / ')} | ` +
        `${SERVERS.map((s) => m(s, 'serverCpuPerIoUs').toFixed(2)).join(' / ')} | ${m('stor', 'clientCpuPerIoUs').toFixed(2)} |`,
    );
  }
  lines.push(
    '',
    'Server CPU per I/O counts the whole run (ramp and connection set-up included); SPDK’s reactor spins ' +
      'whether or not requests come, so its figure is a core’s time divided by the I/Os done.',
    '',
    // this VM flips between a slow and a fast state for seconds at a time (a halted vCPU's wake-up, and
    // more): the rounds show it, and why a median needs many of them
    'kIOPS by round (SPDK | stor | stor poll):',
    '',
    ...cells.map(
      (c) =>
        `- ${c.id}: ${SERVERS.map((id) =>
          (samples.get(key(id, c)) ?? []).map((x) => (x.iops / 1000).toFixed(0)).join(' '),
        ).join(' | ')}`,
    ),
  );
  const text = lines.join('\n');
  process.stdout.write(text + '\n');
  if (!values['no-write'])
    writeResultsSection(values.out!, resultsTag('serve-vs-spdk', undefined) + (pin ? '' : ':unpinned'), text);
}

// the launchers kill every server they started at exit; a signal must end the process through exit
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

main().catch((e: unknown) => {
  process.stderr.write(`serve-vs-spdk: ${(e as Error).message}\n`);
  process.exit(1);
});
