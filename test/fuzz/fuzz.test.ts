// A short bounded run of each libFuzzer target (native/fuzz/fuzz_*.c, built with clang, ASan and
// UBSan by native/fuzz/build.sh) from the seed corpus in fixtures/fuzz/<target>, so a change that
// breaks the device path on hostile guest memory or hostile message contents fails `npm test`.
// STOR_FUZZ_SECONDS sets the time per target (default 20); `npm run fuzz` is for long runs.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, ROOT } from '../helpers/paths.js';

const SECONDS = Number(process.env.STOR_FUZZ_SECONDS ?? 20);
const TARGETS = readdirSync(join(ROOT, 'native', 'fuzz'))
  .filter((f) => /^fuzz_.*\.c$/.test(f))
  .map((f) => f.slice(5, -2));

const t = suite('fuzz: libFuzzer targets, a bounded run each');
let built = false;

t.before(async () => {
  const r = await execa(join(ROOT, 'native', 'fuzz', 'build.sh'), { reject: false, all: true, timeout: 300_000 });
  assert.is(r.exitCode, 0, `native/fuzz/build.sh failed:\n${r.all}`);
  built = true;
});

for (const name of TARGETS) {
  t(`fuzz_${name}: ${SECONDS} s from fixtures/fuzz/${name} without a finding`, async () => {
    assert.ok(built);
    const work = mkdtempSync(join(tmpdir(), `stor-fuzz-${name}-`));
    mkdirSync(join(work, 'corpus'));
    try {
      const r = await execa(
        join(ROOT, 'native', 'fuzz', 'build', `fuzz_${name}`),
        [
          `-max_total_time=${SECONDS}`,
          '-print_final_stats=1',
          '-rss_limit_mb=1024',
          '-timeout=10',
          `-artifact_prefix=${work}/`,
          join(work, 'corpus'),
          join(FIXTURES, 'fuzz', name),
        ],
        { reject: false, all: true, timeout: (SECONDS + 60) * 1000, cwd: work },
      );
      const out = r.all ?? '';
      const findings = readdirSync(work).filter((f) => /^(crash|leak|timeout|oom)-/.test(f));
      assert.equal(findings, [], `fuzz_${name} found something:\n${out.slice(-4000)}`);
      assert.is(r.exitCode, 0, `fuzz_${name} exited ${r.exitCode}:\n${out.slice(-4000)}`);
      const runs = /stat::number_of_executed_units:\s*(\d+)/.exec(out);
      assert.ok(runs && Number(runs[1]) > 0, `fuzz_${name} executed nothing:\n${out.slice(-2000)}`);
      console.log(`  fuzz_${name}: ${runs![1]} executions in ${SECONDS} s`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}

t.run();
