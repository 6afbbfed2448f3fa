import { Args, Flags } from '@oclif/core';
import { accessSync, constants, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release } from 'node:os';
import { dirname, resolve } from 'node:path';
import { StorCommand } from '../cli/command.js';
import { exitOnInterrupt } from '../cli/interrupt.js';
import { ProgressLine } from '../cli/progress.js';
import { EXIT, StorError, usageError } from '../lib/core/errors.js';
import { parsePositiveSize, SIZE_FORMS } from '../lib/core/size.js';
import { parseDuration, DURATION_FORMS } from '../lib/core/duration.js';
import { runBench, type Mode, type Refill, type Rw } from '../lib/engine/bench/run.js';
import { renderTable, toJson } from '../lib/engine/bench/report.js';
import { renderHtml } from '../lib/engine/bench/html.js';
import { TARGET_FORMS } from '../lib/core/target.js';
import { SPIN_US_DEFAULT } from '../lib/core/completion.js';

const MODES: Mode[] = ['notify', 'poll', 'adaptive'];

export default class Bench extends StorCommand {
  static override summary =
    'Measure a target under fio-like workloads, comparing notification, polling and adaptive completion side by side';
  static override description = `For each completion mode the same workload runs on a fresh connection, in native threads (one per queue):
IOPS, bandwidth, latency percentiles from an HDR-style histogram, and the CPU each mode costs (client threads, and server threads when the server is the embedded one).
With no TARGET, each mode gets an embedded \`stor serve\` on a null backend, running the same completion mode.`;
  static override examples = [
    '<%= config.bin %> bench',
    '<%= config.bin %> bench vhost-user:/tmp/qsd.sock --rw randread --iodepth 32 --runtime 10s',
    '<%= config.bin %> bench /var/tmp/disk.img --rw randrw --rwmixread 70 --verify --completion notify,poll --report bench.html',
  ];
  static override args = {
    target: Args.string({
      description: `what to measure: ${TARGET_FORMS} (default: an embedded stor serve, null backend)`,
    }),
  };
  static override flags = {
    rw: Flags.string({
      description: 'workload',
      options: ['read', 'write', 'randread', 'randwrite', 'randrw', 'rw'],
      default: 'randread',
    }),
    rwmixread: Flags.integer({ description: 'percent reads in rw/randrw', default: 50, min: 0, max: 100 }),
    bs: Flags.string({ description: `block size (${SIZE_FORMS})`, default: '4k' }),
    iodepth: Flags.integer({ description: 'requests in flight per queue', default: 1, min: 1, max: 4096 }),
    queues: Flags.integer({ description: 'queues, one native thread each', default: 1, min: 1, max: 64 }),
    runtime: Flags.string({ description: `measured time per mode (${DURATION_FORMS})`, default: '5s' }),
    ramp: Flags.string({ description: 'unmeasured warm-up per mode', default: '1s' }),
    size: Flags.string({ description: 'bytes of the target the workload touches (default: all; embedded server: 1G)' }),
    // one name for the idea in every command: --completion (--modes is the old spelling, still accepted)
    completion: Flags.string({
      description: 'completion modes to compare, comma-separated: notify, poll, adaptive',
      default: 'notify,poll,adaptive',
      aliases: ['modes'],
    }),
    verify: Flags.boolean({
      description: 'write patterns with a header (offset, generation) and check every read; exit 3 on a mismatch',
      default: false,
    }),
    // direct=on in the target spec is the one spelling (as everywhere else); --direct stays as an alias
    direct: Flags.boolean({
      description: 'files and block devices: O_DIRECT (same as ,direct=on in the target)',
      default: false,
      hidden: true,
    }),
    'spin-us': Flags.integer({
      description:
        'adaptive mode: the longest the client spins before sleeping, in microseconds (the window adapts below it, as in stor serve)',
      default: SPIN_US_DEFAULT,
      min: 0,
      max: 1_000_000,
    }),
    refill: Flags.string({
      description:
        'when requests are resubmitted: eager (after every look at the completions, as fio does) or drain (after a wake-up, only once a look finds nothing new, as blkio-bench does)',
      options: ['eager', 'drain'],
      default: 'eager',
    }),
    seed: Flags.integer({ description: 'random seed for offsets and patterns', default: 1 }),
    report: Flags.string({
      description: 'also write a self-contained HTML report (latency CDF and histogram, IOPS over time)',
    }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Bench);
    const bs = parsePositiveSize(flags.bs, '--bs');
    if (bs % 512) throw usageError('--bs', `${flags.bs} is not a multiple of 512`, 'e.g. 512, 4k, 64k, 1M');
    const runtimeMs = parseDuration(flags.runtime, '--runtime');
    if (runtimeMs < 100) throw usageError('--runtime', `${flags.runtime} is shorter than 100ms`, DURATION_FORMS);
    const rampMs = parseDuration(flags.ramp, '--ramp');
    const size = flags.size !== undefined ? parsePositiveSize(flags.size, '--size') : undefined;
    // named as typed: --modes is the old spelling of --completion
    const modesFlag = process.argv.slice(2).some((a) => a === '--modes' || a.startsWith('--modes='))
      ? '--modes'
      : '--completion';
    const modes = flags.completion
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean);
    for (const m of modes)
      if (!MODES.includes(m as Mode))
        throw usageError(modesFlag, `'${m}' is not a completion mode`, 'notify, poll, adaptive (comma-separated)');
    if (!modes.length || new Set(modes).size !== modes.length)
      throw usageError(modesFlag, 'name each mode once', 'notify, poll, adaptive (comma-separated)');
    // an unwritable --report must not cost a whole benchmark's run to find out
    if (flags.report) assertWritable(flags.report);
    const json = this.jsonEnabled();
    const line = ProgressLine.start(!json);
    let base: { mode: string; ios: number; ms: number } | undefined;
    let where = 'before the first mode';
    const stopInterrupt = exitOnInterrupt({
      command: 'bench',
      json,
      before: () => line?.clear(),
      progress: () => where,
    });
    let report;
    try {
      report = await runBench({
        target: args.target,
        rw: flags.rw as Rw,
        rwmixread: flags.rwmixread,
        bs,
        iodepth: flags.iodepth,
        queues: flags.queues,
        runtimeMs,
        rampMs,
        size,
        modes: modes as Mode[],
        verify: flags.verify,
        direct: flags.direct,
        spinUs: flags['spin-us'],
        refill: flags.refill as Refill,
        seed: flags.seed,
        onProgress: (mode, ios, ms) => {
          where = `in mode ${mode}, ${(ms / 1000).toFixed(1)} s of ${((runtimeMs + rampMs) / 1000).toFixed(1)} s (no results are reported for an interrupted run)`;
          // the rate since the ramp ended, as the final figure counts it (not since the start, ramp included)
          if (ms >= rampMs && base?.mode !== mode) base = { mode, ios, ms };
          const rate =
            base && base.mode === mode && ms > base.ms
              ? `${Math.round((ios - base.ios) / ((ms - base.ms) / 1000) / 1000)} kIOPS`
              : ms >= rampMs
                ? 'measuring'
                : 'ramping up';
          line?.update(`${mode}: ${(ms / 1000).toFixed(1)} s / ${((runtimeMs + rampMs) / 1000).toFixed(1)} s, ${rate}`);
        },
      });
    } finally {
      stopInterrupt();
      line?.clear();
    }
    const table = renderTable(report);
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    const doc = toJson(report, { version: pkg.version });
    // the table first: a report that cannot be written must not lose the results
    if (!json)
      process.stdout.write(
        `${report.target} — ${flags.rw} ${flags.bs}, iodepth ${flags.iodepth} × ${flags.queues} queue(s), ${flags.runtime} per mode\n\n${table}\n`,
      );
    if (flags.report) {
      const meta = {
        date: new Date().toISOString(),
        version: pkg.version,
        host: `${hostname()} (Linux ${release()}, ${cpus().length} CPUs)`,
        command: ['stor', ...process.argv.slice(2)]
          .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))
          .join(' '),
      };
      try {
        writeFileSync(flags.report, renderHtml(report, table.replace(/\x1b\[[0-9;]*m/g, ''), meta));
      } catch (e) {
        throw new StorError(`--report: cannot write ${flags.report}: ${(e as Error).message}`, {
          details: doc,
          hint: 'the results are in the table above',
        });
      }
      if (!json) process.stderr.write(`report: ${flags.report}\n`);
    }
    const failures = report.results.filter((r) => r.verify && r.verify.failures > 0);
    if (failures.length) {
      const f = failures[0].verify!;
      throw new StorError(
        `verification failed: ${failures.reduce((a, r) => a + r.verify!.failures, 0)} read(s) did not match what was written (first at offset ${f.firstBadOffset})`,
        { exitCode: EXIT.MISMATCH, details: doc },
      );
    }
    return doc;
  }
}

/** Refuses (exit 2) a --report path that cannot be created or written, before the benchmark runs. */
function assertWritable(path: string): void {
  let why: string | undefined;
  try {
    if (existsSync(path)) {
      if (statSync(path).isDirectory()) why = 'it is a directory';
      else accessSync(path, constants.W_OK);
    } else {
      const dir = dirname(resolve(path));
      if (!existsSync(dir)) why = `the directory ${dir} does not exist`;
      else if (!statSync(dir).isDirectory()) why = `${dir} is not a directory`;
      else accessSync(dir, constants.W_OK);
    }
  } catch (e) {
    why = (e as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (e as Error).message;
  }
  if (why) throw usageError('--report', `cannot write ${path}: ${why}`, 'a file in an existing, writable directory');
}
