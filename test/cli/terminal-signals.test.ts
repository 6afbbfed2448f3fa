// Terminals and signals (issue #16, item 2 and "interrupted copy"): under a real pty that reports 0
// columns, copy and bench finish and print no progress noise (a spinner that divides by the width
// looped there forever at 100% CPU, deaf to SIGTERM); on an ordinary pty the progress line is cleared.
// SIGTERM, SIGINT and SIGHUP end a running copy or bench (and read, write) promptly, as killed by that signal (status
// 143/130/129), with one line saying how far it got — or, with --json, a JSON error document on stdout.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { describeRun, stor } from '../client/helpers.js';
import { readPid, storInPty, waitForThread } from '../helpers/pty.js';
import type { RunResult } from '../helpers/run.js';

const term = suite('cli: zero-width terminals and signals');
const dir = mkdtempSync(join(tmpdir(), 'stor-term-'));
term.after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const pidFile = (): string => join(dir, `pid-${++n}`);
const show = (r: RunResult): string =>
  `status ${r.code} signal ${r.signal} timedOut ${r.timedOut} after ${r.ms} ms; ` +
  `output (${r.stdout.length} chars): ${JSON.stringify(r.stdout.slice(-600))} stderr: ${r.stderr.slice(-300)}`;
const SIGNAL_STATUS = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;
// A copy between two 1 PiB null devices runs for hours: long enough to be interrupted.
const ENDLESS_COPY = ['copy', 'null:1P', 'null:1P'];

term('copy null:64M FILE on a 0-column pty finishes promptly, exit 0, with no progress noise', async () => {
  const out = join(dir, 'zero-cols.img');
  const r = await storInPty(['copy', 'null:64M', out], { columns: 0, pidFile: pidFile(), timeoutMs: 30_000 }).result;
  assert.not.ok(r.timedOut, `hung: ${show(r)}`);
  assert.is(r.code, 0, show(r));
  assert.ok(r.stdout.length < 1000, `wrote ${r.stdout.length} characters to the terminal: ${show(r)}`);
  assert.not.match(r.stdout, /\x1b\[/, `cursor codes on a 0-column terminal: ${show(r)}`);
  assert.match(r.stdout, /copied 64 MiB/);
  assert.is(statSync(out).size, 64 << 20);
});

term('bench null:64M on a 0-column pty finishes promptly, exit 0, table printed, no cursor codes', async () => {
  const r = await storInPty(['bench', 'null:64M', '--runtime', '300ms', '--ramp', '0s', '--modes', 'notify'], {
    columns: 0,
    pidFile: pidFile(),
    timeoutMs: 30_000,
  }).result;
  assert.not.ok(r.timedOut, `hung: ${show(r)}`);
  assert.is(r.code, 0, show(r));
  assert.match(r.stdout, /IOPS/);
  assert.not.match(r.stdout, /\x1b\[\d*[AGK]/, `cursor codes on a 0-column terminal: ${show(r)}`);
});

term('copy on a 30-column pty: the progress line is cut to the width and cleared before the summary', async () => {
  // --no-zero-detect keeps a 4 GiB null copy busy for about a second: a few progress updates
  const r = await storInPty(['copy', 'null:4G', 'null:4G', '--no-zero-detect', '--chunk', '64k', '--iodepth', '1'], {
    columns: 30,
    pidFile: pidFile(),
    timeoutMs: 60_000,
  }).result;
  assert.is(r.code, 0, show(r));
  // a line starts again at \r or at "cursor to column 1" (ESC [ G, ESC [ 1 G), which terminals treat alike
  for (const seg of r.stdout.split(/\r|\n|\x1b\[1?G/)) {
    const visible = seg.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    assert.ok(
      visible.length < 30 || /^copied /.test(visible),
      `a line wider than the 30-column terminal: ${JSON.stringify(visible)}`,
    );
  }
  const last = r.stdout.lastIndexOf('copied ');
  assert.ok(last >= 0, show(r));
  assert.match(
    r.stdout.slice(0, last),
    /(?:\r|\x1b\[1?G)\x1b\[[02]?K(?:\x1b\[1?G)?$|^$/,
    `the progress line was not cleared before the summary: ${show(r)}`,
  );
});

for (const [cols, sig] of [
  [0, 'SIGTERM'],
  [80, 'SIGINT'],
  [80, 'SIGHUP'],
  [0, 'SIGINT'],
] as const) {
  term(
    `copy on a ${cols}-column pty, ${sig}: ends within 5 s with status ${SIGNAL_STATUS[sig]} and says how far it got`,
    async () => {
      const run = storInPty(ENDLESS_COPY, { columns: cols, pidFile: pidFile(), timeoutMs: 40_000 });
      const pid = await readPid(run.pidFile, 15_000);
      assert.ok(pid, 'stor did not start');
      if (!(await waitForThread(pid!, 'stor-copy', 15_000)))
        assert.unreachable(`no copy thread appeared: ${show(await run.result)}`);
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      process.kill(pid!, sig);
      const r = await run.result;
      assert.not.ok(r.timedOut, `${sig} was ignored: ${show(r)}`);
      assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms to end after ${sig}`);
      assert.is(r.code, SIGNAL_STATUS[sig], show(r));
      if (sig !== 'SIGHUP') {
        // after a hang-up the terminal is gone: nothing to read the message
        assert.match(
          r.stdout,
          new RegExp(`stor: copy: interrupted by ${sig} after copying \\S+ \\S+ of 1 PiB`),
          show(r),
        );
      }
    },
  );
}

term('bench on a 0-column pty, SIGTERM: ends within 5 s with status 143 and names the mode it was in', async () => {
  const run = storInPty(['bench', 'null:64M', '--runtime', '60s', '--ramp', '0s', '--modes', 'notify'], {
    columns: 0,
    pidFile: pidFile(),
    timeoutMs: 40_000,
  });
  const pid = await readPid(run.pidFile, 15_000);
  if (!pid || !(await waitForThread(pid, 'stor-bench', 15_000)))
    assert.unreachable(`no bench thread: ${show(await run.result)}`);
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  process.kill(pid!, 'SIGTERM');
  const r = await run.result;
  assert.not.ok(r.timedOut, `SIGTERM was ignored: ${show(r)}`);
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  assert.is(r.code, 143, show(r));
  assert.match(r.stdout, /stor: bench: interrupted by SIGTERM in mode notify/, show(r));
});

term(
  'copy --json (no terminal), SIGTERM: a JSON error document on stdout {"error":{"code":143,...}}, ended by SIGTERM',
  async () => {
    let child: import('node:child_process').ChildProcess | undefined;
    const done = stor([...ENDLESS_COPY, '--json'], 30_000, {}, (p) => {
      child = p;
    });
    assert.ok(await waitForThread(child!.pid!, 'stor-copy', 15_000), 'no copy thread appeared');
    await new Promise((r) => setTimeout(r, 300));
    child!.kill('SIGTERM');
    const r = await done;
    assert.not.ok(r.timedOut, describeRun(r));
    assert.is(r.signal, 'SIGTERM', describeRun(r));
    const doc = JSON.parse(r.stdout) as { error: { code: number; message: string; signal: string } };
    assert.is(doc.error.code, 143);
    assert.is(doc.error.signal, 'SIGTERM');
    assert.match(doc.error.message, /interrupted by SIGTERM after copying/);
    assert.is(r.stderr.trim(), '', 'nothing on stderr with --json');
  },
);

for (const [cmd, args, re] of [
  [
    'read',
    ['read', 'null:1P', '--length', '1P', '-o', '/dev/null'],
    /^stor: read: interrupted by SIGTERM after reading \d+ of 1125899906842624 bytes$/,
  ],
  [
    'write',
    ['write', 'null:1P', '--pattern', '1', '--length', '1P'],
    /^stor: write: interrupted by SIGTERM after sending \d+ of 1125899906842624 bytes \(not flushed\)$/,
  ],
] as const) {
  term(
    `${cmd} of 1 PiB, SIGTERM after a second: ended by SIGTERM within 5 s, one line saying how far it got`,
    async () => {
      let child: import('node:child_process').ChildProcess | undefined;
      const done = stor([...args], 30_000, {}, (p) => {
        child = p;
      });
      await new Promise((r) => setTimeout(r, 1500));
      const t0 = Date.now();
      child!.kill('SIGTERM');
      const r = await done;
      assert.ok(Date.now() - t0 < 5000, describeRun(r));
      assert.is(r.signal, 'SIGTERM', describeRun(r));
      assert.match(r.stderr.trim(), re, describeRun(r));
    },
  );
}

term.run();
