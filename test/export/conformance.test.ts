// Export conformance: the same checks for every export × backend cell (exports.ts lists the
// exports, backends.ts the backends). Per cell one server serves a 4 MiB backend on 2 queues and
// every driver of the export runs every check it can express; after each check that writes, the
// whole backend is compared with the model. A read-only server on the same backend ends the cell.
// The reference (qemu-storage-daemon) runs the protocol checks, so a check that fails on both
// points at the check, one that fails on stor alone at stor.
// Each check names the export kinds it applies to: the kernel exports (ublk, VDUSE, in the one test
// guest that guest.ts boots for all their cells) are reached through the kernel's block layer, so
// the checks that need raw virtio requests (past the end, segment layouts, GET_ID) are vhost-user's.
import { randomBytes } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { backendUnavailable, type BackendFixture } from './backends.js';
import { one, readAll, type DiskDriver, type Op, type Result } from './drivers.js';
import { EXPORTS, type DriverKind, type Export, type ExportKind, type RunningExport } from './exports.js';
import { stopKernelGuest } from './guest.js';
import { within } from './hostile/hostile-helpers.js';
import { liveGuests } from '../../tools/vm.js';

const SIZE = 4 << 20;
const QUEUES = 2;
const KiB = 1024;

interface Cell {
  exp: Export;
  b: BackendFixture;
  e: RunningExport;
  d: DiskDriver;
}

/** Every export: what a block device does, whoever drives it. */
const EVERY_EXPORT: readonly ExportKind[] = ['vhost-user', 'ublk', 'vduse'];
/** Needs virtio-blk requests as built, which only a vhost-user driver can send. */
const VHOST_USER_ONLY: readonly ExportKind[] = ['vhost-user'];

interface Check {
  name: string;
  /** The export kinds the check applies to. */
  exports: readonly ExportKind[];
  /** Needs requests to reach the export unchecked (past the end, any segment layout, GET_ID). */
  raw?: boolean;
  /** About stor rather than the protocol: not run against the reference. */
  storOnly?: boolean;
  run(c: Cell): Promise<void>;
}

function assertOk(rs: Result[], what: string): void {
  rs.forEach((r, i) => assert.is(r.status, 'ok', `${what} (request ${i})`));
}

/** What a read of [offset, offset+length) must return: the model (which stays zero for null). */
function expected(c: Cell, offset: number, length: number): Buffer {
  return c.b.model.subarray(offset, offset + length);
}

function assertData(c: Cell, r: Result, offset: number, what: string): void {
  assert.is(r.status, 'ok', `${what}: status`);
  const want = expected(c, offset, r.data.length);
  if (!r.data.equals(want)) {
    let i = 0;
    while (r.data[i] === want[i]) i++;
    assert.unreachable(
      `${what}: byte ${offset + i} (sector ${Math.floor((offset + i) / 512)}) reads 0x${r.data[i]?.toString(16)}, ` +
        `the backend holds 0x${want[i]?.toString(16)}`,
    );
  }
}

/** Writes data at offset (one request) and records it in the model. */
async function write(c: Cell, q: number, offset: number, data: Buffer): Promise<void> {
  assert.is((await one(c.d, q, { op: 'write', offset, data })).status, 'ok', `write at ${offset}`);
  c.b.wrote(offset, data);
}

const verify = (c: Cell): Promise<void> => c.b.assertMatches(() => readAll(c.d));

const CHECKS: Check[] = [
  {
    // a kernel disk says it in sysfs: size, logical_block_size, max_segments, mq/*, ro,
    // discard_max_bytes, write_zeroes_max_bytes, write_cache
    name: 'config space matches the backend (capacity, blk_size, seg_max, num_queues)',
    exports: EVERY_EXPORT,
    async run(c) {
      const g = c.d.geometry;
      assert.is(g.capacity, SIZE, 'capacity');
      assert.is(g.blockSize, 512, 'blk_size');
      assert.is(g.segMax, c.e.segMax, 'seg_max');
      assert.is(g.numQueues, QUEUES, 'num_queues');
      assert.is(g.readOnly, false, 'a writable export does not say read-only');
      assert.ok(g.discard && g.writeZeroes, 'discard and write-zeroes are offered');
      if (g.volatileCache !== undefined) assert.ok(g.volatileCache, 'the disk is write-back, so flushes reach it');
    },
  },
  {
    name: 'write/read round trip with a pattern at several offsets, the last sector included',
    exports: EVERY_EXPORT,
    async run(c) {
      const at: Array<[number, number]> = [
        [0, 4 * KiB],
        [7 * 512, 3 * 512],
        [(1 << 20) + 3 * 512, 8 * KiB],
        [SIZE - 64 * KiB, 4 * KiB],
        [SIZE - 512, 512],
      ];
      const writes: Op[] = at.map(([offset, len]) => ({ op: 'write', offset, data: randomBytes(len) }));
      assertOk(await c.d.batch(0, writes), 'writes on queue 0');
      for (const w of writes) if (w.op === 'write') c.b.wrote(w.offset, w.data);
      const reads = await c.d.batch(
        QUEUES - 1,
        at.map(([offset, length]) => ({ op: 'read', offset, length })),
      );
      reads.forEach((r, i) => assertData(c, r, at[i]![0], `read back at ${at[i]![0]} on the other queue`));
      await verify(c);
    },
  },
  {
    name: 'multi-segment requests: seg_max segments of one sector in one request, and a split read',
    exports: VHOST_USER_ONLY,
    raw: true,
    async run(c) {
      const most = c.d.geometry.segMax;
      const big = randomBytes(most * 512);
      const off = 2 << 20;
      const sectors = new Array<number>(most).fill(512);
      assert.is(
        (await one(c.d, 0, { op: 'write', offset: off, data: big, segments: sectors })).status,
        'ok',
        `write of seg_max (${most}) segments`,
      );
      c.b.wrote(off, big);
      assertData(
        c,
        await one(c.d, 1, { op: 'read', offset: off, length: big.length, segments: sectors }),
        off,
        `read of seg_max (${most}) segments`,
      );
      assertData(
        c,
        await one(c.d, 0, { op: 'read', offset: off, length: 24 * KiB, segments: [4096, 512, 8192, 1024] }),
        off,
        'read in 5 segments',
      );
      await verify(c);
    },
  },
  {
    // The virtio spec puts no alignment on a segment, only on the whole request. Linux's driver
    // keeps segments sector-aligned; other drivers (and hostile ones) need not.
    name: 'multi-segment requests split inside a sector (segments of 100 and 412 bytes)',
    exports: VHOST_USER_ONLY,
    raw: true,
    async run(c) {
      const base = 4096 * 512;
      const data = randomBytes(24 * KiB);
      assert.is(
        (await one(c.d, 0, { op: 'write', offset: base, data, segments: [512, 1536, 100, 412, 4096, 8192] })).status,
        'ok',
        'write in 7 segments',
      );
      c.b.wrote(base, data);
      assertData(
        c,
        await one(c.d, 1, { op: 'read', offset: base, length: data.length, segments: [4096, 3584, 512, 1000, 24] }),
        base,
        'read in 6 segments',
      );
      await verify(c);
    },
  },
  {
    name: 'FLUSH succeeds on every queue',
    exports: EVERY_EXPORT,
    async run(c) {
      for (let q = 0; q < QUEUES; q++)
        assert.is((await one(c.d, q, { op: 'flush' })).status, 'ok', `flush on queue ${q}`);
    },
  },
  {
    name: 'GET_ID returns the serial',
    exports: VHOST_USER_ONLY,
    raw: true,
    async run(c) {
      const r = await one(c.d, 0, { op: 'get-id' });
      assert.is(r.status, 'ok');
      const serial = Buffer.from(c.e.serial, 'latin1');
      assert.is(r.data.subarray(0, serial.length).toString('latin1'), c.e.serial);
      if (serial.length < 20) assert.is(r.data[serial.length], 0, 'a serial shorter than 20 bytes is NUL-terminated');
    },
  },
  {
    name: 'the kernel reads the serial with GET_ID (sysfs serial)',
    exports: ['vduse'],
    async run(c) {
      assert.is(c.d.geometry.serial, c.e.serial);
    },
  },
  {
    name: 'DISCARD reads back as zeros, the neighbouring sectors intact',
    exports: EVERY_EXPORT,
    async run(c) {
      const off = 3 << 20;
      await write(c, 0, off, randomBytes(64 * KiB));
      assert.is(
        (await one(c.d, 1, { op: 'discard', offset: off + 16 * KiB, length: 16 * KiB })).status,
        'ok',
        'discard',
      );
      c.b.zeroed(off + 16 * KiB, 16 * KiB);
      assertData(
        c,
        await one(c.d, 0, { op: 'read', offset: off, length: 64 * KiB }),
        off,
        'read across the discarded range',
      );
      await verify(c);
    },
  },
  {
    name: 'WRITE_ZEROES (with and without UNMAP, aligned and not) reads back as zeros, the neighbouring sectors intact',
    exports: EVERY_EXPORT,
    async run(c) {
      const off = (3 << 20) + 512 * KiB;
      await write(c, 0, off, randomBytes(64 * KiB));
      for (const [at, len, unmap] of [
        [4 * KiB, 4 * KiB, false],
        [32 * KiB + 512, 5 * 512, true],
        [48 * KiB, 8 * KiB, true],
      ] as const) {
        assert.is(
          (await one(c.d, 1, { op: 'write-zeroes', offset: off + at, length: len, unmap })).status,
          'ok',
          `write-zeroes at +${at}`,
        );
        c.b.zeroed(off + at, len);
      }
      assertData(
        c,
        await one(c.d, 0, { op: 'read', offset: off, length: 64 * KiB }),
        off,
        'read across the zeroed ranges',
      );
      await verify(c);
    },
  },
  {
    name: 'a read or write past the end -> IOERR, the last sector untouched',
    exports: VHOST_USER_ONLY,
    raw: true,
    async run(c) {
      const cases: Op[] = [
        { op: 'read', offset: SIZE - 512, length: 1024 },
        { op: 'read', offset: SIZE, length: 512 },
        { op: 'write', offset: SIZE - 512, data: Buffer.alloc(1024, 0x5a) },
        { op: 'write', offset: SIZE, data: Buffer.alloc(512, 0x5a) },
      ];
      for (const op of cases) {
        const r = await one(c.d, 0, op);
        assert.is(r.status, 'ioerr', `${op.op} at ${'offset' in op ? op.offset : '?'} crossing the end`);
      }
      assertData(
        c,
        await one(c.d, 1, { op: 'read', offset: SIZE - 4 * KiB, length: 4 * KiB }),
        SIZE - 4 * KiB,
        'the last 4 KiB',
      );
      await verify(c);
    },
  },
  {
    name: 'two queues in use at once: 16 requests in flight on each',
    exports: EVERY_EXPORT,
    async run(c) {
      const n = 16;
      const off = (q: number, i: number): number => (1 << 20) + (q * n + i) * 8 * KiB;
      const datas = [0, 1].map(() => Array.from({ length: n }, () => randomBytes(8 * KiB)));
      const writes = [0, 1].map((q) =>
        c.d.batch(
          q,
          datas[q]!.map((data, i): Op => ({ op: 'write', offset: off(q, i), data })),
        ),
      );
      (await Promise.all(writes)).forEach((rs, q) => assertOk(rs, `writes on queue ${q}`));
      datas.forEach((ds, q) => ds.forEach((data, i) => c.b.wrote(off(q, i), data)));
      // each queue reads back what the other wrote, both at once
      const reads = [0, 1].map((q) =>
        c.d.batch(
          q,
          datas[1 - q]!.map((_, i): Op => ({ op: 'read', offset: off(1 - q, i), length: 8 * KiB })),
        ),
      );
      (await Promise.all(reads)).forEach((rs, q) =>
        rs.forEach((r, i) => assertData(c, r, off(1 - q, i), `queue ${q} reading request ${i} of queue ${1 - q}`)),
      );
      await verify(c);
    },
  },
];

/** How a kernel block device refuses a write to a read-only disk. */
const READ_ONLY_ERRNOS = ['EPERM', 'EROFS'];
/** A read-only disk offers no discard or write-zeroes: the kernel may refuse those as unsupported. */
const READ_ONLY_TRIM_ERRNOS = [...READ_ONLY_ERRNOS, 'EOPNOTSUPP'];

/** The read-only export over the same backend: refuses every write, serves reads of the unchanged data. */
async function readOnlyCheck(c: Cell, d: DiskDriver): Promise<void> {
  assert.is(d.geometry.readOnly, true, 'the export says read-only (VIRTIO_BLK_F_RO; a kernel disk: sysfs ro)');
  if (c.exp.kind !== 'vhost-user') {
    // the kernel refuses: the disk says read-only, whatever reaches stor is its business
    const tries: Array<[number, Op]> = [
      [0, { op: 'write', offset: 0, data: Buffer.alloc(4096, 0x77) }],
      [1, { op: 'write', offset: SIZE - 512, data: Buffer.alloc(512, 0x77) }],
      [0, { op: 'discard', offset: 8 * KiB, length: 8 * KiB }],
      [1, { op: 'write-zeroes', offset: 8 * KiB, length: 8 * KiB }],
      [0, { op: 'write-zeroes', offset: 16 * KiB, length: 8 * KiB, unmap: true }],
    ];
    for (const [q, op] of tries) {
      const r = await one(d, q, op);
      const at = 'offset' in op ? op.offset : 0;
      const want = op.op === 'write' ? READ_ONLY_ERRNOS : READ_ONLY_TRIM_ERRNOS;
      assert.ok(
        r.status !== 'ok' && want.includes(r.errno ?? ''),
        `${op.op} at ${at} on queue ${q} of a read-only disk -> ${r.errno ?? r.status}, want one of ${want.join('/')}`,
      );
    }
  } else if (d.raw) {
    assert.is((await one(d, 0, { op: 'write', offset: 0, data: Buffer.alloc(4096, 0x77) })).status, 'ioerr', 'write');
    assert.is(
      (await one(d, 1, { op: 'write', offset: SIZE - 512, data: Buffer.alloc(512, 0x77) })).status,
      'ioerr',
      'write of the last sector',
    );
    for (const op of ['discard', 'write-zeroes'] as const) {
      const s = (await one(d, 0, { op, offset: 8 * KiB, length: 8 * KiB })).status;
      assert.ok(s === 'ioerr' || s === 'unsupp', `${op} on a read-only export -> ${s}`);
    }
  }
  await c.b.assertMatches(() => readAll(d));
}

for (const exp of EXPORTS) {
  for (const kind of exp.backends) {
    const t = suite(`export conformance: ${exp.name} × ${kind}`);
    const unavailable = exp.unavailable?.() ?? backendUnavailable(kind);
    if (unavailable) {
      t.skip(`every check (${unavailable})`, () => {});
      t.run();
      continue;
    }
    const b = exp.fixture(kind, SIZE);
    let e: RunningExport | undefined;
    let d: DiskDriver | undefined;
    let dName = '';
    const serial = `conf-${kind}`;

    /** The open driver of kind dk, closing another one first (the export takes one at a time). */
    const use = async (dk: DriverKind): Promise<DiskDriver> => {
      if (d && dName === dk.name) return d;
      if (d) {
        await d.close();
        d = undefined;
      }
      d = await dk.open(e!, QUEUES);
      dName = dk.name;
      return d;
    };
    /**
     * Runs a case body; a failure carries the end of the server's log. The server logs a failed
     * request from its JS thread, after the driver has seen the status: wait for its output to go
     * quiet first, or the reason is missing from the report.
     */
    const guarded = async (what: string, body: () => Promise<void>): Promise<void> => {
      if (startFailed) throw new Error(`the export did not start: ${startFailed.message}`);
      try {
        await within(exp.timeouts.check, what, body());
      } catch (err) {
        if (err instanceof Error && e) {
          const deadline = Date.now() + 2000;
          for (let seen = -1; seen !== e.output().length && Date.now() < deadline;) {
            seen = e.output().length;
            await new Promise((r) => setTimeout(r, 250));
          }
          err.message += `\n--- server output (tail) ---\n${e.output().slice(-3000)}`;
        }
        throw err;
      }
    };

    // uvu does not report a hook's failure: it is kept and each case throws it
    let startFailed: Error | undefined;
    t.before(async () => {
      try {
        e = await within(
          exp.timeouts.start,
          'start the export',
          exp.start(b, { queues: QUEUES, readonly: false, serial }),
        );
      } catch (err) {
        startFailed = err as Error;
      }
    });
    t.after(async () => {
      if (d) await d.close().catch(() => {});
      if (e) await e.stop();
      b.cleanup();
    });

    for (const dk of exp.drivers) {
      for (const check of CHECKS) {
        if (!check.exports.includes(exp.kind)) continue;
        if (check.raw && !dk.raw) continue;
        if (check.storOnly && exp.reference) continue;
        t(`${check.name} [${dk.name}]`, () =>
          guarded(check.name, async () => {
            const drv = await use(dk);
            await check.run({ exp, b, e: e!, d: drv });
            assert.ok(e!.alive(), 'the server is still running');
          }),
        );
      }
    }

    if (exp.kind !== 'vhost-user') {
      // what reached stor, as its queue threads counted it: blk-mq sent each queue's requests from
      // the CPUs mapped to it, and the kernel may turn a request into another (a write-zeroes into
      // writes of zeros) where the disk does not offer it
      t(
        `detach: exit 0 on SIGTERM; stor's per-queue counts: each queue served reads, writes and flushes, discards and write-zeroes arrived as such, none failed`,
        () =>
          guarded('detach', async () => {
            if (d) {
              await d.close();
              d = undefined;
            }
            const counts = await e!.stop();
            e = undefined;
            assert.ok(counts, 'stor attach gave per-queue counts');
            assert.is(counts.length, QUEUES, 'queues counted');
            counts.forEach((q, i) => {
              const say = `queue ${i}: ${JSON.stringify(q)}`;
              assert.ok(q.reads > 0 && q.writes > 0 && q.flushes > 0, `${say}: reads, writes and flushes`);
              assert.is(q.errors, 0, `${say}: failed requests`);
            });
            const total = (k: 'discards' | 'write_zeroes'): number => counts.reduce((a, q) => a + q[k], 0);
            assert.ok(total('discards') > 0, 'no discard reached stor');
            assert.ok(total('write_zeroes') > 0, 'no write-zeroes reached stor');
          }),
      );
    }

    const refusal = exp.kind === 'vhost-user' ? 'IOERR' : READ_ONLY_ERRNOS.join('/');
    t(`read-only export: writes -> ${refusal}, the data unchanged [${exp.drivers.map((x) => x.name).join(', ')}]`, () =>
      guarded('read-only', async () => {
        if (d) {
          await d.close();
          d = undefined;
        }
        if (e) await e.stop();
        e = undefined;
        b.serverRestarted();
        e = await exp.start(b, { queues: QUEUES, readonly: true, serial });
        for (const dk of exp.drivers) {
          const drv = await use(dk);
          await readOnlyCheck({ exp, b, e, d: drv }, drv);
        }
      }),
    );

    t.run();
  }
}

// The kernel cells share one guest: it powers off after the last of them, and must do so cleanly
// (the agent detaches what is left and exits 0; the kernel logged no oops or hung task).
const guestEnd = suite('export conformance: the test guest of the kernel exports');
guestEnd('powers off cleanly after the last kernel cell, no kernel error on its console', async () => {
  const r = await stopKernelGuest();
  if (!r) return; // no kernel cell ran (no guest image)
  const trouble = r.console
    .split('\n')
    .filter((l) => /\b(BUG|Oops|WARNING|INFO: task .* blocked)\b|I\/O error/.test(l));
  assert.equal(trouble, [], 'kernel errors on the console');
  assert.is(r.status, 0, `the agent's exit status; console tail:\n${r.console.slice(-3000)}`);
  assert.is(liveGuests(), 0, 'no QEMU left running');
});
guestEnd.run();
