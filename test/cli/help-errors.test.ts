// Help, version and the error format (issue #16): `stor help [COMMAND]`, `-h`, `--help`, `-v` work
// without oclif's help plugin; the top-level help lists only commands that exist; an unknown command
// is one `stor: ...` line with exit 2 (a JSON error with --json); oclif's own texts ("The following
// error occurred:", "Missing 1 required arg:" joined with ';', " ›   Error:") never reach the user — every
// bad flag or argument reads `stor: <what>: <why>` + `  accepted: ...`; NO_COLOR is honoured on a TTY.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { assertCleanError, describeRun, stor } from '../client/helpers.js';
import { storInPty } from '../helpers/pty.js';

const help = suite('cli: help, version and one error format');
const dir = mkdtempSync(join(tmpdir(), 'stor-help-'));
help.after(() => rmSync(dir, { recursive: true, force: true }));

const COMMANDS = ['attach', 'bench', 'copy', 'info', 'read', 'serve', 'write'];

for (const args of [['help'], ['-h'], ['--help']]) {
  help(`stor ${args.join(' ')}: exit 0, lists the seven commands and nothing that does not exist`, async () => {
    const r = await stor(args);
    assert.is(r.code, 0, describeRun(r));
    for (const c of COMMANDS)
      assert.match(r.stdout, new RegExp(`^\\s+${c}\\s`, 'm'), `${c} missing: ${describeRun(r)}`);
    assert.not.match(r.stdout, /SPDK|JSON-RPC|daemon/i, `advertises a command that does not exist: ${describeRun(r)}`);
  });
}

for (const args of [
  ['help', 'copy'],
  ['copy', '-h'],
  ['copy', '--help'],
]) {
  help(`stor ${args.join(' ')}: exit 0, the copy command's help`, async () => {
    const r = await stor(args);
    assert.is(r.code, 0, describeRun(r));
    assert.match(r.stdout, /--dst-offset/);
    assert.match(r.stdout, /stor copy SOURCE DESTINATION/);
  });
}

for (const flag of ['-v', '--version']) {
  help(`stor ${flag}: exit 0, prints the version`, async () => {
    const r = await stor([flag]);
    assert.is(r.code, 0, describeRun(r));
    assert.match(r.stdout, /^stor\/\d+\.\d+\.\d+ /);
  });
}

help(
  'an unknown command (stor bogus, stor help bogus, stor --bogus) -> exit 2, one line naming it, the commands as the hint',
  async () => {
    for (const args of [['bogus'], ['help', 'bogus'], ['--bogus']]) {
      const r = await stor(args);
      assertCleanError(r, 2, /bogus/);
      assert.match(r.stderr, /accepted: .*copy/, describeRun(r));
      assert.not.match(r.stderr, /›|Error:/, describeRun(r));
    }
  },
);

help('an unknown command with --json -> {"error":{"code":2,...}} on stdout', async () => {
  const r = await stor(['bogus', '--json']);
  assert.is(r.code, 2, describeRun(r));
  const doc = JSON.parse(r.stdout) as { error: { code: number; message: string; hint: string } };
  assert.is(doc.error.code, 2);
  assert.match(doc.error.message, /bogus/);
});

const BAD: Array<[string[], RegExp]> = [
  [['info', 'null:1M', '--queues', '0'], /^stor: --queues: '0'/],
  [['info', 'null:1M', '--queues', 'two'], /^stor: --queues: 'two'/],
  [['info', 'null:1M', '--completion', 'spin'], /^stor: --completion: 'spin'/],
  [['info', 'null:1M', '--timeout'], /^stor: --timeout: /],
  [['write', 'null:1M', '--input', 'x', '--pattern', '1'], /^stor: --input: cannot be used with --pattern/],
  [['read', 'null:1M'], /^stor: --length: required/],
  [['copy', 'null:1M'], /^stor: DESTINATION: missing/],
  [['copy', 'null:1M', 'null:1M', 'extra'], /^stor: extra: unexpected argument/],
  [['copy', 'null:1M', 'null:1M', '--bogus'], /^stor: --bogus: not a flag of stor copy/],
  [['info'], /^stor: TARGET: missing/],
  [['bench', '--rw', 'foo'], /^stor: --rw: 'foo'/],
  [['serve', '--mode', 'turbo'], /^stor: --mode: 'turbo'/],
  [['serve', '--completion', 'turbo'], /^stor: --completion: 'turbo'/],
];

help(
  `oclif's texts never leak: each bad flag or argument is 'stor: <what>: <why>' + '  accepted: ...', exit 2 (${BAD.length} cases)`,
  async () => {
    const failures: string[] = [];
    for (let i = 0; i < BAD.length; i += 4) {
      const rs = await Promise.all(BAD.slice(i, i + 4).map(async ([args, re]) => ({ r: await stor(args), re })));
      for (const { r, re } of rs) {
        try {
          assertCleanError(r, 2, re);
          assert.not.match(r.stderr, /The following errors? occurred|;|›|Error:|See more help/, 'an oclif text leaked');
          assert.match(r.stderr.split('\n')[1] ?? '', /^ {2}accepted: /, 'no `accepted:` hint line');
          const j = await stor([...r.args, '--json']);
          const doc = JSON.parse(j.stdout) as { error: { code: number; message: string; hint: string } };
          assert.is(doc.error.code, 2, 'JSON error code');
          assert.match(doc.error.hint, /^accepted: /, 'JSON hint');
        } catch (e) {
          failures.push(`${r.args.join(' ')}: ${(e as Error).message}\n${describeRun(r)}`);
        }
      }
    }
    assert.is(failures.length, 0, `\n${failures.join('\n\n')}`);
  },
);

help(
  'NO_COLOR is honoured on a terminal: stor info null:1M under a pty has colour codes without it and none with it',
  async () => {
    const plain = await storInPty(['info', 'null:1M'], {
      columns: 80,
      pidFile: join(dir, 'p1'),
      timeoutMs: 20_000,
      env: { NO_COLOR: '', FORCE_COLOR: '' },
    }).result;
    assert.is(plain.code, 0, plain.stdout);
    assert.match(
      plain.stdout,
      /\x1b\[\d+m/,
      `the control run shows no colour, so the check below would prove nothing: ${JSON.stringify(plain.stdout)}`,
    );
    const none = await storInPty(['info', 'null:1M'], {
      columns: 80,
      pidFile: join(dir, 'p2'),
      timeoutMs: 20_000,
      env: { NO_COLOR: '1', FORCE_COLOR: '' },
    }).result;
    assert.is(none.code, 0, none.stdout);
    assert.not.match(none.stdout, /\x1b\[/, `colour codes with NO_COLOR=1: ${JSON.stringify(none.stdout)}`);
  },
);

help.run();
