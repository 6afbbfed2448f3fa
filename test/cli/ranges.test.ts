// Ranges are checked before any I/O (issue #16, item 1): a read, write, copy or bench whose range
// does not fit the device fails with one line and exit 2 (a JSON error with --json) before the first
// request — no partial output file, not one byte of the device changed — whatever the length, even
// when the range is longer than the commands' 4 MiB request size, and for a zero length past the end.
// Against both servers: stor serve and qemu-storage-daemon, each on a 16 MiB image filled with 0x5a.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  allBytes,
  assertCleanError,
  describeRun,
  filledFile,
  readRange,
  startServer,
  stor,
  tempDir,
  type Server,
  type ServerName,
} from '../client/helpers.js';

const ranges = suite('cli: ranges are checked before any I/O');

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const FILL = 0x5a;
const USAGE = 2;

let dir = '';
const servers: Partial<Record<ServerName, Server>> = {};

ranges.before(async () => {
  dir = tempDir('ranges');
  servers.stor = await startServer('stor', { backend: 'file', size: SIZE, fill: FILL });
  servers.qsd = await startServer('qsd', { backend: 'file', size: SIZE, fill: FILL });
});

ranges.after(async () => {
  await servers.stor?.stop();
  await servers.qsd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function assertImageUntouched(s: Server, what: string): void {
  assert.ok(allBytes(readRange(s.image!, 0, SIZE), FILL), `${what}: the image changed (some byte is not 0x5a)`);
}

for (const name of ['stor', 'qsd'] as ServerName[]) {
  const sock = (): string => `vhost-user:${servers[name]!.socket}`;

  ranges(`${name}: read --length 20M of a 16 MiB device -> exit 2, one line, no output file created`, async () => {
    const out = join(dir, `big-${name}.bin`);
    const r = await stor(['read', sock(), '--length', '20M', '-o', out]);
    assertCleanError(r, USAGE, /past the end|capacity/);
    assert.not.ok(existsSync(out), `a partial output file was left: ${describeRun(r)}`);
  });

  ranges(`${name}: read --length 20M --json -> a JSON error document with code 2, no output file`, async () => {
    const out = join(dir, `big-json-${name}.bin`);
    const r = await stor(['read', sock(), '--length', '20M', '-o', out, '--json']);
    assert.is(r.code, USAGE, describeRun(r));
    const doc = JSON.parse(r.stdout) as { error?: { code: number; message: string } };
    assert.is(doc.error?.code, USAGE, describeRun(r));
    assert.match(doc.error!.message, /past the end|capacity/);
    assert.not.match(r.stderr, /\n\s+at /, `a stack trace: ${describeRun(r)}`);
    assert.not.ok(existsSync(out), 'a partial output file was left');
  });

  ranges(
    `${name}: write --pattern 7 --length 10M --offset 8M (crosses the end) -> exit 2 and the device is not modified`,
    async () => {
      assertCleanError(
        await stor(['write', sock(), '--pattern', '7', '--length', '10M', '--offset', '8M']),
        USAGE,
        /past the end|capacity/,
      );
      assertImageUntouched(servers[name]!, 'write crossing the end');
    },
  );

  ranges(`${name}: write --input (12 MiB file) --offset 8M -> exit 2 and the device is not modified`, async () => {
    const input = join(dir, 'twelve.bin');
    if (!existsSync(input)) filledFile(input, 12 * MiB, 0x33);
    assertCleanError(await stor(['write', sock(), '--input', input, '--offset', '8M']), USAGE, /past the end|capacity/);
    assertImageUntouched(servers[name]!, 'write --input crossing the end');
  });

  ranges(
    `${name}: a zero length past the end is still past the end: read and write --length 0 --offset 17M -> exit 2`,
    async () => {
      const out = join(dir, `zero-${name}.bin`);
      assertCleanError(
        await stor(['read', sock(), '--length', '0', '--offset', '17M', '-o', out]),
        USAGE,
        /past the end|capacity/,
      );
      assert.not.ok(existsSync(out), 'an output file was created');
      assertCleanError(
        await stor(['write', sock(), '--pattern', '1', '--length', '0', '--offset', '17M']),
        USAGE,
        /past the end|capacity/,
      );
    },
  );
}

ranges(
  'copy: a source range past the end (--src-offset 1M --length 16M) and a destination range past the end -> exit 2, nothing written',
  async () => {
    const s = servers.stor!;
    assertCleanError(
      await stor(['copy', `vhost-user:${s.socket}`, `null:${SIZE}`, '--src-offset', '1M', '--length', '16M']),
      USAGE,
      /--length|source/,
    );
    assertCleanError(
      await stor(['copy', `null:${SIZE}`, `vhost-user:${s.socket}`, '--dst-offset', '8M', '--length', '10M']),
      USAGE,
      /destination/,
    );
    assertImageUntouched(s, 'copy past the end of the destination');
  },
);

ranges('bench: --size larger than the target -> exit 2 before the run (no write reaches the device)', async () => {
  const s = servers.stor!;
  const r = await stor([
    'bench',
    `vhost-user:${s.socket}`,
    '--rw',
    'randwrite',
    '--size',
    '20M',
    '--runtime',
    '200ms',
    '--ramp',
    '0s',
    '--modes',
    'notify',
  ]);
  assertCleanError(r, USAGE, /--size/);
  assertImageUntouched(s, 'bench --size past the end');
});

ranges.run();
