// Bad input to stor info | read | write | copy: an offset past the end, unaligned offsets and
// lengths, targets that are not vhost-user-blk servers, bad flag values. Each must end promptly with
// one `stor: ` line (plus at most a hint), no stack trace, exit 2 for a usage mistake and 1 for a
// runtime failure. And a server SIGKILLed in the middle of a copy must end the copy with exit 1
// within a few seconds, never a hang.
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  assertCleanError,
  assertSame,
  describeRun,
  filledFile,
  readRange,
  sleep,
  startServer,
  stor,
  tempDir,
  waitFor,
  type Server,
  type ServerName,
} from './helpers.js';

const errors = suite('client: bad input and dying servers');

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const FILL = 0x5a;

let dir = '';
let s: Server | undefined; // stor serve, file backend, 2 queues
let q: Server | undefined; // qemu-storage-daemon, file backend, 2 queues
let input = '';

errors.before(async () => {
  dir = tempDir('errors');
  input = join(dir, 'in.bin');
  writeFileSync(input, randomBytes(64 * 1024));
  s = await startServer('stor', { backend: 'file', size: SIZE, fill: FILL, queues: 2 });
  q = await startServer('qsd', { backend: 'file', size: SIZE, fill: FILL, queues: 2 });
});

errors.after(async () => {
  await s?.stop();
  await q?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const USAGE = 2;
const RUNTIME = 1;
const out = () => join(dir, 'out.bin');

// ---- ranges: past the end, unaligned (the device checks them; a user's flag value is wrong: usage)

for (const name of ['stor', 'qsd'] as ServerName[]) {
  const sock = () => `vhost-user:${(name === 'stor' ? s : q)!.socket}`;
  const image = () => (name === 'stor' ? s : q)!.image!;

  errors(
    `${name}: stor read --offset at the end of the device (8 MiB) -> exit 2, one line naming the capacity`,
    async () => {
      assertCleanError(
        await stor(['read', sock(), '--offset', String(SIZE), '--length', '512', '--output', out()]),
        USAGE,
        /past the end|capacity|8388608/,
      );
    },
  );
  errors(`${name}: stor read of a range that crosses the end (offset 8 MiB - 512, length 1024) -> exit 2`, async () => {
    assertCleanError(
      await stor(['read', sock(), '--offset', String(SIZE - 512), '--length', '1024', '--output', out()]),
      USAGE,
    );
  });
  errors(`${name}: stor write --offset past the end -> exit 2, and the image is not touched`, async () => {
    assertCleanError(
      await stor(['write', sock(), '--offset', String(SIZE + 4096), '--pattern', '1', '--length', '512']),
      USAGE,
      /past the end|capacity|8388608/,
    );
    assertSame(readRange(image(), SIZE - 4096, 4096), Buffer.alloc(4096, FILL), 'last 4 KiB of the image');
  });
  errors(`${name}: stor read --length 100 on a 512-byte-aligned device -> exit 2, names the alignment`, async () => {
    assertCleanError(
      await stor(['read', sock(), '--offset', '0', '--length', '100', '--output', out()]),
      USAGE,
      /512|align/,
    );
  });
  errors(`${name}: stor write --pattern --length 100 -> exit 2, and nothing is written`, async () => {
    assertCleanError(
      await stor(['write', sock(), '--offset', '0', '--pattern', '0x11', '--length', '100']),
      USAGE,
      /512|align/,
    );
    assertSame(readRange(image(), 0, 4096), Buffer.alloc(4096, FILL), 'first 4 KiB of the image');
  });
  errors(`${name}: stor read --offset 100 (unaligned) -> exit 2`, async () => {
    assertCleanError(
      await stor(['read', sock(), '--offset', '100', '--length', '512', '--output', out()]),
      USAGE,
      /512|align/,
    );
  });
  errors(
    `${name}: stor copy FILE SOCK --dst-offset 100 (not a multiple of the 512-byte sector) is refused with exit 2, nothing written (not silently written at offset 0)`,
    async () => {
      const r = await stor(['copy', input, sock(), '--dst-offset', '100', '--verify']);
      const head = readRange(image(), 0, 128 * 1024);
      assertCleanError(r, USAGE, /offset|512|align/);
      assertSame(head, Buffer.alloc(head.length, FILL), 'the image head after a refused unaligned --dst-offset');
    },
  );
  errors(`${name}: stor copy SOCK FILE --src-offset 100 (unaligned) is refused with exit 2`, async () => {
    assertCleanError(
      await stor(['copy', sock(), join(dir, `unaligned-src-${name}.bin`), '--src-offset', '100', '--length', '512']),
      USAGE,
      /offset|512|align/,
    );
  });
  errors(`${name}: stor copy SOCK FILE --length 100 -> exit 2 naming --length`, async () => {
    assertCleanError(
      await stor(['copy', sock(), join(dir, `len100-${name}.bin`), '--length', '100']),
      USAGE,
      /--length/,
    );
  });
  errors(
    `${name}: stor copy FILE SOCK --dst-offset so the copy runs past the device -> exit 2, image untouched`,
    async () => {
      assertCleanError(await stor(['copy', input, sock(), '--dst-offset', String(SIZE - 4096)]), USAGE, /destination/);
      assertSame(readRange(image(), SIZE - 4096, 4096), Buffer.alloc(4096, FILL), 'last 4 KiB of the image');
    },
  );
  errors(`${name}: stor info --queues 3 on a 2-queue device -> exit 2`, async () => {
    assertCleanError(await stor(['info', sock(), '--queues', '3']), USAGE, /3/);
  });
}

// The source's size is the same whatever serves it: checked once, on stor serve.
errors(
  'stor copy SOCK FILE --src-offset past the end of the source (9 MiB of 8) -> exit 2 naming --src-offset or the source size',
  async () => {
    assertCleanError(
      await stor(['copy', `vhost-user:${s!.socket}`, join(dir, 'srcoff.bin'), '--src-offset', String(SIZE + MiB)]),
      USAGE,
      /--src-offset|source has|past the end/,
    );
  },
);
errors(
  'stor copy SOCK null: --src-offset past the end of the source -> exit 2 (not a native "expected a non-negative integer")',
  async () => {
    assertCleanError(
      await stor(['copy', `vhost-user:${s!.socket}`, `null:${SIZE}`, '--src-offset', String(SIZE + MiB)]),
      USAGE,
      /--src-offset|source has|past the end/,
    );
  },
);

// ---- targets that are not vhost-user-blk servers (runtime: exit 1, fast)

errors('vhost-user: a regular file -> exit 1, one line naming the path, no hang', async () => {
  const f = join(dir, 'regular.img');
  filledFile(f, MiB, 0);
  const r = await stor(['info', `vhost-user:${f}`], 15_000);
  assertCleanError(r, RUNTIME, new RegExp(f.replace(/[.]/g, '\\.')));
  assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
});

errors('vhost-user: a path that does not exist -> exit 1, says so', async () => {
  assertCleanError(
    await stor(['read', `vhost-user:${join(dir, 'nope.sock')}`, '--length', '512', '--output', out()], 15_000),
    RUNTIME,
    /No such file|does not exist|ENOENT/,
  );
});

errors('vhost-user: a socket file with no listener -> exit 1, says the connection was refused', async () => {
  // A socket bound and never listened on: its file stays after the binding process exits.
  const path = join(dir, 'dead.sock');
  const { spawnSync } = await import('node:child_process');
  const py = spawnSync(
    'python3',
    ['-c', `import socket;s=socket.socket(socket.AF_UNIX);s.bind(${JSON.stringify(path)})`],
    { timeout: 10_000 },
  );
  assert.is(py.status, 0, `could not make a dead socket file: ${py.stderr}`);
  assertCleanError(
    await stor(['write', `vhost-user:${path}`, '--pattern', '1', '--length', '512'], 15_000),
    RUNTIME,
    /refused|not listening|cannot connect/i,
  );
});

/** A unix socket server that accepts and then behaves as `behave` says. */
async function fakeServer(
  name: string,
  behave: (c: Socket) => void,
): Promise<{ path: string; close(): Promise<void> }> {
  const path = join(dir, name);
  const conns = new Set<Socket>();
  const srv: NetServer = createServer((c) => {
    conns.add(c);
    c.on('error', () => undefined);
    behave(c);
  });
  await new Promise<void>((res) => srv.listen(path, res));
  return {
    path,
    close: () =>
      new Promise<void>((res) => {
        for (const c of conns) c.destroy();
        srv.close(() => res());
      }),
  };
}

errors('vhost-user: a listener that accepts and never answers -> exit 1 after --timeout 1000, no hang', async () => {
  const f = await fakeServer('silent.sock', () => undefined);
  try {
    const r = await stor(['info', `vhost-user:${f.path}`, '--timeout', '1000'], 15_000);
    assertCleanError(r, RUNTIME);
    assert.ok(r.ms < 8000, `took ${r.ms} ms with --timeout 1000`);
  } finally {
    await f.close();
  }
});

errors('vhost-user: a listener that hangs up at once -> exit 1', async () => {
  const f = await fakeServer('hangup.sock', (c) => c.destroy());
  try {
    assertCleanError(await stor(['info', `vhost-user:${f.path}`, '--timeout', '2000'], 15_000), RUNTIME);
  } finally {
    await f.close();
  }
});

errors('vhost-user: a listener that answers with garbage -> exit 1', async () => {
  const f = await fakeServer('garbage.sock', (c) => {
    c.on('data', () => {
      c.write(randomBytes(256));
    });
  });
  try {
    assertCleanError(await stor(['info', `vhost-user:${f.path}`, '--timeout', '2000'], 15_000), RUNTIME);
  } finally {
    await f.close();
  }
});

errors('a bare path that does not exist (read) -> exit 1, one line', async () => {
  assertCleanError(
    await stor(['read', join(dir, 'missing.img'), '--length', '512', '--output', out()]),
    RUNTIME,
    /missing\.img/,
  );
});

// ---- bad flag values and arguments (usage: exit 2)

const BAD_FLAGS: Array<[string, () => string[], RegExp?]> = [
  [
    'read --offset abc',
    () => ['read', `vhost-user:${s!.socket}`, '--offset', 'abc', '--length', '512', '--output', out()],
    /--offset/,
  ],
  ['read --length -512', () => ['read', `vhost-user:${s!.socket}`, '--length', '-512', '--output', out()], /--length/],
  ['read without --length', () => ['read', `vhost-user:${s!.socket}`, '--output', out()], /length/],
  ['info --queues 0', () => ['info', `vhost-user:${s!.socket}`, '--queues', '0'], /queues/],
  ['info --queues two', () => ['info', `vhost-user:${s!.socket}`, '--queues', 'two'], /queues/],
  ['info --completion spin', () => ['info', `vhost-user:${s!.socket}`, '--completion', 'spin'], /completion/],
  ['info --timeout 0', () => ['info', `vhost-user:${s!.socket}`, '--timeout', '0'], /timeout/],
  ['info --bogus', () => ['info', `vhost-user:${s!.socket}`, '--bogus'], /bogus/],
  ['info with no target', () => ['info'], /target|argument/i],
  ['info foo:bar (an unknown scheme: not a target form)', () => ['info', 'foo:bar'], /foo:bar/],
  ['info vhost-user: (no path)', () => ['info', 'vhost-user:'], /vhost-user/],
  ['info null:100 (not a multiple of 512)', () => ['info', 'null:100'], /512/],
  [
    'write --pattern 300',
    () => ['write', `vhost-user:${s!.socket}`, '--pattern', '300', '--length', '512'],
    /--pattern/,
  ],
  ['write --pattern without --length', () => ['write', `vhost-user:${s!.socket}`, '--pattern', '1'], /--length/],
  [
    'write with neither --input nor --pattern',
    () => ['write', `vhost-user:${s!.socket}`, '--length', '512'],
    /input|pattern/,
  ],
  [
    'write --input and --pattern',
    () => ['write', `vhost-user:${s!.socket}`, '--input', input, '--pattern', '1'],
    /input|pattern/,
  ],
  [
    'write --input of a missing file',
    () => ['write', `vhost-user:${s!.socket}`, '--input', join(dir, 'nope.bin')],
    /--input|nope/,
  ],
  [
    'write --length more than the --input file',
    () => ['write', `vhost-user:${s!.socket}`, '--input', input, '--length', '1M'],
    /--length/,
  ],
  ['copy --chunk 100', () => ['copy', input, `vhost-user:${s!.socket}`, '--chunk', '100'], /--chunk/],
  ['copy --chunk 1G', () => ['copy', input, `vhost-user:${s!.socket}`, '--chunk', '1G'], /--chunk/],
  ['copy --iodepth 0', () => ['copy', input, `vhost-user:${s!.socket}`, '--iodepth', '0'], /iodepth/],
  ['copy with one argument', () => ['copy', input], /destination|argument/i],
];

errors(
  `bad flag values and arguments -> exit 2, one 'stor: ' line naming the flag (plus a hint), for each of: ${BAD_FLAGS.map(([n]) => n).join('; ')}`,
  async () => {
    const before = readRange(s!.image!, 0, 128 * 1024);
    // A few at a time: each is a node start-up.
    const results = [];
    for (let i = 0; i < BAD_FLAGS.length; i += 4) {
      results.push(
        ...(await Promise.all(
          BAD_FLAGS.slice(i, i + 4).map(async ([name, args, re]) => ({ name, r: await stor(args(), 20_000), re })),
        )),
      );
    }
    const failures: string[] = [];
    for (const { name, r, re } of results) {
      try {
        assertCleanError(r, USAGE, re);
      } catch (e) {
        failures.push(`${name}: ${(e as Error).message}`);
      }
    }
    assert.is(failures.length, 0, `\n${failures.join('\n\n')}`);
    // and the image was not written by any of them
    assertSame(readRange(s!.image!, 0, 128 * 1024), before, 'image head after the refused writes');
  },
);

errors('--json: a usage error is one JSON document {"error":{"code":2,...}} on stdout, exit 2', async () => {
  const r = await stor(['read', `vhost-user:${s!.socket}`, '--offset', 'abc', '--length', '512', '--json']);
  assert.is(r.code, USAGE, describeRun(r));
  let j: { error?: { code?: number; message?: string } };
  try {
    j = JSON.parse(r.stdout);
  } catch {
    throw new Error(`stdout is not JSON: ${describeRun(r)}`);
  }
  assert.is(j.error?.code, USAGE);
  assert.match(j.error?.message ?? '', /--offset/);
});

// ---- a server SIGKILLed in the middle of a copy

/** Open file descriptors of a process: a vhost-user client connecting adds several. */
function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

const BIG = 1024 * 1024 * MiB; // 1 TiB of null: the copy cannot finish in the test's lifetime

for (const name of ['stor', 'qsd'] as ServerName[]) {
  for (const role of ['source', 'destination'] as const) {
    errors(
      `${name} (null 1 TiB, 2 queues) as the copy's ${role}, SIGKILLed ~300 ms into the copy: stor copy ends by itself within 5 s, exit 1, one 'stor: copy failed ...' line`,
      async () => {
        const srv = await startServer(name, { backend: 'null', size: BIG, queues: 2 });
        try {
          const base = fdCount(srv.srv.pid);
          const sock = `vhost-user:${srv.socket}`;
          const args =
            role === 'source'
              ? ['copy', sock, `null:${BIG}`, '--queues', '2']
              : ['copy', `null:${BIG}`, sock, '--queues', '2'];
          let ended = false;
          const running = stor(args, 30_000).finally(() => {
            ended = true;
          });
          // connected: the server holds the connection, its eventfds and the client's memory
          await waitFor(`stor copy to connect to ${name}`, () => ended || fdCount(srv.srv.pid) >= base + 3, 15_000);
          await sleep(300);
          if (ended) assert.unreachable(`the copy ended before the server was killed: ${describeRun(await running)}`);
          srv.srv.proc.kill('SIGKILL');
          const tKill = Date.now();
          const r = await running;
          const after = Date.now() - tKill;
          assertCleanError(r, RUNTIME, /^stor: copy failed after /);
          assert.ok(after < 5000, `stor copy took ${after} ms to end after the server was killed`);
        } finally {
          await srv.stop();
        }
      },
    );
  }
}

errors.run();
