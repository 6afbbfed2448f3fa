// Turns the native engine's raw results (a merged log-linear latency histogram, per-thread
// counters and CPU) into the figures people compare: IOPS, bandwidth, percentiles, CPU per I/O.
import type { BenchRunResult } from '../../native.js';

export const PERCENTILES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99] as const;

export interface LatencySummary {
  minNs: number; maxNs: number; meanNs: number; stddevNs: number; count: number;
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
  const mag = Math.floor(Math.log2(lo)) - 5;   // bucket width 2^(mag-1)
  return lo + 2 ** (mag - 1);
}

export function summarizeLatency(r: BenchRunResult): LatencySummary {
  const count = r.threads.reduce((a, t) => a + t.readIos + t.writeIos, 0);
  const sum = r.threads.reduce((a, t) => a + t.latSumNs, 0);
  const mins = r.threads.filter((t) => t.readIos + t.writeIos > 0).map((t) => t.latMinNs);
  const mean = count ? sum / count : 0;
  let varSum = 0;
  for (const [v, c] of r.histogram) varSum += c * (v - mean) ** 2;
  const percentiles: Record<string, number> = {};
  for (const p of PERCENTILES) percentiles[p.toFixed(6)] = percentile(r.histogram, count, p);
  return {
    minNs: mins.length ? Math.min(...mins) : 0, maxNs: Math.max(0, ...r.threads.map((t) => t.latMaxNs)),
    meanNs: mean, stddevNs: count ? Math.sqrt(varSum / count) : 0, count, percentiles,
  };
}

/** IOPS per tick, summed over threads. */
export function timeline(r: BenchRunResult): number[] {
  const len = Math.max(0, ...r.threads.map((t) => t.timeline.length));
  const out: number[] = new Array(len).fill(0);
  for (const t of r.threads) t.timeline.forEach((v, i) => { out[i] += v; });
  // the last ticks are partial or empty: drop trailing zeros
  while (out.length && out[out.length - 1] === 0) out.pop();
  return out.map((v) => v * (1000 / r.tickMs));
}
