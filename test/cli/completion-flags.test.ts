// One vocabulary for completion and the spin budget: the client takes --completion notify|poll (event is
// an alias of notify), serve and bench take --spin-us (serve still accepts its old --poll-us), and a bad
// backend property is a usage error naming it.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { assertCleanError, assertOk, json, stor } from '../client/helpers.js';
import { startStor, cleanupSocket } from '../helpers/servers.js';

const t = suite('completion flags and the spin budget');

for (const mode of ['notify', 'poll', 'event']) {
  t(`stor read --completion ${mode} works (a null target, 64 KiB)`, async () => {
    const r = await stor([
      'read',
      'null:1M',
      '--offset',
      '0',
      '--length',
      '64k',
      '--completion',
      mode,
      '-o',
      '/dev/null',
      '--json',
    ]);
    assertOk(r);
    assert.ok(json(r), 'a JSON document');
  });
}

t('stor info --completion bogus: a usage error naming the flag and the accepted values', async () => {
  assertCleanError(await stor(['info', 'null:1M', '--completion', 'bogus']), 2, /completion/);
});

t('a bad backend property: exit 2, the property named, the accepted properties in the hint', async () => {
  const r = await stor(['info', 'file:/tmp/x.img,ring-size=0']);
  assertCleanError(r, 2, /ring-size=0/);
});

for (const flag of ['--spin-us', '--poll-us']) {
  t(`stor serve ${flag} 10 starts (adaptive, the spin budget set)`, async () => {
    const s = await startStor({ backend: { kind: 'null', size: 1 << 20 }, extraArgs: [flag, '10'] });
    try {
      assert.match(s.output(), /"event":"ready"/);
    } finally {
      await s.stop();
      cleanupSocket(s.socket);
    }
  });
}

t('stor serve --spin-us and --poll-us together are refused', async () => {
  assertCleanError(
    await stor(['serve', '--socket', '/tmp/stor-never.sock', '--spin-us', '1', '--poll-us', '2']),
    2,
    /spin-us|poll-us/,
  );
});

// one spelling per idea, the old ones kept as aliases (issue #16): --completion everywhere
for (const flag of ['--completion', '--mode']) {
  t(`stor serve ${flag} poll starts, and the ready line says completion poll`, async () => {
    const s = await startStor({ backend: { kind: 'null', size: 1 << 20 }, extraArgs: [flag, 'poll'] });
    try {
      const ready = JSON.parse(
        s
          .output()
          .split('\n')
          .find((l) => l.includes('"event":"ready"'))!,
      );
      assert.is(ready.completion, 'poll');
      assert.is(ready.mode, 'poll', 'the old field stays (fields are only ever added)');
    } finally {
      await s.stop();
      cleanupSocket(s.socket);
    }
  });
}

for (const flag of ['--completion', '--modes']) {
  t(`stor bench ${flag} notify,poll runs exactly those modes`, async () => {
    const r = await stor(
      ['bench', 'null:16M', flag, 'notify,poll', '--runtime', '150ms', '--ramp', '0s', '--json'],
      60_000,
    );
    assertOk(r);
    assert.equal(
      (json(r) as { jobs: Array<{ jobname: string }> }).jobs.map((j) => j.jobname),
      ['notify', 'poll'],
    );
  });
}

t('stor bench --completion turbo: exit 2 naming --completion', async () => {
  assertCleanError(
    await stor(['bench', 'null:16M', '--completion', 'turbo', '--runtime', '150ms']),
    2,
    /--completion: 'turbo'/,
  );
});

for (const [value, ok] of [
  ['2s', true],
  ['1500ms', true],
  ['2000', true],
  ['2x', false],
  ['0', false],
] as const) {
  t(`--timeout ${value} (a duration, or bare milliseconds): ${ok ? 'accepted' : 'exit 2'}`, async () => {
    const r = await stor(['info', 'null:1M', '--timeout', value, ...(ok ? ['--json'] : [])]);
    if (ok) assertOk(r);
    else assertCleanError(r, 2, /--timeout/);
  });
}

t.run();
