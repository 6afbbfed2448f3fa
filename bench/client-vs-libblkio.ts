// stor's native client loop against libblkio itself, on the same server (qemu-storage-daemon,
// null-co): `stor bench` vs `blkio-bench [--poll]`, 4 KiB random reads at queue depth 1 and 32,
// notify and poll; then a 1 GiB copy from a file into the device, `stor copy` vs `blkio-copy`.
//
// The two tools take turns in short runs (stor first in every other pair), and the ratio of each
// cell is the median of the per-pair ratios: on a shared 2-core machine the throughput of the whole
// server+client system drifts between regimes that last seconds, and only runs close in time are
// comparable. With --pin (default when there are 2+ CPUs) the server runs on the last CPU and both
// clients on CPU 0, so neither tool ever shares a core with the server.
//
// Notify cells are run twice for stor: with stor bench's default, fio-like loop (`--refill eager`:
// resubmit after every look at the completions), which is what the summary line judges, and with
// blkio-bench's own loop (`--refill drain`: after a wake-up, reap until nothing is left, re-arm,
// refill, sleep on the completion fd).
//
// The notify cells at QD1 and QD32 also run with nothing pinned (server and clients wherever the
// scheduler puts them), as users run them: those rows are what the unpinned target of issue #10
// (stor/libblkio >= 0.90) is judged on.
//
// On a VM the notify cells also measure the guest's idle policy (see idle.ts): the header records
// it, and --halt-poll-ns sets it for the run (RESULTS.md keeps one section per setting).
//
//   node dist/bench/client-vs-libblkio.js [--runtime 1] [--repeat 15] [--copy-size 1G] [--no-pin]
//        [--halt-poll-ns N|default] [--unpinned-only] [--out bench/RESULTS.md]
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { ROOT, STOR_BIN } from '../tools/paths.js';
import { runBounded, type RunResult } from '../tools/run.js';
import { startQsd, cleanupSocket, type RunningServer } from '../tools/servers.js';
import { benchArgs, parseBench, peerPath } from '../tools/blkio.js';
import { formatSpec } from '../src/lib/core/spec.js';
import { describeHostIdle, withHaltPollNs } from './idle.js';
import { headCommit, median, resultsTag, writeResultsSection } from './results.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const RUNTIME = Number(opt('runtime', '1'));
const REPEAT = Number(opt('repeat', '15'));
const COPY_SIZE = opt('copy-size', '1G');
const OUT = opt('out', '');
const SRC_IMAGE = opt('image', '/var/tmp/stor-copy-src-1g.img');
const NCPU = cpus().length;
const PIN = !args.includes('--no-pin') && NCPU >= 2;
// a flag given without a value reaches the parser as "" and is refused there, not ignored
const HALT_POLL_ARG = args.includes('--halt-poll-ns') ? (opt('halt-poll-ns', '') ?? '') : undefined;
const CLIENT_CPU = '0',
  SERVER_CPU = String(NCPU - 1);
// only the unpinned notify rows, no copy (a quick check of the issue #10 target)
const UNPINNED_ONLY = args.includes('--unpinned-only');

interface Sample {
  kiops: number;
  meanUs: number;
}

/** A client run, pinned to the client CPU when pinning; the shared bounded runner from the tests. */
async function run(
  cmd: string,
  argv: string[],
  timeoutMs: number,
  pin = PIN,
): Promise<RunResult & { seconds: number }> {
  const r = pin
    ? await runBounded('taskset', ['-c', CLIENT_CPU, cmd, ...argv], timeoutMs)
    : await runBounded(cmd, argv, timeoutMs);
  return { ...r, seconds: r.ms / 1000 };
}

type Refill = 'eager' | 'drain';
async function storBench(
  socket: string,
  qd: number,
  poll: boolean,
  refill: Refill,
  spinUs?: number,
  pin = PIN,
): Promise<Sample> {
  const mode = poll
    ? ['--completion', 'poll']
    : spinUs !== undefined
      ? ['--completion', 'adaptive', '--spin-us', String(spinUs)]
      : ['--completion', 'notify'];
  const r = await run(
    process.execPath,
    [
      STOR_BIN,
      'bench',
      formatSpec({ driver: 'vhost-user', props: { path: socket } }),
      '--rw',
      'randread',
      '--bs',
      '4k',
      '--iodepth',
      String(qd),
      ...mode,
      '--refill',
      refill,
      '--runtime',
      `${RUNTIME}s`,
      '--ramp',
      '0ms',
      '--json',
    ],
    RUNTIME * 1000 + 30_000,
    pin,
  );
  if (r.code !== 0) throw new Error(`stor bench failed (${r.code}): ${r.stderr}`);
  const j = JSON.parse(r.stdout).jobs[0];
  return { kiops: j.read.iops / 1000, meanUs: j.read.lat_ns.mean / 1000 };
}

async function libblkioBench(socket: string, qd: number, poll: boolean, pin = PIN): Promise<Sample> {
  const r = await run(
    peerPath('blkio-bench'),
    benchArgs(socket, { readwrite: 'randread', iodepth: qd, poll, runtimeS: RUNTIME }),
    RUNTIME * 1000 + 30_000,
    pin,
  );
  if (r.code !== 0) throw new Error(`blkio-bench failed (${r.code}): ${r.stderr}`);
  const out = parseBench(r.stdout);
  return { kiops: out.aggregate.kiops, meanUs: out.aggregate.mean_lat_us };
}

function loadLine(): string {
  const [l1, l5] = readFileSync('/proc/loadavg', 'utf8').split(' ');
  return `load average ${l1} (1 min), ${l5} (5 min) on ${NCPU} cores`;
}

async function main(): Promise<void> {
  const lines: string[] = [];
  const say = (s: string): void => {
    console.log(s);
    lines.push(s);
  };
  const commit = headCommit();
  say(`client-vs-libblkio — ${new Date().toISOString()}, commit ${commit}, ${loadLine()}`);
  say(
    `server: qemu-storage-daemon null-co (1 GiB, read-zeroes)${PIN ? ` on CPU ${SERVER_CPU}, clients on CPU ${CLIENT_CPU}` : ', unpinned'}; ` +
      `${REPEAT} pairs of ${RUNTIME} s runs per cell, stor and libblkio taking turns; kIOPS and mean latency are medians, ratios the median of per-pair ratios`,
  );
  say(`guest idle: ${describeHostIdle(HALT_POLL_ARG)}`);
  say('');
  say(
    '| cell | stor loop | libblkio kIOPS | stor kIOPS | stor/libblkio IOPS | libblkio mean µs | stor mean µs | stor/libblkio latency |',
  );
  say('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  const qsd: RunningServer = await startQsd({ backend: { kind: 'null', size: 1 << 30 } });
  if (PIN) spawnSync('taskset', ['-a', '-p', '-c', SERVER_CPU, String(qsd.pid)]); // all of its threads
  let worst = 0;
  const drainRows: string[] = [];
  let qd32Eager = NaN,
    qd32Spin = NaN; // stor/libblkio IOPS of the QD32 notify cell: default loop, 1 µs spin
  const unpinnedRows: string[] = [];
  try {
    const cells: Array<{
      qd: number;
      poll: boolean;
      refill: Refill;
      dflt: boolean;
      spinUs?: number;
      unpinned?: boolean;
    }> = [];
    for (const qd of [1, 32]) {
      cells.push(
        { qd, poll: false, refill: 'eager', dflt: true },
        { qd, poll: false, refill: 'drain', dflt: false },
        { qd, poll: true, refill: 'eager', dflt: true },
      );
    }
    // sensitivity of the QD32 notify cell: the same loop, but spinning 1 µs before each sleep
    cells.push({ qd: 32, poll: false, refill: 'eager', dflt: false, spinUs: 1 });
    // as users run it: nothing pinned (with --no-pin every cell already is)
    if (PIN) for (const qd of [1, 32]) cells.push({ qd, poll: false, refill: 'eager', dflt: false, unpinned: true });
    for (const c of UNPINNED_ONLY ? cells.filter((x) => x.unpinned) : cells) {
      const pin = PIN && !c.unpinned;
      // the server is unpinned for these rows too (all its threads may run on any CPU)
      if (c.unpinned) spawnSync('taskset', ['-a', '-p', '-c', `0-${NCPU - 1}`, String(qsd.pid)]);
      const s: Sample[] = [],
        l: Sample[] = [];
      for (let i = 0; i < REPEAT; i++) {
        if (i % 2 === 0) {
          l.push(await libblkioBench(qsd.socket, c.qd, c.poll, pin));
          s.push(await storBench(qsd.socket, c.qd, c.poll, c.refill, c.spinUs, pin));
        } else {
          s.push(await storBench(qsd.socket, c.qd, c.poll, c.refill, c.spinUs, pin));
          l.push(await libblkioBench(qsd.socket, c.qd, c.poll, pin));
        }
      }
      const iopsRatio = median(s.map((x, i) => x.kiops / l[i].kiops));
      const latRatio = median(s.map((x, i) => x.meanUs / l[i].meanUs));
      if (c.qd === 32 && !c.poll && c.refill === 'eager' && !c.unpinned) {
        if (c.spinUs === undefined) qd32Eager = iopsRatio;
        else qd32Spin = iopsRatio;
      }
      if (c.unpinned)
        unpinnedRows.push(
          `QD${c.qd} IOPS ${iopsRatio.toFixed(2)} (pairs ${Math.min(...s.map((x, i) => x.kiops / l[i].kiops)).toFixed(2)}–${Math.max(...s.map((x, i) => x.kiops / l[i].kiops)).toFixed(2)}), latency ${latRatio.toFixed(2)}`,
        );
      else if (c.dflt) worst = Math.max(worst, Math.abs(iopsRatio - 1), Math.abs(latRatio - 1));
      else if (c.spinUs === undefined)
        drainRows.push(`QD${c.qd} IOPS ${iopsRatio.toFixed(2)}, latency ${latRatio.toFixed(2)}`);
      const loop = c.unpinned
        ? 'notify, `--refill eager`, **nothing pinned** (server and both clients)'
        : c.poll
          ? 'poll'
          : c.spinUs !== undefined
            ? `\`--completion adaptive --spin-us ${c.spinUs}\` (sensitivity: ${c.spinUs} µs spin before each sleep)`
            : c.refill === 'drain'
              ? "notify, `--refill drain` (blkio-bench's loop)"
              : "notify, `--refill eager` (default, fio's loop)";
      say(
        `| randread 4k QD${c.qd} ${c.poll ? 'poll' : 'notify'} | ${loop} | ${median(l.map((x) => x.kiops)).toFixed(1)} | ${median(s.map((x) => x.kiops)).toFixed(1)} | ${iopsRatio.toFixed(2)} | ` +
          `${median(l.map((x) => x.meanUs)).toFixed(2)} | ${median(s.map((x) => x.meanUs)).toFixed(2)} | ${latRatio.toFixed(2)} |`,
      );
    }
  } finally {
    await qsd.stop();
    cleanupSocket(qsd.socket);
  }
  say('');
  if (UNPINNED_ONLY) {
    // only the unpinned rows ran: the pinned and spin comparisons below would have nothing to compare
    say(`With nothing pinned (notify, default loop): ${unpinnedRows.join('; ')}.`);
    return;
  }
  say(
    `stor bench as run by default against blkio-bench, all four cells: the largest disagreement in IOPS or mean latency is ${(worst * 100).toFixed(0)} %. ` +
      `With blkio-bench's notify loop (\`--refill drain\`), stor/libblkio: ${drainRows.join('; ')}.` +
      (unpinnedRows.length ? ` With nothing pinned (notify, default loop): ${unpinnedRows.join('; ')}.` : ''),
  );
  say('');
  say(
    `The QD32 notify cell measures how soon a client falls asleep after re-arming more than what a request costs: ` +
      `spinning just 1 µs before each sleep moves stor from ${qd32Eager.toFixed(2)} to ${qd32Spin.toFixed(2)} of libblkio's IOPS ` +
      '(each sleep that halts the vCPU costs tens of µs on this VM, and qsd finishes the whole batch meanwhile). ' +
      'Compare the runs with guest halt polling off and on: the idle policy, not the request path, sets this cell.',
  );

  // copy: a file of random bytes into the device (null-co drops the writes: this measures the client path)
  const size = COPY_SIZE.toUpperCase() === '1G' ? 1 << 30 : Number(COPY_SIZE);
  if (!existsSync(SRC_IMAGE) || statSync(SRC_IMAGE).size !== size) {
    spawnSync('sh', ['-c', `head -c ${size} /dev/urandom > ${SRC_IMAGE}`]);
  }
  const dst: RunningServer = await startQsd({ backend: { kind: 'null', size } });
  if (PIN) spawnSync('taskset', ['-a', '-p', '-c', SERVER_CPU, String(dst.pid)]);
  try {
    const times: { stor: number[]; storOwn: number[]; libblkio: number[] } = { stor: [], storOwn: [], libblkio: [] };
    for (let i = 0; i < REPEAT; i++) {
      const b = await run(
        peerPath('blkio-copy'),
        [`--input-file=${SRC_IMAGE}`, '--output-blkio=virtio-blk-vhost-user', `path=${dst.socket}`],
        300_000,
      );
      if (b.code !== 0) throw new Error(`blkio-copy failed: ${b.stderr}`);
      times.libblkio.push(b.seconds);
      const s = await run(
        process.execPath,
        [
          STOR_BIN,
          'copy',
          SRC_IMAGE,
          formatSpec({ driver: 'vhost-user', props: { path: dst.socket } }),
          '--no-zero-detect',
          '--json',
        ],
        300_000,
      );
      if (s.code !== 0) throw new Error(`stor copy failed: ${s.stderr}`);
      times.stor.push(s.seconds);
      times.storOwn.push(JSON.parse(s.stdout).seconds); // its own timer: after Node's start-up and the connect
    }
    const lt = median(times.libblkio),
      st = median(times.stor);
    const mib = size / 2 ** 20;
    say('');
    say(`| copy ${COPY_SIZE} file -> vhost-user | libblkio (blkio-copy) | stor copy | ratio |`);
    say('| --- | ---: | ---: | ---: |');
    say(`| wall time (s), incl. process start | ${lt.toFixed(2)} | ${st.toFixed(2)} | ${(st / lt).toFixed(2)} |`);
    say(
      `| throughput (MiB/s), from wall time | ${(mib / lt).toFixed(0)} | ${(mib / st).toFixed(0)} | ${(lt / st).toFixed(2)} |`,
    );
    const own = median(times.storOwn);
    say(
      `| stor copy's own timer (s), without Node's start-up | | ${own.toFixed(3)} (${(mib / own).toFixed(0)} MiB/s) | |`,
    );
    say('');
    say(
      'stor copy ran with its defaults (1 queue, 8 chunks of 1 MiB in flight, zero-detection off); blkio-copy copies one buffer at a time. ' +
        `Starting Node and the CLI takes about ${Math.max(0, st - own).toFixed(2)} s of stor's wall time; blkio-copy is a C program and starts in a millisecond.`,
    );
  } finally {
    await dst.stop();
    cleanupSocket(dst.socket);
  }

  if (OUT) {
    const title =
      HALT_POLL_ARG === undefined
        ? 'Client: stor vs libblkio (issue 4, issue 5), the machine as booted'
        : `Client: stor vs libblkio (issue 4, issue 5), guest halt polling ${HALT_POLL_ARG}`;
    const flag = HALT_POLL_ARG === undefined ? '' : ` --halt-poll-ns ${HALT_POLL_ARG}`;
    const section = `## ${title}\n\n\`node dist/bench/client-vs-libblkio.js --runtime ${RUNTIME} --repeat ${REPEAT}${flag}\`\n\n${lines.join('\n')}`;
    writeResultsSection(join(ROOT, OUT), resultsTag('client-vs-libblkio', HALT_POLL_ARG), section);
  }
}

withHaltPollNs(HALT_POLL_ARG, main).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
