// Turns the native engine's raw results (a merged log-linear latency histogram, per-thread
// counters and CPU) into the figures people compare: IOPS, bandwidth, percentiles, CPU per I/O.
import type { BenchRunResult } from '../../native.js';

export const PERCENTILES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99] as const;

export interface LatencySummary {
  minNs: number;
  maxNs: number;
  meanNs: number;
  stddevNs: number;
  count: number;
  /** fio's keys: "99.900000" -> ns */
  percentiles: Record<string, number>;
}

/** Percentile p (0..100) of a histogram given as ascending [lowerBoundNs, count] buckets. */
export function percentile(hist: Array<[number, number]>, total: number, p: number): number {
  if (!total) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i][1];
    if (seen >= rank) {
      // the middle of the bucket: its lower bound and the next bucket's lower bound
      const lo = hist[i][0];
      const hi = i + 1 < hist.length ? Math.min(hist[i + 1][0], nextBound(lo)) : nextBound(lo);
      return Math.round((lo + hi) / 2);
    }
  }
  return hist[hist.length - 1][0];
}

/** Upper bound of the log-linear bucket starting at lo (64 sub-buckets per power of two). */
function nextBound(lo: number): number {
  if (lo < 64) return lo + 1;
  const mag = Math.floor(Math.log2(lo)) - 5; // bucket width 2^(mag-1)
  return lo + 2 ** (mag - 1);
}

export function summarizeLatency(r: BenchRunResult): LatencySummary {
  const count = r.threads.reduce((a, t) => a + t.readIos + t.writeIos, 0);
  const sum = r.threads.reduce((a, t) => a + t.latSumNs, 0);
  const mins = r.threads.filter((t) => t.readIos + t.writeIos > 0).map((t) => t.latMinNs);
  const mean = count ? sum / count : 0;
  let varSum = 0;
  for (const [v, c] of r.histogram) varSum += c * (v - mean) ** 2;
  const minNs = mins.length ? Math.min(...mins) : 0;
  const maxNs = Math.max(0, ...r.threads.map((t) => t.latMaxNs));
  // A bucket's middle can lie outside what was seen (p99.99 above max when the slowest I/O sits low in
  // its bucket): a percentile is clamped to the observed minimum and maximum.
  const percentiles: Record<string, number> = {};
  for (const p of PERCENTILES)
    percentiles[p.toFixed(6)] = count ? Math.min(maxNs, Math.max(minNs, percentile(r.histogram, count, p))) : 0;
  return { minNs, maxNs, meanNs: mean, stddevNs: count ? Math.sqrt(varSum / count) : 0, count, percentiles };
}

/**
 * IOPS per tick, summed over threads: each tick's completions over the time it covers within the
 * measured window [0, runtimeMs) — a last tick cut short by the end of the run is divided by its own
 * length, not a whole tick's (which drew the line down to near 0 at its last point), and completions
 * drained after the window are not a tick of their own. Without runtimeMs: whole ticks, trailing
 * empty ticks dropped.
 */
export function timeline(r: BenchRunResult, runtimeMs?: number): number[] {
  const len = Math.max(0, ...r.threads.map((t) => t.timeline.length));
  const out: number[] = new Array(len).fill(0);
  for (const t of r.threads)
    t.timeline.forEach((v, i) => {
      out[i] += v;
    });
  if (runtimeMs === undefined) {
    while (out.length && out[out.length - 1] === 0) out.pop();
    return out.map((v) => v * (1000 / r.tickMs));
  }
  const ticks = tickSpans(r.tickMs, runtimeMs);
  return ticks.map(([start, end], i) => ((out[i] ?? 0) * 1000) / (end - start));
}

/** [startMs, endMs) of each tick of a measured window of runtimeMs: the last one may be shorter. */
export function tickSpans(tickMs: number, runtimeMs: number): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  for (let start = 0; start < runtimeMs; start += tickMs) spans.push([start, Math.min(start + tickMs, runtimeMs)]);
  return spans;
}
