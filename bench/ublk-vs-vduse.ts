// stor's two kernel-disk exports side by side in one test guest (Linux 6.12 under TCG, so the figures are
// indicative): fio 4 KiB randread and randwrite at QD1 and QD16 (libaio, direct) on stor's ublk disk and
// on stor's VDUSE disk, both over the same backend (null:1G by default) with notify completion (a polling
// server starves a TCG guest). Both disks stay attached for the whole run; per cell and repetition the
// exports take turns, and the one going first alternates, so drift of the emulated machine hits both.
// Alongside IOPS each fio run reports its own process's system CPU per I/O (fio's sys_cpu), which is
// where the two transports differ: ublk hands the request over through io_uring commands, VDUSE
// through a virtqueue whose kernel side is the virtio-blk driver plus the VDUSE bounce buffer.
//
//   node dist/bench/ublk-vs-vduse.js [--runtime S=5] [--repeat N=2] [--backend SPEC=null:1G]
//                                    [--out bench/RESULTS.md] [--json]
import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { parseArgs } from 'node:util';
import { STOR_BIN } from '../tools/paths.js';
import { assertGuestOk, runGuest } from '../tools/vm.js';
import { headCommit, median, writeResultsSection } from './results.js';

type Exp = 'ublk' | 'vduse';
interface Sample {
  exp: Exp;
  cell: string;
  rep: number;
  iops: number;
  latUs: number;
  sysPct: number;
}

const CELLS = ['randread 1', 'randread 16', 'randwrite 1', 'randwrite 16'];

/** The guest script: attach both disks, then per repetition and cell run fio on each, alternating. */
function guestScript(runtimeS: number, repeat: number, backend: string): string {
  return String.raw`set -uo pipefail
export STOR_RUN_DIR=/tmp/run
STOR="node ${STOR_BIN}"
fail() { echo "FAIL: $*"; exit 1; }
waitready() { for i in $(seq 1 900); do grep -q '"ready"' "$1" && return 0; kill -0 $2 2>/dev/null || return 1; sleep 0.1; done; return 1; }
$STOR attach --ublk --backend ${backend} --completion notify --json > /tmp/ublk.out 2>/tmp/ublk.err & ublk=$!
waitready /tmp/ublk.out $ublk || fail "ublk attach: $(cat /tmp/ublk.out /tmp/ublk.err)"
$STOR attach --vduse --backend ${backend} --completion notify --name benchvd --json > /tmp/vd.out 2>/tmp/vd.err & vd=$!
waitready /tmp/vd.out $vd || fail "vduse attach: $(cat /tmp/vd.out /tmp/vd.err)"
udev=$(sed -n 's/.*"device":"\([^"]*\)".*/\1/p' /tmp/ublk.out | head -1)
vdev=$(sed -n 's/.*"device":"\([^"]*\)".*/\1/p' /tmp/vd.out | head -1)
run() { # export device rw qd rep
  fio --name=b --filename=$2 --rw=$3 --bs=4k --iodepth=$4 --direct=1 --ioengine=libaio --time_based \
    --runtime=${runtimeS} --ramp_time=1 --size=256M --output-format=json > /tmp/fio.json 2>/dev/null || fail "fio $1 $3 qd$4"
  node -e '
    const j = JSON.parse(require("fs").readFileSync("/tmp/fio.json", "utf8")).jobs[0];
    const d = j.read.io_bytes > 0 ? j.read : j.write;
    console.log("SAMPLE " + JSON.stringify({ exp: process.argv[1], cell: process.argv[2] + " " + process.argv[3],
      rep: +process.argv[4], iops: d.iops, latUs: d.clat_ns.mean / 1000, sysPct: j.sys_cpu }));' "$1" "$3" "$4" "$5" \
    | tee -a "$STOR_VM_RESULTS/samples"
}
for rep in $(seq 1 ${repeat}); do
  for rw in randread randwrite; do for qd in 1 16; do
    if [ $((rep % 2)) = 1 ]; then run ublk $udev $rw $qd $rep; run vduse $vdev $rw $qd $rep
    else run vduse $vdev $rw $qd $rep; run ublk $udev $rw $qd $rep; fi
  done; done
done
kill -TERM $ublk; wait $ublk || fail "ublk exit $?"
kill -TERM $vd; wait $vd || fail "vduse exit $?"
echo DONE
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: 'string', default: '5' },
      repeat: { type: 'string', default: '2' },
      backend: { type: 'string', default: 'null:1G' },
      out: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/ublk-vs-vduse.js [--runtime S=5] [--repeat N=2] [--backend SPEC=null:1G] [--out FILE] [--json]\n',
    );
    return;
  }
  const runtimeS = Number(values.runtime);
  const repeat = Number(values.repeat);
  if (!Number.isInteger(runtimeS) || runtimeS < 1) throw new Error('--runtime must be a whole number >= 1');
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat must be a whole number >= 1');
  const backend = values.backend!;
  const started = new Date();
  const r = await runGuest({
    script: guestScript(runtimeS, repeat, backend),
    memoryMiB: 1024,
    timeoutMs: (120 + repeat * CELLS.length * 2 * (runtimeS + 6)) * 2000,
  });
  try {
    assertGuestOk(r, 'ublk vs VDUSE');
    const all = readFileSync(`${r.resultsDir}/samples`, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('SAMPLE '))
      .map((l) => JSON.parse(l.slice(7)) as Sample);
    const rows = CELLS.map((cell) => {
      const of = (e: Exp) => all.filter((s) => s.cell === cell && s.exp === e);
      const med = (e: Exp, k: 'iops' | 'latUs' | 'sysPct') => median(of(e).map((s) => s[k]));
      // CPU per I/O in µs: fio's system CPU share (of one CPU) over the I/O rate
      const cpu = (e: Exp) => (med(e, 'sysPct') / 100 / med(e, 'iops')) * 1e6;
      const pairRatios = of('ublk')
        .map((u) => {
          const v = of('vduse').find((x) => x.rep === u.rep);
          return v ? u.iops / v.iops : NaN;
        })
        .filter((x) => Number.isFinite(x));
      const [rw, qd] = cell.split(' ');
      return {
        cell: `${rw} 4k qd${qd}`,
        ublk: med('ublk', 'iops'),
        vduse: med('vduse', 'iops'),
        ublkLat: med('ublk', 'latUs'),
        vduseLat: med('vduse', 'latUs'),
        ublkCpu: cpu('ublk'),
        vduseCpu: cpu('vduse'),
        ratio: median(pairRatios),
        range: pairRatios.length ? `${Math.min(...pairRatios).toFixed(2)}–${Math.max(...pairRatios).toFixed(2)}` : '-',
      };
    });
    if (values.json) {
      process.stdout.write(JSON.stringify({ runtime: runtimeS, repeat, backend, rows }) + '\n');
      return;
    }
    const commit = headCommit();
    const section = [
      '## ublk-vs-vduse: stor attach --ublk vs stor attach --vduse (fio in a TCG guest)',
      '',
      `\`node dist/bench/ublk-vs-vduse.js --runtime ${runtimeS} --repeat ${repeat} --backend ${backend}\``,
      '',
      `${started.toISOString()}, commit ${commit}, host kernel ${release()}; guest Linux 6.12 under TCG, 2 vCPUs.`,
      `Backend ${backend}, 1 queue each, server completion notify; fio libaio direct, ${runtimeS} s per cell after 1 s` +
        ` ramp, ${repeat} alternating repetitions (medians; the ratio is the median of per-repetition ratios).` +
        ' “sys µs/IO” is the system CPU of fio’s own process (submitting and completing in the kernel) per I/O;' +
        ' the servers’ CPU is not in it. Indicative only: the emulated CPU dominates.',
      '',
      '| cell | ublk IOPS | VDUSE IOPS | ublk/VDUSE (range) | ublk lat µs | VDUSE lat µs | ublk sys µs/IO | VDUSE sys µs/IO |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows.map(
        (x) =>
          `| ${x.cell} | ${x.ublk.toFixed(0)} | ${x.vduse.toFixed(0)} | ${x.ratio.toFixed(2)} (${x.range}) | ` +
          `${x.ublkLat.toFixed(0)} | ${x.vduseLat.toFixed(0)} | ${x.ublkCpu.toFixed(1)} | ${x.vduseCpu.toFixed(1)} |`,
      ),
    ].join('\n');
    process.stdout.write(`${section}\n`);
    if (values.out) {
      writeResultsSection(values.out, 'ublk-vs-vduse', section);
      process.stdout.write(`wrote ${values.out}\n`);
    }
  } finally {
    r.cleanup();
  }
}

main().catch((e) => {
  process.stderr.write(`ublk-vs-vduse: ${(e as Error).message}\n`);
  process.exit(1);
});
