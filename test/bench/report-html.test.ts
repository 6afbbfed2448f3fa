// The --report page, rendered by a real browser (Debian's headless Chromium): it must carry, for
// every mode, the latency CDF, the histogram and IOPS over time, and render to a non-trivial image.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';

const t = suite('stor bench --report (headless Chromium)');
const dir = mkdtempSync(join(tmpdir(), 'stor-report-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));
const CHROMIUM = '/usr/bin/chromium';

function chromium(args: string[]) {
  // flags that keep Chromium off the (closed) network and out of the desktop session
  return spawnSync(
    CHROMIUM,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${join(dir, 'profile')}`,
      ...args,
    ],
    { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 << 20 },
  );
}

t('the report renders in Chromium with a CDF, a histogram and IOPS over time for every mode', () => {
  assert.ok(existsSync(CHROMIUM), 'chromium is installed by scripts/setup-debian.sh');
  const html = join(dir, 'report.html');
  const r = spawnSync(
    process.execPath,
    [STOR_BIN, 'bench', '--runtime', '300ms', '--ramp', '100ms', '--iodepth', '2', '--report', html],
    { encoding: 'utf8', timeout: 60_000 },
  );
  assert.is(r.status, 0, r.stderr);
  const source = readFileSync(html, 'utf8');
  assert.not.match(source, /<script|https?:\/\//, 'self-contained: no scripts, no external resources');

  const dom = chromium(['--dump-dom', `file://${html}`]);
  assert.is(dom.status, 0, dom.stderr);
  const page = dom.stdout;
  for (const mode of ['notify', 'poll', 'adaptive']) {
    assert.match(
      page,
      new RegExp(`<polyline class="cdf" data-mode="${mode}"[^>]*points="[0-9., ]{20,}"`),
      `CDF of ${mode}`,
    );
    assert.match(page, new RegExp(`<rect class="bar" data-mode="${mode}"`), `histogram bars of ${mode}`);
    assert.match(
      page,
      new RegExp(`<polyline class="iops" data-mode="${mode}"[^>]*points="[0-9., ]+"`),
      `IOPS over time of ${mode}`,
    );
    assert.match(page, new RegExp(`<td>${mode}</td><td>[0-9,]+</td>`), `summary row of ${mode}`);
  }

  const png = join(dir, 'report.png');
  const shot = chromium(['--window-size=800,1900', `--screenshot=${png}`, `file://${html}`]);
  assert.is(shot.status, 0, shot.stderr);
  const bytes = readFileSync(png);
  assert.ok(bytes.subarray(1, 4).toString() === 'PNG', 'a PNG');
  assert.ok(statSync(png).size > 30_000, `a page with charts, not a blank one (${statSync(png).size} bytes)`);
});

t.run();
