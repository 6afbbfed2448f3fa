// Issue 2, section 3 "Bad input", the requests that must FAIL (status IOERR/UNSUPP, or no status
// at all) while the connection stays up: wrong directions, missing status byte, sectors past the
// end and overflowing ones, bad segments. Run against a file backend (random content, compared
// on disk) and a mem backend (read back through the front-end). After each case nothing outside
// the requested range changed; at the end the next front-end is served.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { VIRTIO_BLK_S, VIRTIO_BLK_T } from '../../../src/lib/proto/virtio-blk.js';
import { dwzSegment, type BlkSession, type Completion, type Seg } from '../../helpers/virtq-driver.js';
import { DISK_SECTORS, Harness, within, type BackendKind } from './hostile-helpers.js';

const { OK, IOERR, UNSUPP } = VIRTIO_BLK_S;
const U64_MAX = (1n << 64n) - 1n;

for (const kind of ['file', 'mem'] as BackendKind[]) {
  // 2 queues, cases alternate: the server rate-limits request-failure logs per queue and second.
  const h = new Harness(kind, 2);
  const t = suite(`hostile requests fail, connection stays (${kind} backend)`);
  let s: BlkSession;
  let n = 0;

  t.before(async () => {
    await within(20_000, 'start stor serve', h.start());
    s = h.open({ queues: 2 });
  });
  t.after(async () => {
    s?.close();
    await h.stop();
  });

  /** Runs one request on the next queue, then checks status, log, and the whole backend. */
  async function failing(
    r: Parameters<BlkSession['q0']['run']>[0],
    status: number,
    logRe: RegExp,
  ): Promise<Completion> {
    const m = h.mark();
    const q = s.queues[n++ % 2];
    return within(
      10_000,
      'failing request',
      (async () => {
        const c = await q.run(r, 4000);
        assert.is(c.status, status, `status of the bad request (log: ${h.since(m)})`);
        await h.waitLog(m, logRe);
        await h.compareBackend(s);
        assert.ok(h.alive());
        return c;
      })(),
    );
  }

  /** Posts a hand-made chain on the next queue; returns its used entry. */
  async function chain(segs: Seg[]): Promise<{ id: number; len: number }> {
    const q = s.queues[n++ % 2];
    q.postChain(segs);
    q.kick();
    const [u] = await q.waitUsed(1, 4000);
    q.complete([u]);
    return u;
  }

  function hdr(type: number, sector: bigint | number): number {
    const off = s.mem.alloc(16, 16);
    s.mem.buf.writeUInt32LE(type, off);
    s.mem.buf.writeBigUInt64LE(BigInt(sector), off + 8);
    return off;
  }

  function status(): number {
    const o = s.mem.alloc(1);
    s.mem.buf[o] = 0xff;
    return o;
  }

  t('read whose data buffer is device-readable (wrong direction) -> IOERR, buffer untouched', async () => {
    const data = s.mem.alloc(4096, 512);
    s.mem.buf.fill(0x33, data, data + 4096);
    const st = status();
    const m = h.mark();
    const u = await chain([
      { off: hdr(VIRTIO_BLK_T.IN, 0), len: 16, write: false },
      { off: data, len: 4096, write: false },
      { off: st, len: 1, write: true },
    ]);
    assert.is(s.mem.buf[st], IOERR);
    assert.is(u.len, 1, 'only the status byte was written');
    assert.ok(
      s.mem.buf.subarray(data, data + 4096).every((b) => b === 0x33),
      'the device did not write into a device-readable buffer',
    );
    await h.waitLog(m, /read request \(head \d+\) carries 4096 bytes in the wrong direction/);
    await h.compareBackend(s);
  });

  t('write whose data buffer is device-writable (wrong direction) -> IOERR, backend unchanged', async () => {
    const data = s.mem.alloc(4096, 512);
    s.mem.buf.fill(0x44, data, data + 4096);
    const st = status();
    const m = h.mark();
    await chain([
      { off: hdr(VIRTIO_BLK_T.OUT, 0), len: 16, write: false },
      { off: data, len: 4096, write: true },
      { off: st, len: 1, write: true },
    ]);
    assert.is(s.mem.buf[st], IOERR);
    await h.waitLog(m, /write request \(head \d+\) carries 4096 bytes in the wrong direction/);
    await h.compareBackend(s);
  });

  t('missing status byte (write with only readable buffers) -> returned with length 0, nothing written', async () => {
    const data = s.mem.alloc(4096, 512);
    s.mem.buf.fill(0x55, data, data + 4096);
    const m = h.mark();
    const u = await chain([
      { off: hdr(VIRTIO_BLK_T.OUT, 8), len: 16, write: false },
      { off: data, len: 4096, write: false },
    ]);
    assert.is(u.len, 0, 'used length 0: the device wrote nothing');
    await h.waitLog(m, /has no device-writable status byte/);
    await h.compareBackend(s);
  });

  t('header shorter than 16 bytes -> IOERR', async () => {
    const st = status();
    const m = h.mark();
    await chain([
      { off: hdr(VIRTIO_BLK_T.OUT, 0), len: 8, write: false },
      { off: st, len: 1, write: true },
    ]);
    assert.is(s.mem.buf[st], IOERR);
    await h.waitLog(m, /has a 8-byte header, needs 16/);
    await h.compareBackend(s);
  });

  t('read at the first sector past the end -> IOERR', async () => {
    await failing(
      { type: VIRTIO_BLK_T.IN, sector: DISK_SECTORS, inLen: 512 },
      IOERR,
      new RegExp(`read at sector ${DISK_SECTORS} length 512 is past the end`),
    );
  });

  t('write crossing the end (last sector + 1) -> IOERR, the last sector unchanged', async () => {
    await failing(
      { type: VIRTIO_BLK_T.OUT, sector: DISK_SECTORS - 1, out: Buffer.alloc(1024, 0x66) },
      IOERR,
      /write at sector \d+ length 1024 is past the end/,
    );
  });

  for (const sector of [1n << 63n, 1n << 55n, U64_MAX, U64_MAX - 1n, (1n << 64n) / 512n]) {
    t(
      `write at sector 0x${sector.toString(16)} (sector*512 overflows 64 bits) -> IOERR, sector 0 unchanged`,
      async () => {
        await failing(
          { type: VIRTIO_BLK_T.OUT, sector, out: Buffer.alloc(4096, 0x77) },
          IOERR,
          new RegExp(`write at sector ${sector} length 4096 is past the end`),
        );
      },
    );
  }

  t('read at sector 2^55 (wraps to byte 0) -> IOERR, no data returned', async () => {
    const c = await failing(
      { type: VIRTIO_BLK_T.IN, sector: 1n << 55n, inLen: 4096 },
      IOERR,
      /read at sector 36028797018963968 length 4096 is past the end/,
    );
    assert.ok(
      c.data.every((b) => b === 0xee),
      'the data buffer still holds the driver poison',
    );
    assert.is(c.usedLen, 1);
  });

  t('write-zeroes at sector 2^55 (wraps to byte 0) and crossing the end -> IOERR', async () => {
    await failing(
      { type: VIRTIO_BLK_T.WRITE_ZEROES, sector: 0, out: dwzSegment(1n << 55n, 8) },
      IOERR,
      /write-zeroes of sector 36028797018963968 count 8 refused \(past the end\)/,
    );
    await failing(
      { type: VIRTIO_BLK_T.WRITE_ZEROES, sector: 0, out: dwzSegment(DISK_SECTORS - 4, 8, 1) },
      IOERR,
      /write-zeroes of sector \d+ count 8 refused \(past the end\)/,
    );
  });

  t('discard at sector 2^63 and with 0xffffffff sectors -> IOERR', async () => {
    await failing(
      { type: VIRTIO_BLK_T.DISCARD, sector: 0, out: dwzSegment(1n << 63n, 1) },
      IOERR,
      /discard of sector 9223372036854775808 count 1 refused/,
    );
    await failing(
      { type: VIRTIO_BLK_T.DISCARD, sector: 0, out: dwzSegment(0, 0xffffffff) },
      IOERR,
      /discard of sector 0 count 4294967295 refused/,
    );
  });

  t('discard with flags set, and with two segments -> IOERR / UNSUPP', async () => {
    await failing(
      { type: VIRTIO_BLK_T.DISCARD, sector: 0, out: dwzSegment(0, 8, 1) },
      IOERR,
      /discard of sector 0 count 8 refused \(bad flags\)/,
    );
    await failing(
      { type: VIRTIO_BLK_T.DISCARD, sector: 0, out: Buffer.concat([dwzSegment(0, 8), dwzSegment(16, 8)]) },
      UNSUPP,
      /discard request carries 32 bytes of segments/,
    );
  });

  t('read and write of a length not a multiple of 512 -> IOERR', async () => {
    await failing(
      { type: VIRTIO_BLK_T.IN, sector: 0, inLen: 100 },
      IOERR,
      /read of 100 bytes is not a multiple of 512/,
    );
    await failing(
      { type: VIRTIO_BLK_T.OUT, sector: 0, out: Buffer.alloc(513, 1) },
      IOERR,
      /write of 513 bytes is not a multiple of 512/,
    );
  });

  t('unknown request type 99 -> UNSUPP', async () => {
    await failing({ type: 99, sector: 0, inLen: 512 }, UNSUPP, /unsupported request type 99/);
  });

  t('the same connection still does a good write+read after all the failed requests', async () => {
    const data = Buffer.alloc(8192, 0x3c);
    assert.is((await s.write(100, data, 1)).status, OK);
    data.copy(h.model, 100 * 512);
    const r = await s.read(100, 8192, 0);
    assert.is(r.status, OK);
    assert.ok(r.data.equals(data));
    await h.compareBackend(s);
  });

  t('the next front-end is served after this one leaves', async () => {
    const m = h.mark();
    s.close();
    await within(
      10_000,
      'next front-end',
      (async () => {
        await h.waitDisconnected(m);
        await h.proveHealthy();
      })(),
    );
  });

  t.run();
}
