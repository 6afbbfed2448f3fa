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
    const r = await stor(['read', 'null:1M', '--offset', '0', '--length', '64k', '--completion', mode, '-o', '/dev/null', '--json']);
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
    try { assert.match(s.output(), /"event":"ready"/); }
    finally { await s.stop(); cleanupSocket(s.socket); }
  });
}

t('stor serve --spin-us and --poll-us together are refused', async () => {
  assertCleanError(await stor(['serve', '--socket', '/tmp/stor-never.sock', '--spin-us', '1', '--poll-us', '2']), 2, /spin-us|poll-us/);
});

t.run();
