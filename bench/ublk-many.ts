// What one ublk disk costs in a process that serves many (libubd's ask): the resident memory and the
// threads of one process serving 1, 16 and 64 `null:` disks (1 queue, depth 128 each), measured in
// the 6.12 test guest (the host kernel has no ublk). Each count runs in a fresh process so the figures
// are not mixed with an earlier run's; the per-device cost is the slope between 1 and 64 disks.
//
//   node dist/bench/ublk-many.js                 boots the guest and prints a table (and JSON with --json)
//   node dist/bench/ublk-many.js --inside N      (in the guest) serves N disks, prints one JSON line
import { readFileSync } from 'node:fs';
import { ROOT } from '../tools/paths.js';
import { openBackend } from '../src/lib/bdev/open.js';
import { UblkDisk } from '../src/lib/export/ublk/disk.js';
import { assertGuestOk, runGuest } from '../tools/vm.js';

interface Sample {
  disks: number;
  rssKiB: number;
  baseRssKiB: number;
  threads: number;
  baseThreads: number;
  createMs: number;
}

function status(): { rssKiB: number; threads: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rssKiB: field('VmRSS'), threads: field('Threads') };
}

function inside(n: number): void {
  const base = status();
  const t0 = Date.now();
  const disks: UblkDisk[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const { handle } = openBackend({ driver: 'null', props: { size: String(1 << 30) } });
      disks.push(UblkDisk.create(handle, { queues: 1, depth: 128, blockSize: 512, readonly: false, mode: 'notify' }));
    }
    const createMs = Date.now() - t0;
    const now = status();
    const sample: Sample = {
      disks: n,
      rssKiB: now.rssKiB,
      baseRssKiB: base.rssKiB,
      threads: now.threads,
      baseThreads: base.threads,
      createMs,
    };
    process.stdout.write(JSON.stringify(sample) + '\n');
  } finally {
    for (const d of disks) d.stop();
  }
}

async function outside(json: boolean): Promise<void> {
  const me = `${ROOT}/dist/bench/ublk-many.js`;
  const script = `set -e\nfor n in 1 16 64; do node ${me} --inside $n >> "$STOR_VM_RESULTS/samples"; done\nls /dev/ublkb* 2>/dev/null && exit 1\nexit 0\n`;
  const r = await runGuest({ script, memoryMiB: 1024, timeoutMs: 600_000 });
  try {
    assertGuestOk(r, 'ublk many-devices measurement');
    const samples = readFileSync(`${r.resultsDir}/samples`, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Sample);
    const first = samples[0];
    const last = samples[samples.length - 1];
    const perDiskKiB = (last.rssKiB - first.rssKiB) / (last.disks - first.disks);
    const perDiskThreads = (last.threads - first.threads) / (last.disks - first.disks);
    if (json) process.stdout.write(JSON.stringify({ samples, perDiskKiB, perDiskThreads }) + '\n');
    process.stdout.write('disks  RSS MiB (process before)  threads (before)  create ms\n');
    for (const s of samples)
      process.stdout.write(
        `${String(s.disks).padStart(5)}  ${(s.rssKiB / 1024).toFixed(1).padStart(7)} (${(s.baseRssKiB / 1024).toFixed(1)})` +
          `  ${String(s.threads).padStart(7)} (${s.baseThreads})  ${s.createMs}\n`,
      );
    process.stdout.write(
      `per disk (slope 1 -> 64): ${perDiskKiB.toFixed(0)} KiB resident, ${perDiskThreads.toFixed(2)} threads\n`,
    );
  } finally {
    r.cleanup();
  }
}

const args = process.argv.slice(2);
const at = args.indexOf('--inside');
if (at >= 0) inside(Number(args[at + 1]));
else await outside(args.includes('--json'));
