// bench/RESULTS.md holds one section per script and setting, between <!-- TAG:start --> and
// <!-- TAG:end --> markers; a script's run replaces its own section and leaves the others alone.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

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
