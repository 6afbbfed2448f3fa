// stor attach --vduse vs qemu-storage-daemon's vduse-blk export, both measured by fio inside the test
// guest (Linux 6.12 under TCG) on the /dev/vdX each one makes, side by side in one guest boot. Only one
// of the two disks exists at a time; within each repetition the servers take turns, and the one going
// first alternates between repetitions, so drift of the (emulated, shared) machine hits both. Both serve
// the same backend: a null device (stor null:, qsd null-co with read-zeroes) so the transport is what
// is measured, or with --backend file an image on the guest's tmpfs. Both wait for requests by
// notification (stor --completion notify; qsd's export in an iothread with poll-max-ns=0), because a
// polling server starves the single TCG thread that runs the whole guest (see /work/shared/PEERS.md).
// On stor's disk `stor bench /dev/vdX` also compares the client's completion modes (notify, poll,
// adaptive). Figures are indicative: compare only the ratios of one run.
//
//   node dist/bench/vduse-vs-qsd.js [--runtime S=5] [--repeat N=2] [--jobs LIST] [--backend null|file]
//                                   [--queues N=1] [--out bench/RESULTS.md]
import { parseArgs } from 'node:util';
import { release } from 'node:os';
import { readFileSync } from 'node:fs';
import { STOR_BIN } from '../tools/paths.js';
import { runGuest, consoleTail } from '../tools/vm.js';
import { headCommit, median, writeResultsSection } from './results.js';

interface Job {
  id: string;
  rw: 'randread' | 'randwrite';
  bs: string;
  iodepth: number;
}
const JOBS: Job[] = [];
for (const rw of ['randread', 'randwrite'] as const)
  for (const iodepth of [1, 16]) JOBS.push({ id: `${rw} 4k qd${iodepth}`, rw, bs: '4k', iodepth });
JOBS.push({ id: 'randread 128k qd16', rw: 'randread', bs: '128k', iodepth: 16 });

interface Sample {
  server: 'stor' | 'qsd';
  job: string;
  iops: number;
  latUs: number;
  rep: number;
}

interface ModeSample {
  rep: number;
  qd: number;
  mode: string;
  iops: number;
  latUs: number;
  cpuUs: number;
}

/** The guest script: per repetition, each server in turn attaches its disk, runs every job, detaches. */
function guestScript(jobs: Job[], runtimeS: number, repeat: number, backend: 'null' | 'file', queues: number): string {
  const fioLines = jobs
    .map((j) => `  run_job "$1" "$2" "${j.id}" --rw=${j.rw} --bs=${j.bs} --iodepth=${j.iodepth}`)
    .join('\n');
  return String.raw`set -uo pipefail
export STOR_RUN_DIR=/tmp/run
SIZE=256M
fail() { echo "FAIL: $*"; exit 1; }
[ "${backend}" = file ] && { truncate -s $SIZE /tmp/bench.img || fail truncate; }
run_job() { # server rep id fio-args...
  local server=$1 rep=$2 id=$3; shift 3
  fio --name=b --filename=$DEV --direct=1 --ioengine=libaio --time_based --runtime=${runtimeS} --ramp_time=1 \
    --size=$SIZE --numjobs=1 --output-format=json "$@" > /tmp/fio.json 2>/dev/null || fail "fio $id on $server"
  node -e '
    const r = JSON.parse(require("fs").readFileSync("/tmp/fio.json", "utf8")).jobs[0];
    const d = r.read.io_bytes > 0 ? r.read : r.write;
    console.log("SAMPLE " + JSON.stringify({ server: process.argv[1], rep: +process.argv[2], job: process.argv[3],
      iops: d.iops, latUs: d.clat_ns.mean / 1000 }));' "$server" "$rep" "$id"
}
jobs() {
${fioLines}
}
wait_dev() { for i in $(seq 1 600); do DEV=$(ls -d /sys/bus/vdpa/devices/$1/virtio*/block/* 2>/dev/null | head -1); [ -n "$DEV" ] && break; sleep 0.1; done
  [ -n "$DEV" ] || fail "no disk for $1"; DEV=/dev/$(basename $DEV); }
# stor bench on the VDUSE disk: its completion modes side by side (the disk is a file: target, io_uring)
stor_bench_modes() {
  for qd in 1 16; do
    node ${STOR_BIN} bench $DEV --rw randread --iodepth $qd --completion notify,poll,adaptive \
      --runtime ${runtimeS}s --ramp 1s --size $SIZE --json > /tmp/sb.json 2>/tmp/sb.err || fail "stor bench qd$qd: $(cat /tmp/sb.err)"
    node -e '
      const j = JSON.parse(require("fs").readFileSync("/tmp/sb.json", "utf8"));
      for (const m of j.jobs) console.log("MODES " + JSON.stringify({ rep: +process.argv[1], qd: +process.argv[2],
        mode: m.mode, iops: m.read.iops, latUs: m.read.lat_ns.mean / 1000, cpuUs: m.cpu_per_io_us }));' "$1" "$qd" \
      >> "$STOR_VM_RESULTS/modes"
  done
}
stor_round() {
  local spec=null:$SIZE; [ "${backend}" = file ] && spec=file:/tmp/bench.img
  node ${STOR_BIN} attach --vduse --name sb --backend $spec --queues ${queues} --completion notify --json >/tmp/s.out 2>/tmp/s.err &
  local pid=$!
  for i in $(seq 1 1200); do grep -q '"ready"' /tmp/s.out && break; sleep 0.1; done
  grep -q '"ready"' /tmp/s.out || { cat /tmp/s.err; fail "stor attach not ready"; }
  wait_dev sb
  jobs stor $1
  stor_bench_modes $1
  kill -TERM $pid; wait $pid || fail "stor attach exit $?"
}
qsd_round() {
  local bd="driver=null-co,node-name=n0,size=268435456,read-zeroes=on"
  [ "${backend}" = file ] && bd="driver=file,node-name=n0,filename=/tmp/bench.img,aio=threads"
  qemu-storage-daemon --daemonize --pidfile /tmp/qsd.pid --object iothread,id=io0,poll-max-ns=0 --blockdev "$bd" \
    --export type=vduse-blk,id=e0,node-name=n0,name=qb,writable=on,num-queues=${queues},iothread=io0 || fail "qsd"
  vdpa dev add name qb mgmtdev vduse || fail "vdpa dev add qb"
  wait_dev qb
  jobs qsd $1
  vdpa dev del qb
  kill $(cat /tmp/qsd.pid); while kill -0 $(cat /tmp/qsd.pid) 2>/dev/null; do sleep 0.1; done
}
for rep in $(seq 1 ${repeat}); do
  if [ $((rep % 2)) = 1 ]; then stor_round $rep; qsd_round $rep; else qsd_round $rep; stor_round $rep; fi
done
echo DONE
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: 'string', default: '5' },
      repeat: { type: 'string', default: '2' },
      jobs: { type: 'string' },
      backend: { type: 'string', default: 'null' },
      queues: { type: 'string', default: '1' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/vduse-vs-qsd.js [--runtime S=5] [--repeat N=2] [--jobs SUBSTRING,...] [--backend null|file]\n' +
        '         [--queues N=1] [--out bench/RESULTS.md]\n' +
        `jobs: ${JOBS.map((j) => j.id).join('; ')}\n`,
    );
    return;
  }
  const runtimeS = Number(values.runtime);
  const repeat = Number(values.repeat);
  const queues = Number(values.queues);
  const backend = values.backend as 'null' | 'file';
  if (!Number.isInteger(runtimeS) || runtimeS < 1) throw new Error('--runtime must be a whole number >= 1');
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat must be a whole number >= 1');
  if (backend !== 'null' && backend !== 'file') throw new Error('--backend must be null or file');
  const filters = values.jobs?.split(',').map((s) => s.trim());
  const jobs = filters ? JOBS.filter((j) => filters.some((f) => j.id.includes(f))) : JOBS;
  if (!jobs.length) throw new Error('no job matches --jobs');
  const started = new Date();
  const perRound = jobs.length * (runtimeS + 4) + 40;
  const r = await runGuest({
    script: guestScript(jobs, runtimeS, repeat, backend, queues),
    memoryMiB: 1024,
    timeoutMs: (60 + 2 * repeat * perRound) * 1000 * 2,
  });
  const samples: Sample[] = r.console
    .split('\n')
    .filter((l) => l.startsWith('SAMPLE '))
    .map((l) => JSON.parse(l.slice(7)) as Sample);
  let modeLines = '';
  try {
    modeLines = readFileSync(`${r.resultsDir}/modes`, 'utf8');
  } catch {
    /* the guest never got that far: the section says the run is incomplete */
  }
  const modeSamples = modeLines
    .split('\n')
    .filter((l) => l.startsWith('MODES '))
    .map((l) => JSON.parse(l.slice(6)) as ModeSample);
  const done = r.console.includes('DONE') && r.status === 0;
  r.cleanup();
  const rows = jobs.map((j) => {
    const of = (s: 'stor' | 'qsd') => samples.filter((x) => x.job === j.id && x.server === s);
    const st = of('stor'),
      q = of('qsd');
    const si = median(st.map((x) => x.iops)),
      qi = median(q.map((x) => x.iops));
    const sl = median(st.map((x) => x.latUs)),
      ql = median(q.map((x) => x.latUs));
    return `| ${j.id} | ${si.toFixed(0)} | ${sl.toFixed(0)} | ${qi.toFixed(0)} | ${ql.toFixed(0)} | ${(si / qi).toFixed(2)} |`;
  });
  const modeRows: string[] = [];
  for (const qd of [1, 16])
    for (const mode of ['notify', 'poll', 'adaptive']) {
      const m = modeSamples.filter((x) => x.qd === qd && x.mode === mode);
      if (!m.length) continue;
      const f = (k: 'iops' | 'latUs' | 'cpuUs', d: number) => median(m.map((x) => x[k])).toFixed(d);
      modeRows.push(`| randread 4k qd${qd} | ${mode} | ${f('iops', 0)} | ${f('latUs', 1)} | ${f('cpuUs', 2)} |`);
    }
  const commit = headCommit();
  const section = [
    `## vduse-vs-qsd: stor attach --vduse vs qemu-storage-daemon vduse-blk (fio in a TCG guest)`,
    '',
    `${started.toISOString()}, commit ${commit}, host kernel ${release()}; guest Linux 6.12 under TCG, 2 vCPUs.`,
    `Backend ${backend} 256 MiB, ${queues} queue(s), both by notification; fio libaio direct, ${runtimeS} s per job,` +
      ` median of ${repeat} alternating repetitions. Indicative only: the emulated CPU dominates.`,
    '',
    '| job | stor IOPS | stor mean lat µs | qsd IOPS | qsd mean lat µs | stor/qsd |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    `\`stor bench /dev/vdX\` on stor's VDUSE disk (server --completion notify), the client's completion modes side by` +
      ` side (${runtimeS} s each after 1 s ramp, median of ${repeat} repetitions; CPU is the client's per I/O):`,
    '',
    '| job | client mode | IOPS | mean lat µs | client CPU µs/IO |',
    '| --- | --- | --- | --- | --- |',
    ...modeRows,
    ...(done
      ? []
      : ['', `**incomplete run** (guest status ${String(r.status)}); console tail:`, '```', consoleTail(r, 30), '```']),
  ].join('\n');
  process.stdout.write(`${section}\n`);
  if (values.out) {
    writeResultsSection(values.out, 'vduse-vs-qsd', section);
    process.stdout.write(`wrote ${values.out}\n`);
  }
  if (!done) process.exitCode = 1;
}

main().catch((e) => {
  process.stderr.write(`vduse-vs-qsd: ${(e as Error).message}\n`);
  process.exit(1);
});
