// One style for the whole tree, enforced by `npm test`: prettier formats the TypeScript, eslint
// (with typescript-eslint) lints it, clang-format formats the C data plane. Each check runs on the
// files git tracks, so a stray build product never fails it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from '../helpers/paths.js';

const bin = (name: string): string => join(ROOT, 'node_modules', '.bin', name);
/** Runs a checker synchronously, bounded, from the repository root. */
function check(cmd: string, args: string[], timeoutMs: number): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}
const tracked = (...patterns: string[]): string[] =>
  execFileSync('git', ['ls-files', '--', ...patterns], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);

test('prettier: every TypeScript and JavaScript file is formatted', () => {
  const files = tracked('*.ts', '*.js');
  assert.ok(files.length > 50, `found only ${files.length} files`);
  const r = check(bin('prettier'), ['--check', ...files], 120_000);
  assert.is(r.code, 0, `prettier --check failed (run npx prettier --write .):\n${r.out}`);
});

test('eslint: no problems', () => {
  const r = check(bin('eslint'), ['--max-warnings', '0', '.'], 240_000);
  assert.is(r.code, 0, `eslint found problems:\n${r.out}`);
});

test('clang-format: every C file is formatted, lines at most 120 columns', () => {
  const files = tracked('native/*.c', 'native/*.h');
  assert.ok(files.length > 10, `found only ${files.length} C files`);
  const r = check('clang-format', ['--dry-run', '--Werror', ...files], 120_000);
  assert.is(r.code, 0, `clang-format would change (run clang-format -i on them):\n${r.out.slice(0, 4000)}`);
});

test.run();
