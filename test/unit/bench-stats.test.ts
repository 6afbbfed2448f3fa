// The figures of `stor bench` (issue #16, #10): percentiles never lie outside what was observed (the
// middle of a log-linear bucket can be above the slowest I/O); IOPS over time divides a last tick cut
// short by the end of the run by its own length (the line fell to near 0 at its last point); time-axis
// labels say the value where they stand (0.25 s, not 0.3 s).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { summarizeLatency, timeline, tickSpans } from '../../src/lib/engine/bench/stats.js';
import { formatSeconds, niceTicks } from '../../src/lib/engine/bench/html.js';
import type { BenchRunResult, BenchThreadResult } from '../../src/lib/native.js';

const t = suite('unit: bench figures');

function thread(o: Partial<BenchThreadResult>): BenchThreadResult {
  return {
    readIos: 0,
    writeIos: 0,
    readBytes: 0,
    writeBytes: 0,
    errors: 0,
    verifyFailures: 0,
    verified: 0,
    latMinNs: 0,
    latMaxNs: 0,
    latSumNs: 0,
    cpuUser: 0,
    cpuSys: 0,
    ctxVoluntary: 0,
    ctxInvoluntary: 0,
    firstBadOffset: 0,
    timeline: [],
    ...o,
  };
}

t('percentiles are clamped to the observed min and max', () => {
  // 1000 I/Os all in the bucket starting at 8192 ns (width 128): its middle, 8256, is above the max seen (8200)
  const r: BenchRunResult = {
    threads: [thread({ readIos: 1000, latMinNs: 8192, latMaxNs: 8200, latSumNs: 8196 * 1000 })],
    histogram: [[8192, 1000]],
    wallSeconds: 1,
    tickMs: 100,
  };
  const s = summarizeLatency(r);
  for (const [k, v] of Object.entries(s.percentiles)) {
    assert.ok(v <= s.maxNs, `p${k} = ${v} ns exceeds max ${s.maxNs}`);
    assert.ok(v >= s.minNs, `p${k} = ${v} ns is below min ${s.minNs}`);
  }
  assert.is(s.percentiles['99.990000'], 8200);
});

t(
  'IOPS over time: a last tick cut short is divided by its own length; completions drained after the run are not a point',
  () => {
    // 250 ms run, 100 ms ticks: ticks [0,100) [100,200) [200,250); 1000 I/Os per 100 ms, then 3 drained
    const r: BenchRunResult = {
      threads: [thread({ timeline: [1000, 1000, 500, 3] })],
      histogram: [],
      wallSeconds: 0.25,
      tickMs: 100,
    };
    const tl = timeline(r, 250);
    assert.is(tl.length, 3);
    assert.equal(tl.map(Math.round), [10000, 10000, 10000]);
    assert.equal(tickSpans(100, 250), [
      [0, 100],
      [100, 200],
      [200, 250],
    ]);
    // a 5 s run in 100 ms ticks: 50 points, the completions drained after 5 s (tick 50) dropped
    const long: BenchRunResult = {
      threads: [thread({ timeline: [...new Array(50).fill(2000), 8] })],
      histogram: [],
      wallSeconds: 5,
      tickMs: 100,
    };
    const tl5 = timeline(long, 5000);
    assert.is(tl5.length, 50);
    assert.ok(Math.min(...tl5) === 20000, `a point fell: ${Math.min(...tl5)}`);
  },
);

t('time-axis labels: round steps, printed as they are (0.25 s, not 0.3 s)', () => {
  assert.is(formatSeconds(0.25), '0.25 s');
  assert.is(formatSeconds(0.1 + 0.2), '0.3 s');
  assert.is(formatSeconds(5), '5 s');
  assert.equal(niceTicks(0.25), [0, 0.05, 0.1, 0.15, 0.2, 0.25]);
  assert.equal(niceTicks(5), [0, 1, 2, 3, 4, 5]);
  assert.equal(niceTicks(1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  for (const max of [0.1, 0.3, 0.7, 1.5, 2, 7, 10, 60]) {
    const ticks = niceTicks(max);
    assert.ok(ticks.length >= 3 && ticks.length <= 6, `${max}: ${ticks.length} ticks`);
    assert.ok(ticks[ticks.length - 1] <= max * (1 + 1e-9), `${max}: a tick past the end`);
  }
});

t.run();
