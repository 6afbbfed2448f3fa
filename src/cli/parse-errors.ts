// oclif's own parse errors ("Parsing --queues\n Expected an integer ...", "The following error
// occurred: ...", "Missing 1 required arg: ...") rewritten into stor's one format: `<what>: <why>` and a
// hint `accepted: ...` taken from the flag's or argument's own definition — so that a bad flag reads
// the same whichever layer caught it.
import { Errors } from '@oclif/core';

interface FlagDef {
  name?: string;
  description?: string;
  options?: readonly string[];
  min?: number;
  max?: number;
  type?: string;
  aliases?: string[];
}
interface ArgDef {
  name?: string;
  description?: string;
}

const ANSI = /\x1b\[[0-9;]*m/g;

export function translateParseError(
  err: Error & { args?: ArgDef[]; flags?: string[] },
  id: string,
  flags: Record<string, FlagDef>,
  args: Record<string, ArgDef>,
): { message: string; hint: string } {
  const text = (err.message ?? '').replace(ANSI, '');
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^See more help/.test(l) && !/^The following errors? occurred:?$/.test(l));
  const usage = `stor ${id} ${Object.keys(args)
    .map((a) => a.toUpperCase())
    .join(' ')} [FLAGS]`.replace(/\s+/g, ' ');
  const helpRef = `(stor help ${id})`;
  const flagHint = (name: string): string => {
    const f = flags[name];
    if (!f) return `accepted: the flags of stor ${id} ${helpRef}`;
    if (f.options?.length) return `accepted: ${f.options.join(', ')}`;
    if (f.min !== undefined || f.max !== undefined)
      return `accepted: an integer${f.min !== undefined ? ` from ${f.min}` : ''}${f.max !== undefined ? ` to ${f.max}` : ''}`;
    return `accepted: --${name}: ${f.description ?? 'see ' + helpRef}`;
  };

  // a flag is named as the user typed it: an old spelling kept as an alias (--mode) is not renamed
  const argv = process.argv.slice(2);
  const typed = (name: string): string => {
    const typedAs = (n: string): boolean => argv.some((a) => a === `--${n}` || a.startsWith(`--${n}=`));
    const alias = flags[name]?.aliases?.find(typedAs);
    return alias && !typedAs(name) ? `--${alias}` : `--${name}`;
  };

  const unknown = (err as { flags?: unknown }).flags;
  if (err instanceof Errors.CLIError && Array.isArray(unknown) && /^Nonexistent flag/.test(text)) {
    const names = Object.keys(flags)
      .filter((n) => n !== 'json')
      .map((n) => `--${n}`);
    return {
      message: `${unknown.join(', ')}: not a flag of stor ${id}`,
      hint: `accepted: ${names.join(', ')}, --json ${helpRef}`,
    };
  }
  if (/^Missing \d+ required arg/.test(text) && Array.isArray(err.args) && err.args.length) {
    const a = err.args[0];
    return {
      message: `${(a.name ?? 'argument').toUpperCase()}: missing`,
      hint: `accepted: ${usage} — ${(a.name ?? '').toUpperCase()}: ${a.description ?? 'required'}`,
    };
  }
  if (/^Unexpected arguments?:/.test(text)) {
    return {
      message: `${text.replace(/^Unexpected arguments?:\s*/, '').split('\n')[0]}: unexpected argument`,
      hint: `accepted: ${usage}`,
    };
  }
  let m = /^Parsing --([\w-]+)/.exec(lines[0] ?? '');
  if (m) {
    const got = /received: (.*)/.exec(text)?.[1] ?? '';
    const kind = /integer/.test(text) ? 'an integer' : 'a value';
    const range = /greater than or equal to|less than or equal to/.test(text) ? ' in range' : '';
    return { message: `${typed(m[1])}: '${got}' is not ${kind}${range}`, hint: flagHint(m[1]) };
  }
  m = /^Expected --([\w-]+)=(.*) to be one of: (.*)$/.exec(lines[0] ?? '');
  if (m) return { message: `${typed(m[1])}: '${m[2]}' is not one of its values`, hint: `accepted: ${m[3]}` };
  m = /^--([\w-]+)(?:=\S*)? cannot also be provided when using --([\w-]+)/.exec(lines[0] ?? '');
  if (m) return { message: `--${m[1]}: cannot be used with --${m[2]}`, hint: `accepted: one of --${m[1]}, --${m[2]}` };
  m = /^Missing required flag:?\s*-*([\w-]+)/.exec(lines[0] ?? '');
  if (m) return { message: `--${m[1]}: required`, hint: flagHint(m[1]) };
  m = /^Flag --([\w-]+) expects a value/.exec(lines[0] ?? '');
  if (m) return { message: `${typed(m[1])}: needs a value`, hint: flagHint(m[1]) };
  return { message: lines.join(' '), hint: `accepted: ${usage} ${helpRef}` };
}
