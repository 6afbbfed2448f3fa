// `stor bench`: the JSON carries every figure the issue asks for, percentiles are ordered,
// --verify catches a target that does not keep data, and bad input is refused with the right code.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';
import { startStor, cleanupSocket } from '../helpers/servers.js';

const t = suite('stor bench');
const dir = mkdtempSync(join(tmpdir(), 'stor-bench-test-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));

function stor(args: string[], timeout = 90_000) {
  return spawnSync(process.execPath, [STOR_BIN, ...args], {
    encoding: 'utf8',
    timeout,
    env: { ...process.env, NO_COLOR: '1' },
  });
}

const PCTS = ['1.000000', '5.000000', '10.000000', '50.000000', '90.000000', '99.000000', '99.900000', '99.990000'];

t('with no target: every mode, every figure, in fio-shaped JSON; percentiles ordered; server CPU reported', () => {
  const r = stor(['bench', '--runtime', '400ms', '--ramp', '100ms', '--iodepth', '4', '--json']);
  assert.is(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.is(doc['global options'].rw, 'randread');
  assert.is(doc['global options'].iodepth, 4);
  assert.match(doc.target, /embedded stor serve/);
  assert.equal(
    doc.jobs.map((j: { jobname: string }) => j.jobname),
    ['notify', 'poll', 'adaptive'],
  );
  for (const j of doc.jobs) {
    assert.ok(j.read.iops > 0, `${j.jobname}: iops`);
    assert.ok(j.read.bw_bytes > 0, `${j.jobname}: bandwidth`);
    assert.ok(j.read.total_ios > 0);
    assert.is(j.write.total_ios, 0, 'randread writes nothing');
    const lat = j.read.lat_ns;
    for (const k of ['min', 'max', 'mean', 'stddev', 'percentile']) assert.ok(k in lat, `lat_ns.${k}`);
    const values = PCTS.map((p) => lat.percentile[p]);
    values.forEach((v, i) => assert.type(v, 'number', `p${PCTS[i]}`));
    for (let i = 1; i < values.length; i++)
      assert.ok(values[i - 1] <= values[i], `${j.jobname}: p${PCTS[i - 1]} <= p${PCTS[i]}: ${values}`);
    assert.ok(lat.min <= lat.mean && lat.mean <= lat.max, 'min <= mean <= max');
    assert.ok(lat.min <= lat.percentile['50.000000'] * 1.05 + 100, 'min <= p50 (within a bucket)');
    assert.ok(j.cpu.client.user + j.cpu.client.sys >= 0 && 'server' in j.cpu, 'client and server CPU');
    assert.ok(j.cpu_per_io_us > 0 && j.iops_per_cpu > 0, 'CPU per I/O and IOPS per CPU');
    assert.ok(Array.isArray(j.latency_histogram) && j.latency_histogram.length > 0, 'histogram');
    assert.ok(j.iops_timeline.iops.length > 0, 'IOPS over time');
    assert.type(j.usr_cpu, 'number');
  }
  assert.ok(doc.jobs[1].cpu.client.user > 0, 'poll mode burns user CPU in the client');
  for (const j of doc.jobs)
    assert.ok(
      Number.isInteger(j.ctx) && j.ctx >= j.ctx_voluntary && j.ctx_voluntary >= 0,
      `${j.jobname}: context switches`,
    );
  // notify at QD4 sleeps waiting for completions; poll never asks to sleep (preemption is involuntary)
  assert.ok(doc.jobs[0].ctx_voluntary > 0, 'the notify client sleeps');
  assert.ok(
    doc.jobs[1].ctx_voluntary < doc.jobs[0].ctx_voluntary / 10,
    `poll sleeps far less than notify: ${doc.jobs[1].ctx_voluntary} vs ${doc.jobs[0].ctx_voluntary}`,
  );
  const pv = doc.comparisons.find((c: { of: string; over: string }) => c.of === 'poll' && c.over === 'notify');
  assert.ok(pv && pv.meanLatencyRatio > 0 && pv.iopsRatio > 0, 'poll over notify comparison');
  // how this machine sleeps, which sets what notify costs on a VM
  assert.ok(doc.host.cpus >= 1 && typeof doc.host.cpuidle_driver === 'string', 'host CPUs and cpuidle driver');
  assert.ok(
    doc.host.guest_halt_poll_ns === null || Number.isInteger(doc.host.guest_halt_poll_ns),
    'guest halt polling window or null',
  );
});

t('a file target through io_uring with --verify (randrw): reads check out, the I/O engine is named', () => {
  const img = join(dir, 'verify.img');
  const r = stor([
    'bench',
    `file:${img},create=16M`,
    '--rw',
    'randrw',
    '--verify',
    '--modes',
    'notify,poll',
    '--runtime',
    '300ms',
    '--ramp',
    '0ms',
    '--iodepth',
    '8',
    '--json',
  ]);
  assert.is(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.is(doc.driver, 'io_uring');
  assert.match(doc['io engine'], /io_uring/);
  for (const j of doc.jobs) {
    assert.ok(j.verify.verified > 0, `${j.jobname}: reads were verified`);
    assert.is(j.verify.failures, 0);
    assert.ok(j.write.total_ios > 0 && j.read.total_ios > 0, 'both directions');
  }
});

t('--verify against a target that drops writes (null:) fails with exit 3', () => {
  const r = stor([
    'bench',
    'null:64M',
    '--rw',
    'randrw',
    '--verify',
    '--modes',
    'notify',
    '--runtime',
    '200ms',
    '--ramp',
    '0ms',
  ]);
  assert.is(r.status, 3, `exit 3 on a mismatch; stderr: ${r.stderr}`);
  assert.match(r.stderr, /^stor: verification failed/m);
});

t('verify over vhost-user against stor serve (mem backend) passes', async () => {
  const s = await startStor({ backend: { kind: 'mem', size: 32 << 20 }, queues: 2 });
  try {
    const r = stor([
      'bench',
      `vhost-user:${s.socket}`,
      '--rw',
      'randrw',
      '--verify',
      '--queues',
      '2',
      '--iodepth',
      '8',
      '--modes',
      'notify,poll',
      '--runtime',
      '300ms',
      '--ramp',
      '0ms',
      '--json',
    ]);
    assert.is(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    for (const j of doc.jobs) {
      assert.ok(j.verify.verified > 0);
      assert.is(j.verify.failures, 0);
    }
  } finally {
    await s.stop();
    cleanupSocket(s.socket);
  }
});

t(
  "--refill drain (blkio-bench's loop) over vhost-user and io_uring: data verified, the loop recorded in the JSON",
  async () => {
    const s = await startStor({ backend: { kind: 'mem', size: 32 << 20 }, queues: 2 });
    try {
      const img = join(dir, 'drain.img');
      for (const target of [`vhost-user:${s.socket}`, `file:${img},create=16M`]) {
        const r = stor([
          'bench',
          target,
          '--rw',
          'randrw',
          '--verify',
          '--refill',
          'drain',
          '--queues',
          '2',
          '--iodepth',
          '8',
          '--modes',
          'notify,adaptive',
          '--spin-us',
          '1',
          '--runtime',
          '300ms',
          '--ramp',
          '0ms',
          '--json',
        ]);
        assert.is(r.status, 0, `${target}: ${r.stderr}`);
        const doc = JSON.parse(r.stdout);
        assert.is(doc['global options'].refill, 'drain');
        for (const j of doc.jobs) {
          assert.ok(j.read.total_ios > 0 && j.write.total_ios > 0, `${target} ${j.jobname}: both directions`);
          assert.ok(j.verify.verified > 0, `${target} ${j.jobname}: reads verified`);
          assert.is(j.verify.failures, 0);
          assert.is(j.error, 0);
        }
      }
      const d = JSON.parse(
        stor(['bench', 'null:16M', '--modes', 'notify', '--runtime', '100ms', '--ramp', '0ms', '--json']).stdout,
      );
      assert.is(d['global options'].refill, 'eager', "the default loop is fio's");
    } finally {
      await s.stop();
      cleanupSocket(s.socket);
    }
  },
);

t('a server killed mid-run: stor bench fails with exit 1 in bounded time, in both loops', async () => {
  for (const refill of ['eager', 'drain']) {
    const s = await startStor({ backend: { kind: 'null', size: 64 << 20 } });
    const t0 = Date.now();
    const p = spawn(
      process.execPath,
      [
        STOR_BIN,
        'bench',
        `vhost-user:${s.socket}`,
        '--modes',
        'notify',
        '--refill',
        refill,
        '--iodepth',
        '16',
        '--runtime',
        '20s',
        '--ramp',
        '0ms',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code)));
    await new Promise((r) => setTimeout(r, 1500));
    s.proc.kill('SIGKILL');
    const killedAt = Date.now();
    const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
    const code = await exited;
    clearTimeout(timer);
    cleanupSocket(s.socket);
    assert.is(code, 1, `${refill}: exit 1 after the server died; stderr: ${stderr}`);
    assert.ok(Date.now() - killedAt < 5000, `${refill}: failed ${Date.now() - killedAt} ms after the kill`);
    assert.match(stderr, /^stor: /m);
    assert.ok(Date.now() - t0 < 20_000);
  }
});

const bad: Array<[string, string[], number, RegExp]> = [
  ['zero size', ['--size', '0'], 2, /--size.*greater than zero/],
  ['negative size', ['--size=-1G'], 2, /--size/],
  ['block size not a multiple of 512', ['--bs', '1000'], 2, /--bs.*multiple of 512/],
  ['runtime without a unit', ['--runtime', '5'], 2, /--runtime.*no unit/],
  ['unknown mode', ['--modes', 'notify,turbo'], 2, /--modes.*turbo/],
  ['unknown refill loop', ['--refill', 'lazy'], 2, /--refill: 'lazy'[\s\S]*accepted: eager, drain/],
  ['unreachable target', ['vhost-user:/nonexistent/stor.sock'], 1, /cannot (open|connect)/],
];
for (const [name, args, code, re] of bad) {
  t(`bad input: ${name} -> one-line error, exit ${code}`, () => {
    const runtime = args.includes('--runtime') ? [] : ['--runtime', '200ms'];
    const r = stor(['bench', ...args, ...runtime], 30_000);
    assert.is(r.status, code, r.stderr);
    assert.match(r.stderr, /^stor: /);
    assert.match(r.stderr, re);
    assert.ok(r.stderr.trim().split('\n').length <= 2, r.stderr);
  });
}

t('bad input: a block size below the target alignment (4096-byte blocks) -> exit 2', async () => {
  const s = await startStor({ backend: { kind: 'null', size: 64 << 20 }, extraArgs: ['--block-size', '4096'] });
  try {
    const r = stor(['bench', `vhost-user:${s.socket}`, '--bs', '512', '--runtime', '200ms'], 30_000);
    assert.is(r.status, 2, r.stderr);
    assert.match(r.stderr, /--bs.*alignment \(4096\)/);
  } finally {
    await s.stop();
    cleanupSocket(s.socket);
  }
});

t.run();
