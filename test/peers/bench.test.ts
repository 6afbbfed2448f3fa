// blkio-bench drives each server with 4 KiB random reads and writes, with completion by
// notification (eventfd) and by polling, at queue depth 1 and 32, one thread per served queue.
// Every run must finish cleanly and print well-formed statistics with I/O actually done.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blkioBench, describe, ok, type BenchJob, type BenchStats } from './blkio.js';
import { label, matrix, peer, withTarget, type TargetSpec } from './matrix.js';

const bench = suite('peers: blkio-bench');

const SIZE = 64 * 1024 * 1024;
const JOBS: Omit<BenchJob, 'threads'>[] = [];
for (const readwrite of ['randread', 'randwrite'] as const) {
  for (const poll of [false, true]) for (const iodepth of [1, 32]) JOBS.push({ readwrite, poll, iodepth, runtimeS: 1 });
}

function jobName(j: Omit<BenchJob, 'threads'>): string {
  return `${j.readwrite} ${j.poll ? 'poll' : 'notify'} iodepth=${j.iodepth}`;
}

function checkStats(s: BenchStats, where: string, blocksize = 4096): void {
  assert.ok(s.kiops > 0, `${where}: kiops ${s.kiops}`);
  // gips is printed with 3 decimals: a slow thread rounds to 0.000, so check it against kiops instead
  const expected = (s.kiops * 1000 * blocksize) / 2 ** 30;
  assert.ok(
    Math.abs(s.gips - expected) <= 0.0006 + expected * 0.01,
    `${where}: gips ${s.gips}, kiops ${s.kiops} means ${expected.toFixed(4)}`,
  );
  assert.ok(s.calls > 0, `${where}: calls ${s.calls}`);
  assert.ok(
    s.min_lat_us > 0 && s.min_lat_us <= s.mean_lat_us && s.mean_lat_us <= s.max_lat_us,
    `${where}: latencies min ${s.min_lat_us} mean ${s.mean_lat_us} max ${s.max_lat_us} out of order`,
  );
  assert.ok(s.max_completions >= 1, `${where}: max_completions ${s.max_completions}`);
}

async function runAll(spec: TargetSpec, extraArgs?: string[]): Promise<void> {
  const code = await withTarget(spec, { size: SIZE, image: 'create', extraArgs: { stor: extraArgs } }, async (t) => {
    for (const j of JOBS) {
      const name = `${t.label}${extraArgs ? ` ${extraArgs.join(' ')}` : ''} ${jobName(j)}`;
      const { result, out } = await peer(t, () => blkioBench(t.socket, { ...j, threads: spec.queues }));
      assert.ok(ok(result), `${name}: ${describe(result)}`);
      assert.is(out!.threads.length, spec.queues, `${name}: threads`);
      checkStats(out!.aggregate, `${name} aggregate`);
      out!.threads.forEach((th, i) => checkStats(th, `${name} thread ${i}`));
      // With a queue depth of 32 a batch must sometimes bring more than one completion.
      if (j.iodepth === 32)
        assert.ok(out!.aggregate.max_completions > 1, `${name}: never more than one completion per call`);
      else assert.is(out!.aggregate.max_completions, 1, `${name}: more completions than requests in flight`);
    }
  });
  assert.is(code, 0, 'server exit code after SIGTERM');
}

const WHAT = `${JOBS.length} runs (randread/randwrite x notify/poll x iodepth 1/32) finish with kiops > 0 on every queue`;
for (const spec of matrix()) bench(`${label(spec)}: ${WHAT}`, () => runAll(spec));

// The matrix runs stor in its default mode (adaptive, like qsd's iothread). Its other two server
// modes take different paths (never spin / never sleep); qsd's export has no switch for them.
for (const mode of ['notify', 'poll']) {
  const spec: TargetSpec = { server: 'stor', backend: 'null', queues: 1 };
  bench(`${label(spec)} --mode ${mode}: ${WHAT}`, () => runAll(spec, ['--mode', mode]));
}

bench.run();
