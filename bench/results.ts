// bench/RESULTS.md holds one section per script and setting, between <!-- TAG:start --> and
// <!-- TAG:end --> markers; a script's run replaces its own section and leaves the others alone.
// Also the few helpers every script needs for its figures and header: median, process CPU, commit.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ROOT } from '../tools/paths.js';

/** The section tag of a script's run: its name, plus the idle setting when --halt-poll-ns chose one. */
export const resultsTag = (script: string, haltPollArg: string | undefined): string =>
  haltPollArg === undefined ? script : `${script}:halt-poll-${haltPollArg}`;

export function writeResultsSection(path: string, tag: string, section: string): void {
  const start = `<!-- ${tag}:start -->`,
    end = `<!-- ${tag}:end -->`;
  const block = `${start}\n${section.trimEnd()}\n${end}\n`;
  let text = existsSync(path)
    ? readFileSync(path, 'utf8')
    : '# Benchmark results\n\nLatest output of the scripts in bench/ (see bench/README.md).\n';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) text = text.slice(0, a) + block + text.slice(b + end.length).replace(/^\n/, '');
  else text = `${text.trimEnd()}\n\n${block}`;
  writeFileSync(path, text);
}

/** The median of xs (the mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** utime + stime of every thread of pid so far, in seconds (0 once it is gone). */
export function processCpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100; // USER_HZ
  } catch {
    return 0;
  }
}

/** The checkout's short commit id, for the section header ('' outside a checkout). */
export function headCommit(): string {
  try {
    return execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}
