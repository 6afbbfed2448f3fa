// #16: `stor bench` must not leak its embedded server or its temp socket directory when a CI
// runner stops it. Each of SIGTERM, SIGINT and SIGHUP is sent in the middle of a run with the
// embedded server up; afterwards no process the bench started is alive and its temp directory is gone.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';

const t = suite('stor bench: signals clean up');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The pids whose parent is pid, and theirs, from /proc. */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parentOf.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [c, pp] of parentOf)
      if (pp === p) {
        out.push(c);
        walk(c);
      }
  };
  walk(pid);
  return out;
}

function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  t(`${sig} in the middle of a run: no child survives, the temp socket directory is removed`, async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'stor-bench-sig-'));
    const p = spawn(
      process.execPath,
      [STOR_BIN, 'bench', '--modes', 'notify', '--runtime', '30s', '--ramp', '0s', '--json'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp, NO_COLOR: '1' } },
    );
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    let kids: number[] = [];
    try {
      // the run is under way once the embedded server's socket exists
      const deadline = Date.now() + 20_000;
      const sockets = (): string[] =>
        readdirSync(tmp).filter((d) => d.startsWith('stor-bench-') && existsSync(join(tmp, d, 'bench.sock')));
      while (!sockets().length) {
        if (Date.now() > deadline || p.exitCode !== null)
          assert.unreachable(`no embedded server socket in ${tmp}; stderr: ${stderr}`);
        await sleep(50);
      }
      await sleep(300);
      kids = descendants(p.pid!);
      p.kill(sig);
      const stopped = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      assert.ok(stopped, `stor bench still running 10 s after ${sig}`);
      const expectedCode = 128 + constants.signals[sig];
      assert.ok(
        p.signalCode === sig || p.exitCode === expectedCode,
        `ended by ${sig} (signal ${p.signalCode}, code ${p.exitCode}); stderr: ${stderr}`,
      );
      await sleep(500);
      const survivors = kids.filter(alive);
      assert.equal(
        survivors,
        [],
        `processes started by stor bench still alive after ${sig}: ${survivors
          .map((k) => {
            try {
              return readFileSync(`/proc/${k}/cmdline`, 'utf8').replace(/\0/g, ' ');
            } catch {
              return String(k);
            }
          })
          .join('; ')}`,
      );
      assert.equal(
        readdirSync(tmp).filter((d) => d.startsWith('stor-bench-')),
        [],
        'temp socket directory removed',
      );
    } finally {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      for (const k of kids) {
        try {
          process.kill(k, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

t.run();
