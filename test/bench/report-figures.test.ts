// `stor bench` figures and --report (issue #16, #10), from a real run on an in-process null target:
// every percentile lies between the observed min and max; an unwritable --report is refused with
// exit 2 before the benchmark runs; the report carries the run's metadata (date, command, version,
// host), draws IOPS over time one panel per mode, each point at the middle of the time its tick
// covers (the rates themselves: test/unit/bench-stats), each time label where its value is, and
// keeps legends out of the plot area.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stor, assertCleanError, describeRun } from '../client/helpers.js';

const t = suite('stor bench: figures and --report');
const dir = mkdtempSync(join(tmpdir(), 'stor-figures-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));

t('every percentile of every mode lies within [min, max] (--json)', async () => {
  const r = await stor(['bench', 'null:64M', '--runtime', '300ms', '--ramp', '0s', '--iodepth', '4', '--json'], 60_000);
  assert.is(r.code, 0, describeRun(r));
  const doc = JSON.parse(r.stdout) as {
    jobs: Array<{
      jobname: string;
      read: { lat_ns: { min: number; max: number; percentile: Record<string, number> } };
    }>;
  };
  for (const j of doc.jobs) {
    const l = j.read.lat_ns;
    for (const [p, v] of Object.entries(l.percentile))
      assert.ok(v >= l.min && v <= l.max, `${j.jobname} p${p} = ${v} outside [${l.min}, ${l.max}]`);
  }
});

t('--report to a path that cannot be written -> exit 2 at once, before a 20 s benchmark', async () => {
  const notDir = join(dir, 'file.txt');
  writeFileSync(notDir, 'x');
  for (const path of [join(dir, 'missing', 'r.html'), join(notDir, 'r.html'), dir]) {
    const r = await stor(['bench', 'null:64M', '--runtime', '20s', '--modes', 'notify', '--report', path], 60_000);
    assertCleanError(r, 2, /--report/);
    assert.ok(r.ms < 10_000, `took ${r.ms} ms: the benchmark ran first`);
  }
});

t(
  'the report: metadata, one IOPS panel per mode, a point per tick at the middle of the time it covers, honest time labels, legends above the plots',
  async () => {
    const html = join(dir, 'r.html');
    const runtimeMs = 250;
    const r = await stor(
      ['bench', 'null:64M', '--runtime', `${runtimeMs}ms`, '--ramp', '100ms', '--iodepth', '2', '--report', html],
      60_000,
    );
    assert.is(r.code, 0, describeRun(r));
    assert.match(r.stdout, /IOPS/, 'the table is printed');
    const page = readFileSync(html, 'utf8');
    const meta = /<p id="meta">(.*?)<\/p>/.exec(page)?.[1] ?? '';
    assert.match(meta, /\d{4}-\d\d-\d\dT\d\d:\d\d/, `date in ${meta}`);
    assert.match(meta, /stor bench null:64M --runtime 250ms/, `command in ${meta}`);
    assert.match(meta, /stor \d+\.\d+\.\d+/, `version in ${meta}`);
    assert.match(meta, /Linux/, `host in ${meta}`);
    for (const mode of ['notify', 'poll', 'adaptive']) {
      const svg = new RegExp(`<svg id="timeline-${mode}"[^>]*>(.*?)</svg>`).exec(page)?.[1];
      assert.ok(svg, `no IOPS panel of its own for ${mode}`);
      const pts = (/<polyline class="iops"[^>]*points="([^"]*)"/.exec(svg!)?.[1] ?? '')
        .trim()
        .split(' ')
        .map((p) => p.split(',').map(Number));
      assert.ok(pts.length >= 2, `${mode}: ${pts.length} points`);
      // each time label stands where its value is: x = L + t / runtime * (W - L - R)
      const ticks = [...svg!.matchAll(/class="xtick" x="([\d.]+)"[^>]*>([\d.]+) s</g)].map((m) => [
        Number(m[1]),
        Number(m[2]),
      ]);
      assert.ok(ticks.length >= 3, `${mode}: ${ticks.length} time labels`);
      const [x0] = ticks[0];
      const scale = (ticks[ticks.length - 1][0] - x0) / (ticks[ticks.length - 1][1] * 1000);
      for (const [x, sec] of ticks)
        assert.ok(Math.abs(x0 + sec * 1000 * scale - x) < 1, `${mode}: label ${sec} s at x ${x}`);
      // one point per 100 ms tick of the 250 ms window (none for completions drained after it), each at
      // the middle of the time it covers: 50, 150 and 225 ms (the last tick is 50 ms long)
      assert.is(pts.length, 3, `${mode}: ${pts.length} points for a 250 ms run in 100 ms ticks`);
      pts.forEach(([x], i) =>
        assert.ok(Math.abs(x - (x0 + [50, 150, 225][i] * scale)) < 1, `${mode}: point ${i} at x ${x}`),
      );
      assert.ok(
        Math.abs(ticks[ticks.length - 1][1] * 1000 - runtimeMs) < 1 || ticks[ticks.length - 1][1] * 1000 < runtimeMs,
        'a label past the end of the run',
      );
    }
    // legends in the top margin: every legend swatch above the top of the plot areas (their y axis starts at y1)
    for (const svg of page.matchAll(/<svg id="(cdf|histogram)"[^>]*>(.*?)<\/svg>/g)) {
      const plotTop = Number(/<line x1="(\d+)" y1="([\d.]+)" x2="\1" y2="[\d.]+" stroke="#333"\/>/.exec(svg[2])?.[2]);
      for (const m of svg[2].matchAll(/<g class="legend">(.*?)<\/g>/g)) {
        for (const y of [...m[1].matchAll(/<rect x="[\d.]+" y="([\d.]+)" width="10" height="10"/g)].map((k) =>
          Number(k[1]),
        )) {
          assert.ok(y + 10 <= plotTop, `${svg[1]}: a legend swatch at y ${y} inside the plot area (top ${plotTop})`);
        }
      }
      assert.match(svg[2], /<g class="legend">/, `${svg[1]}: no legend`);
    }
  },
);

t.run();
