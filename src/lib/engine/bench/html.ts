// A self-contained HTML report: for each mode, the latency distribution (CDF and histogram) and
// IOPS over time (one panel per mode: a notify line at 15k would be flat on a polling mode's 1.3M
// axis), drawn as inline SVG — no scripts, no external resources — with the run's metadata (date,
// command, version, host). Legends sit above the plot area, never over a line.
import type { BenchReport, ModeResult } from './run.js';
import { tickSpans } from './stats.js';

const COLORS: Record<string, string> = { notify: '#1f77b4', poll: '#d62728', adaptive: '#2ca02c' };
const W = 640,
  H = 300,
  L = 60,
  R = 20,
  T = 34,
  B = 45;

const esc = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/**
 * Axes, ticks and grid lines of a chart h pixels tall. A tick label at the right edge is anchored at
 * its end so it stays inside the picture.
 */
function axes(
  h: number,
  xLabel: string,
  yLabel: string,
  xTicks: Array<[number, string]>,
  yTicks: Array<[number, string]>,
): string {
  const parts = [
    `<line x1="${L}" y1="${h - B}" x2="${W - R}" y2="${h - B}" stroke="#333"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${h - B}" stroke="#333"/>`,
  ];
  for (const [x, s] of xTicks)
    parts.push(
      `<line x1="${x}" y1="${h - B}" x2="${x}" y2="${h - B + 4}" stroke="#333"/>` +
        `<text class="xtick" x="${x}" y="${h - B + 16}" text-anchor="${x >= W - R - 1 ? 'end' : 'middle'}">${esc(s)}</text>`,
    );
  for (const [y, s] of yTicks)
    parts.push(
      `<line x1="${L - 4}" y1="${y}" x2="${L}" y2="${y}" stroke="#333"/><text x="${L - 6}" y="${y + 4}" text-anchor="end">${esc(s)}</text><line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#eee"/>`,
    );
  parts.push(`<text x="${(L + W - R) / 2}" y="${h - 8}" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(
    `<text transform="translate(14 ${(T + h - B) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  );
  return parts.join('');
}

/** One row of swatches in the top margin, above the plot area. */
function legend(modes: ModeResult[]): string {
  return `<g class="legend">${modes
    .map(
      (m, i) =>
        `<rect x="${L + i * 90}" y="8" width="10" height="10" fill="${COLORS[m.mode] ?? '#555'}"/>` +
        `<text x="${L + 15 + i * 90}" y="17">${esc(m.mode)}</text>`,
    )
    .join('')}</g>`;
}

/** "0.25 s", "1 s", "2.5 s": as many decimals as the value has (to the millisecond), none invented. */
export function formatSeconds(seconds: number): string {
  return `${Number(seconds.toFixed(3))} s`;
}

/** Round tick values from 0 to at most max: a step of 1, 2, 2.5 or 5 times a power of ten, 3 to 6 ticks. */
export function niceTicks(max: number): number[] {
  if (!(max > 0)) return [0];
  const raw = max / 4;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * pow).find((st) => max / st <= 5) ?? 10 * pow;
  const ticks: number[] = [];
  for (let i = 0; i * step <= max * (1 + 1e-9); i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/** Latency on a log axis from the smallest to the largest value seen. */
function logScale(results: ModeResult[]): { x: (ns: number) => number; ticks: Array<[number, string]> } {
  const vals = results.flatMap((m) => m.histogram.map(([v]) => Math.max(v, 1)));
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...vals, 1e3))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...vals, 1e4))));
  const x = (ns: number): number =>
    L + ((Math.log10(Math.max(ns, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - L - R);
  const ticks: Array<[number, string]> = [];
  for (let v = lo; v <= hi; v *= 10)
    ticks.push([x(v), v >= 1e6 ? `${v / 1e6} ms` : v >= 1e3 ? `${v / 1e3} µs` : `${v} ns`]);
  return { x, ticks };
}

function cdfChart(results: ModeResult[]): string {
  const { x, ticks } = logScale(results);
  const y = (f: number): number => H - B - f * (H - B - T);
  const lines = results.map((m) => {
    const total = m.histogram.reduce((a, [, c]) => a + c, 0);
    let seen = 0;
    const pts = m.histogram.map(([v, c]) => {
      seen += c;
      return `${x(v).toFixed(1)},${y(seen / total).toFixed(1)}`;
    });
    return `<polyline class="cdf" data-mode="${m.mode}" fill="none" stroke="${COLORS[m.mode] ?? '#555'}" stroke-width="2" points="${pts.join(' ')}"/>`;
  });
  const yTicks: Array<[number, string]> = [0, 0.25, 0.5, 0.75, 1].map((f) => [y(f), `${f * 100}%`]);
  return `<svg id="cdf" width="${W}" height="${H}" font-size="11" font-family="sans-serif">${axes(H, 'latency (log scale)', 'fraction of I/Os ≤ latency', ticks, yTicks)}${lines.join('')}${legend(results)}</svg>`;
}

function histogramChart(results: ModeResult[]): string {
  const { x, ticks } = logScale(results);
  // re-bin each mode into 60 log-spaced bins so bars are comparable
  const bins = 60;
  const x0 = L,
    x1 = W - R;
  const series = results.map((m) => {
    const counts = new Array(bins).fill(0);
    const total = m.histogram.reduce((a, [, c]) => a + c, 0);
    for (const [v, c] of m.histogram)
      counts[Math.min(bins - 1, Math.max(0, Math.floor(((x(v) - x0) / (x1 - x0)) * bins)))] += c;
    return counts.map((c) => (total ? c / total : 0));
  });
  const maxF = Math.max(0.01, ...series.flat());
  const y = (f: number): number => H - B - (f / maxF) * (H - B - T);
  const bw = (x1 - x0) / bins / Math.max(1, results.length);
  const bars = series.flatMap((s, mi) =>
    s.map((f, i) =>
      f > 0
        ? `<rect class="bar" data-mode="${results[mi].mode}" x="${(x0 + (i * (x1 - x0)) / bins + mi * bw).toFixed(1)}" y="${y(f).toFixed(1)}" width="${Math.max(1, bw - 0.5).toFixed(1)}" height="${(H - B - y(f)).toFixed(1)}" fill="${COLORS[results[mi].mode] ?? '#555'}"/>`
        : '',
    ),
  );
  const yTicks: Array<[number, string]> = [0, 0.5, 1].map((f) => [y(f * maxF), `${(f * maxF * 100).toFixed(1)}%`]);
  return `<svg id="histogram" width="${W}" height="${H}" font-size="11" font-family="sans-serif">${axes(H, 'latency (log scale)', 'share of I/Os', ticks, yTicks)}${bars.join('')}${legend(results)}</svg>`;
}

/** IOPS over time, one panel per mode with its own axis; each point at the middle of the time its tick covers. */
function timelineCharts(results: ModeResult[], runtimeMs: number): string {
  const PH = 190;
  return results
    .map((m) => {
      const spans = tickSpans(m.tickMs, runtimeMs).slice(0, m.timeline.length);
      const maxV = Math.max(1, ...m.timeline);
      const x = (ms: number): number => L + (ms / Math.max(1, runtimeMs)) * (W - L - R);
      const y = (v: number): number => PH - B - (v / maxV) * (PH - B - T);
      const pts = m.timeline.map(
        (v, i) => `${x(((spans[i]?.[0] ?? 0) + (spans[i]?.[1] ?? 0)) / 2).toFixed(1)},${y(v).toFixed(1)}`,
      );
      const xTicks = niceTicks(runtimeMs / 1000).map((sec): [number, string] => [x(sec * 1000), formatSeconds(sec)]);
      const yTicks = [0, 0.5, 1].map((f): [number, string] => [
        y(f * maxV),
        f * maxV >= 1e6
          ? `${((f * maxV) / 1e6).toFixed(2)}M`
          : f * maxV >= 1e3
            ? `${((f * maxV) / 1e3).toFixed(1)}k`
            : `${Math.round(f * maxV)}`,
      ]);
      const color = COLORS[m.mode] ?? '#555';
      return (
        `<svg id="timeline-${esc(m.mode)}" class="timeline" width="${W}" height="${PH}" font-size="11" font-family="sans-serif">` +
        axes(PH, 'time', 'IOPS', xTicks, yTicks) +
        `<rect x="${L}" y="8" width="10" height="10" fill="${color}"/><text x="${L + 15}" y="17">${esc(m.mode)}: ${Math.round(m.total.iops).toLocaleString('en')} IOPS over the run</text>` +
        `<polyline class="iops" data-mode="${esc(m.mode)}" fill="none" stroke="${color}" stroke-width="2" points="${pts.join(' ')}"/></svg>`
      );
    })
    .join('\n');
}

/** Who ran what, where and when: printed at the head of the report. */
export interface RunMeta {
  date: string;
  command: string;
  version: string;
  host: string;
}

export function renderHtml(r: BenchReport, tableText: string, meta?: RunMeta): string {
  const o = r.options;
  const rows = r.results
    .map(
      (m) =>
        `<tr><td>${m.mode}</td><td>${Math.round(m.total.iops).toLocaleString('en')}</td><td>${(m.latency.meanNs / 1000).toFixed(2)}</td>` +
        `<td>${((m.latency.percentiles['99.000000'] ?? 0) / 1000).toFixed(2)}</td><td>${((m.latency.percentiles['99.990000'] ?? 0) / 1000).toFixed(2)}</td>` +
        `<td>${(m.cpu.client.user + m.cpu.client.sys).toFixed(2)}</td><td>${m.cpu.server ? (m.cpu.server.user + m.cpu.server.sys).toFixed(2) : '-'}</td><td>${m.cpuPerIoUs.toFixed(2)}</td></tr>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stor bench: ${esc(r.target)}</title>
<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child{text-align:left}section{margin:18px 0}pre{background:#f8f8f8;padding:8px;font-size:12px}</style></head>
<body>
<h1>stor bench</h1>
${meta ? `<p id="meta">Run ${esc(meta.date)} on <b>${esc(meta.host)}</b> with stor ${esc(meta.version)}: <code>${esc(meta.command)}</code></p>` : ''}
<p>Target: <b>${esc(r.target)}</b> (${esc(r.driver)}). Workload: ${esc(o.rw)}${o.rw.includes('rw') ? ` (${o.rwmixread}% reads)` : ''}, ${o.bs} B blocks,
queue depth ${o.iodepth} × ${o.queues} queue(s), ${o.runtimeMs / 1000} s per mode after ${o.rampMs / 1000} s ramp.</p>
<p><small>${esc(r.ioEngineNote)}</small></p>
<section><h2>Summary</h2><table id="summary"><tr><th>mode</th><th>IOPS</th><th>mean µs</th><th>p99 µs</th><th>p99.99 µs</th><th>client CPU s</th><th>server CPU s</th><th>CPU µs / I/O</th></tr>
${rows}</table></section>
<section><h2>Latency distribution (CDF)</h2>${cdfChart(r.results)}</section>
<section><h2>Latency histogram</h2>${histogramChart(r.results)}</section>
<section><h2>IOPS over time</h2>${timelineCharts(r.results, o.runtimeMs)}</section>
<section><h2>Table</h2><pre>${esc(tableText)}</pre></section>
</body></html>
`;
}
