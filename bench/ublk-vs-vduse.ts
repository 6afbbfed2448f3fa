// stor's two kernel-disk exports side by side in one test guest (TCG, so the figures are indicative):
// fio 4 KiB randread and randwrite at QD1 and QD16 (libaio, direct) on stor's ublk disk and on stor's
// VDUSE disk, both over the same kind of backend (null:1G) with notify completion (a polling server
// starves a single-threaded TCG guest). The exports take turns per cell. Until `stor attach --vduse`
// works, the VDUSE half is skipped with a message and only the ublk column is filled.
//
//   node dist/bench/ublk-vs-vduse.js [--runtime 5] [--json]
import { readFileSync } from 'node:fs';
import { STOR_BIN } from '../tools/paths.js';
import { assertGuestOk, runGuest } from '../tools/vm.js';

const args = process.argv.slice(2);
const runtime = Number(args[args.indexOf('--runtime') + 1] || 5) || 5;
const json = args.includes('--json');

// In the guest: start both exports, then for each cell run fio on ublk, then on VDUSE (if up).
// Results are one line per run: "<export> <cell> <iops>" in $STOR_VM_RESULTS/results.
const SCRIPT = String.raw`set -uo pipefail
STOR="node ${STOR_BIN}"
waitready() { for i in $(seq 1 900); do grep -q '"ready"' "$1" && return 0; kill -0 $2 2>/dev/null || return 1; sleep 0.1; done; return 1; }
$STOR attach --ublk --backend null:1G --completion notify --json > /tmp/ublk.out 2>/tmp/ublk.err & ublk=$!
waitready /tmp/ublk.out $ublk || { cat /tmp/ublk.out /tmp/ublk.err; echo "ublk attach failed"; exit 1; }
$STOR attach --vduse --backend null:1G --completion notify --name benchvd --json > /tmp/vd.out 2>/tmp/vd.err & vd=$!
vdev=""
if waitready /tmp/vd.out $vd; then
  vdev=$(sed -n 's/.*"device":"\([^"]*\)".*/\1/p' /tmp/vd.out | head -1)
else
  echo "SKIP vduse: $(cat /tmp/vd.out /tmp/vd.err | tr '\n' ' ')" | tee "$STOR_VM_RESULTS/skip"
fi
cell() { # export device rw qd
  out=$(fio --name=b --filename=$2 --rw=$3 --bs=4k --iodepth=$4 --direct=1 --ioengine=libaio --time_based \
    --runtime=${runtime} --ramp_time=1 --output-format=terse --terse-version=3 2>/dev/null) || return 1
  # terse v3: read IOPS is field 8, write IOPS field 49
  if [ $3 = randread ]; then iops=$(echo "$out" | cut -d';' -f8); else iops=$(echo "$out" | cut -d';' -f49); fi
  echo "$1 $3-qd$4 $iops" | tee -a "$STOR_VM_RESULTS/results"
}
for rw in randread randwrite; do for qd in 1 16; do
  cell ublk /dev/ublkb0 $rw $qd
  [ -n "$vdev" ] && cell vduse $vdev $rw $qd
done; done
kill -TERM $ublk; wait $ublk
[ -n "$vdev" ] && { kill -TERM $vd; wait $vd; }
exit 0
`;

const r = await runGuest({ script: SCRIPT, memoryMiB: 1024, timeoutMs: 600_000 });
try {
  assertGuestOk(r, 'ublk vs VDUSE');
  let skip = '';
  try {
    skip = readFileSync(`${r.resultsDir}/skip`, 'utf8').trim();
  } catch {
    /* both exports ran */
  }
  const rows = new Map<string, { ublk?: number; vduse?: number }>();
  for (const line of readFileSync(`${r.resultsDir}/results`, 'utf8').trim().split('\n')) {
    const [exp, cell, iops] = line.split(' ');
    const row = rows.get(cell) ?? {};
    row[exp as 'ublk' | 'vduse'] = Number(iops);
    rows.set(cell, row);
  }
  if (json)
    process.stdout.write(JSON.stringify({ runtime, skip: skip || undefined, cells: Object.fromEntries(rows) }) + '\n');
  if (skip)
    process.stdout.write(`${skip}\n(the VDUSE export is not available yet: only the ublk column is measured)\n`);
  process.stdout.write(`fio 4 KiB, libaio direct, ${runtime} s per cell, null:1G, notify, TCG guest\n`);
  process.stdout.write('cell            ublk kIOPS  vduse kIOPS  ublk/vduse\n');
  for (const [cell, v] of rows) {
    const k = (x?: number) => (x === undefined ? '-' : (x / 1000).toFixed(2));
    const ratio = v.ublk && v.vduse ? (v.ublk / v.vduse).toFixed(2) : '-';
    process.stdout.write(
      `${cell.padEnd(14)}  ${k(v.ublk).padStart(10)}  ${k(v.vduse).padStart(11)}  ${ratio.padStart(10)}\n`,
    );
  }
} finally {
  r.cleanup();
}
