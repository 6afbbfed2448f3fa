// Renders a BenchReport: a side-by-side table (one column per mode, the better figure
// highlighted) and a JSON document shaped like fio's where the meaning is the same.
import chalk from 'chalk';
import type { BenchReport, ModeResult } from './run.js';
import { formatSize } from '../../core/size.js';
import { sleepCostWarning } from './host.js';

const us = (ns: number): string => (ns / 1000 >= 100 ? (ns / 1000).toFixed(0) : (ns / 1000).toFixed(2));
const k = (n: number): string =>
  n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);

interface Row {
  label: string;
  values: number[];
  fmt: (v: number) => string;
  better?: 'high' | 'low';
}

export function renderTable(r: BenchReport): string {
  const res = r.results;
  const p = (m: ModeResult, key: string): number => m.latency.percentiles[key] ?? 0;
  const rows: Row[] = [
    { label: 'IOPS', values: res.map((m) => m.total.iops), fmt: k, better: 'high' },
    {
      label: 'bandwidth',
      values: res.map((m) => m.total.bwBytes),
      fmt: (v) => `${formatSize(Math.round(v))}/s`,
      better: 'high',
    },
    { label: 'lat min (µs)', values: res.map((m) => m.latency.minNs), fmt: us, better: 'low' },
    { label: 'lat mean (µs)', values: res.map((m) => m.latency.meanNs), fmt: us, better: 'low' },
    { label: 'lat p50 (µs)', values: res.map((m) => p(m, '50.000000')), fmt: us, better: 'low' },
    { label: 'lat p90 (µs)', values: res.map((m) => p(m, '90.000000')), fmt: us, better: 'low' },
    { label: 'lat p99 (µs)', values: res.map((m) => p(m, '99.000000')), fmt: us, better: 'low' },
    { label: 'lat p99.9 (µs)', values: res.map((m) => p(m, '99.900000')), fmt: us, better: 'low' },
    { label: 'lat p99.99 (µs)', values: res.map((m) => p(m, '99.990000')), fmt: us, better: 'low' },
    { label: 'lat max (µs)', values: res.map((m) => m.latency.maxNs), fmt: us, better: 'low' },
    { label: 'client CPU user (s)', values: res.map((m) => m.cpu.client.user), fmt: (v) => v.toFixed(2) },
    { label: 'client CPU sys (s)', values: res.map((m) => m.cpu.client.sys), fmt: (v) => v.toFixed(2) },
  ];
  if (res.some((m) => m.cpu.server)) {
    rows.push({
      label: 'server CPU user (s)',
      values: res.map((m) => m.cpu.server?.user ?? NaN),
      fmt: (v) => (Number.isNaN(v) ? '-' : v.toFixed(2)),
    });
    rows.push({
      label: 'server CPU sys (s)',
      values: res.map((m) => m.cpu.server?.sys ?? NaN),
      fmt: (v) => (Number.isNaN(v) ? '-' : v.toFixed(2)),
    });
  }
  rows.push({
    label: 'client sleeps per 1k I/O',
    values: res.map((m) => (m.total.ios ? (m.contextSwitches.voluntary / m.total.ios) * 1000 : 0)),
    fmt: (v) => v.toFixed(1),
  });
  rows.push({
    label: 'CPU per I/O (µs)',
    values: res.map((m) => m.cpuPerIoUs),
    fmt: (v) => v.toFixed(2),
    better: 'low',
  });
  rows.push({ label: 'IOPS per CPU', values: res.map((m) => m.iopsPerCpu), fmt: k, better: 'high' });
  if (res.some((m) => m.verify))
    rows.push({ label: 'verified reads', values: res.map((m) => m.verify?.verified ?? 0), fmt: (v) => String(v) });

  const labelW = Math.max(...rows.map((x) => x.label.length));
  const cells = rows.map((row) => row.values.map((v) => row.fmt(v)));
  const colW = res.map((m, i) => Math.max(m.mode.length, ...cells.map((c) => c[i].length)));
  const out: string[] = [];
  out.push(`${''.padEnd(labelW)}  ${res.map((m, i) => chalk.bold(m.mode.padStart(colW[i]))).join('  ')}`);
  rows.forEach((row, ri) => {
    const valid = row.values.filter((v) => Number.isFinite(v));
    const best = row.better === 'high' ? Math.max(...valid) : row.better === 'low' ? Math.min(...valid) : NaN;
    const line = cells[ri].map((c, i) => {
      const s = c.padStart(colW[i]);
      return row.better && res.length > 1 && row.values[i] === best ? chalk.green.bold(s) : s;
    });
    out.push(`${row.label.padEnd(labelW)}  ${line.join('  ')}`);
  });
  for (const c of r.comparisons) {
    out.push(
      chalk.dim(
        `${c.of} vs ${c.over}: mean latency ×${c.meanLatencyRatio.toFixed(2)}, p99 ×${c.p99LatencyRatio.toFixed(2)}, ` +
          `IOPS ×${c.iopsRatio.toFixed(2)}, CPU per I/O ×${c.cpuPerIoRatio.toFixed(2)}`,
      ),
    );
  }
  const warning = res.some((m) => m.mode !== 'poll') ? sleepCostWarning(r.host) : undefined;
  if (warning) out.push(chalk.yellow(`note: ${warning}`));
  return out.join('\n');
}

/**
 * fio-like JSON: jobs[] with read/write
 * {io_bytes, bw_bytes, iops, runtime, total_ios, lat_ns{min,max,mean,stddev,percentile}}.
 */
export function toJson(r: BenchReport, meta: { version: string }): Record<string, unknown> {
  const o = r.options;
  const side = (m: ModeResult, s: 'read' | 'write') => {
    const io = m[s];
    const frac = m.total.ios ? io.ios / m.total.ios : 0;
    return {
      io_bytes: io.bytes,
      io_kbytes: Math.round(io.bytes / 1024),
      bw_bytes: Math.round(io.bwBytes),
      bw: Math.round(io.bwBytes / 1024),
      iops: io.iops,
      runtime: m.runtimeMs,
      total_ios: io.ios,
      // one merged histogram for both directions: percentiles apply to all I/Os (stated in the schema)
      lat_ns: frac
        ? {
            min: m.latency.minNs,
            max: m.latency.maxNs,
            mean: m.latency.meanNs,
            stddev: m.latency.stddevNs,
            N: io.ios,
            percentile: m.latency.percentiles,
          }
        : { min: 0, max: 0, mean: 0, stddev: 0, N: 0 },
    };
  };
  return {
    'stor version': meta.version,
    timestamp: Math.floor(Date.now() / 1000),
    time: new Date().toISOString(),
    target: r.target,
    driver: r.driver,
    'io engine': r.ioEngineNote,
    host: { cpus: r.host.cpus, cpuidle_driver: r.host.cpuidleDriver, guest_halt_poll_ns: r.host.guestHaltPollNs },
    'global options': {
      rw: o.rw,
      rwmixread: o.rwmixread,
      bs: o.bs,
      iodepth: o.iodepth,
      numjobs: o.queues,
      runtime: o.runtimeMs,
      ramp_time: o.rampMs,
      size: o.size,
      verify: o.verify,
      direct: o.direct,
      refill: o.refill,
      spin_us: o.spinUs,
    },
    jobs: r.results.map((m) => ({
      jobname: m.mode,
      mode: m.mode,
      read: side(m, 'read'),
      write: side(m, 'write'),
      usr_cpu: (m.cpu.client.user / (m.runtimeMs / 1000)) * 100,
      ctx: m.contextSwitches.voluntary + m.contextSwitches.involuntary,
      ctx_voluntary: m.contextSwitches.voluntary,
      sys_cpu: (m.cpu.client.sys / (m.runtimeMs / 1000)) * 100,
      cpu: { client: m.cpu.client, ...(m.cpu.server ? { server: m.cpu.server } : {}) },
      cpu_per_io_us: m.cpuPerIoUs,
      iops_per_cpu: m.iopsPerCpu,
      latency: {
        min_ns: m.latency.minNs,
        mean_ns: m.latency.meanNs,
        max_ns: m.latency.maxNs,
        percentile: m.latency.percentiles,
      },
      latency_histogram: m.histogram,
      iops_timeline: { tick_ms: m.tickMs, iops: m.timeline },
      error: m.errors,
      ...(m.verify ? { verify: m.verify } : {}),
    })),
    comparisons: r.comparisons,
  };
}
