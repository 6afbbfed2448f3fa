// The happy path through stor's own front-end (src/lib/client/vhost-user-frontend.ts) and the test
// driver: negotiation, config, 2 queues, then every virtio-blk request type, checked end to end.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { FrontendTimeoutError, VhostUserFrontend } from '../../../src/lib/client/vhost-user-frontend.js';
import { F_PROTOCOL_FEATURES, ProtocolFeature } from '../../../src/lib/proto/vhost-user.js';
import { VIRTIO_BLK_F, VIRTIO_BLK_S, VIRTIO_BLK_T, VIRTIO_F, bit, hasBit } from '../../../src/lib/proto/virtio-blk.js';
import { startStor, cleanupSocket, type RunningServer } from '../../helpers/servers.js';
import { dwzSegment, type BlkSession } from '../../helpers/virtq-driver.js';
import { DISK_SECTORS, DISK_SIZE, Harness, within } from './hostile-helpers.js';

const { OK } = VIRTIO_BLK_S;

for (const kind of ['mem', 'file'] as const) {
  const h = new Harness(kind, 2, ['--serial', 'stor-happy-012345678']);
  const t = suite(`front-end + test driver happy path (${kind} backend, 2 queues)`);
  let s: BlkSession;

  t.before(async () => {
    await within(20_000, 'start stor serve', h.start());
    s = h.open({ queues: 2, queueSize: 128 });
  });
  t.after(async () => {
    s?.close();
    await h.stop();
  });

  t('negotiation: features, protocol features, queue count and config space as served', () => {
    assert.ok(hasBit(s.features, VIRTIO_F.VERSION_1));
    assert.ok(hasBit(s.features, F_PROTOCOL_FEATURES));
    assert.ok(hasBit(s.features, VIRTIO_F.RING_INDIRECT_DESC));
    assert.ok(hasBit(s.features, VIRTIO_BLK_F.DISCARD) && hasBit(s.features, VIRTIO_BLK_F.WRITE_ZEROES));
    assert.ok(!hasBit(s.features, VIRTIO_F.RING_EVENT_IDX), 'only what the driver asked for is acked');
    assert.is(s.fe.protocolFeatures & bit(ProtocolFeature.REPLY_ACK), bit(ProtocolFeature.REPLY_ACK));
    assert.is(s.fe.getQueueNum(), 2);
    assert.is(s.config.capacitySectors, BigInt(DISK_SECTORS));
    assert.is(s.config.numQueues, 2);
    assert.is(s.config.blkSize, 512);
    assert.is(s.config.maxDiscardSeg, 1);
    // a partial config read returns exactly the requested bytes (capacity, 8 bytes at 0)
    assert.is(s.fe.getConfig(0, 8).readBigUInt64LE(0), BigInt(DISK_SECTORS));
    assert.is(s.fe.getMaxMemSlots() > 0, true);
  });

  t('write a pattern on queue 0, read it back on queue 1 (direct and indirect chains)', async () => {
    const data = randomBytes(64 * 1024);
    const w = await s.queues[0].run({ type: VIRTIO_BLK_T.OUT, sector: 128, out: data });
    assert.is(w.status, OK);
    assert.is(w.usedLen, 1, 'a write reports only the status byte as written');
    data.copy(h.model, 128 * 512);
    const r = await s.queues[1].run({ type: VIRTIO_BLK_T.IN, sector: 128, inLen: data.length });
    assert.is(r.status, OK);
    assert.is(r.usedLen, data.length + 1);
    assert.ok(r.data.equals(data));
    const ri = await s.queues[1].run({ type: VIRTIO_BLK_T.IN, sector: 128, inLen: data.length, indirect: true });
    assert.is(ri.status, OK);
    assert.ok(ri.data.equals(data), 'indirect read returns the same data');
    await h.compareBackend(s);
  });

  t('many requests in flight on both queues complete with the right data', async () => {
    const datas = Array.from({ length: 16 }, () => randomBytes(4096));
    for (let i = 0; i < 16; i++) s.queues[i % 2].post({ type: VIRTIO_BLK_T.OUT, sector: 512 + 8 * i, out: datas[i] });
    for (const q of s.queues) q.kick();
    for (const q of s.queues) for (const c of q.complete(await q.waitUsed(8))) assert.is(c.status, OK);
    datas.forEach((d, i) => d.copy(h.model, (512 + 8 * i) * 512));
    for (let i = 0; i < 16; i++)
      s.queues[(i + 1) % 2].post({ type: VIRTIO_BLK_T.IN, sector: 512 + 8 * i, inLen: 4096 });
    for (const q of s.queues) q.kick();
    const got = new Map<number, Buffer>();
    for (const q of s.queues)
      for (const c of q.complete(await q.waitUsed(8))) {
        assert.is(c.status, OK);
        got.set(Number(q.mem.buf.readBigUInt64LE(c.hdrOff + 8)), c.data);
      }
    for (let i = 0; i < 16; i++) assert.ok(got.get(512 + 8 * i)!.equals(datas[i]), `request ${i} read back`);
  });

  t('flush succeeds on both queues', async () => {
    for (const q of s.queues) assert.is((await q.run({ type: VIRTIO_BLK_T.FLUSH, sector: 0 })).status, OK);
  });

  t('discard then read returns zeroes, neighbours untouched', async () => {
    const c = await s.q0.run({ type: VIRTIO_BLK_T.DISCARD, sector: 0, out: dwzSegment(136, 8) });
    assert.is(c.status, OK);
    h.model.fill(0, 136 * 512, 144 * 512);
    const r = await s.queues[1].run({ type: VIRTIO_BLK_T.IN, sector: 128, inLen: 32 * 512 });
    assert.ok(r.data.equals(h.model.subarray(128 * 512, 160 * 512)));
    assert.ok(r.data.subarray(8 * 512, 16 * 512).every((b) => b === 0));
    await h.compareBackend(s);
  });

  t('write-zeroes (with and without UNMAP) then read returns zeroes', async () => {
    for (const [sector, flags] of [
      [144, 0],
      [160, 1],
    ]) {
      const c = await s.queues[1].run({
        type: VIRTIO_BLK_T.WRITE_ZEROES,
        sector: 0,
        out: dwzSegment(sector, 4, flags),
      });
      assert.is(c.status, OK);
      h.model.fill(0, sector * 512, (sector + 4) * 512);
    }
    await h.compareBackend(s);
  });

  t('GET_ID returns the serial (20 bytes, not NUL-terminated when full)', async () => {
    const c = await s.q0.run({ type: VIRTIO_BLK_T.GET_ID, sector: 0, inLen: 20 });
    assert.is(c.status, OK);
    assert.is(c.usedLen, 21);
    assert.is(c.data.toString('latin1'), 'stor-happy-012345678');
  });

  t('the last sector can be written and read; the whole backend equals the model', async () => {
    const data = randomBytes(512);
    assert.is((await s.write(DISK_SECTORS - 1, data, 1)).status, OK);
    data.copy(h.model, DISK_SIZE - 512);
    assert.ok((await s.read(DISK_SECTORS - 1, 512, 0)).data.equals(data));
    await h.compareBackend(s);
  });

  t('GET_VRING_BASE stops the ring at the next avail index; the ring restarts after a new kick fd', async () => {
    const q = s.queues[1];
    const base = s.fe.getVringBase(1);
    assert.is(base, q.availIdx, 'the back-end consumed exactly what was made available');
    s.fe.setVringBase(1, base);
    s.fe.setVringKick(1, q.kickFd);
    assert.is((await q.run({ type: VIRTIO_BLK_T.FLUSH, sector: 0 })).status, OK);
  });

  t.run();
}

const f = suite('front-end control plane errors');
let dead: RunningServer | undefined;
f.after(async () => {
  if (dead) {
    await dead.stop();
    cleanupSocket(dead.socket);
  }
});

f('a back-end that does not answer is a timeout error naming the request, not a hang', async () => {
  // a SIGSTOPped server accepts (the kernel does) but never replies
  dead = await within(20_000, 'start', startStor({ backend: { kind: 'null', size: 1 << 20 } }));
  dead.proc.kill('SIGSTOP');
  try {
    const fe = VhostUserFrontend.connect(dead.socket, { timeoutMs: 300 });
    const t0 = Date.now();
    try {
      fe.getFeatures();
      assert.unreachable('got a reply from a stopped server');
    } catch (e) {
      assert.instance(e, FrontendTimeoutError);
      assert.match((e as Error).message, /^GET_FEATURES: no reply within 300 ms/);
    }
    assert.ok(Date.now() - t0 < 2000, 'gave up within the deadline');
    fe.close();
  } finally {
    dead.proc.kill('SIGCONT');
  }
});

f('connecting to a missing socket is an error naming the path', () => {
  try {
    VhostUserFrontend.connect('/nonexistent/stor.sock');
    assert.unreachable('connected');
  } catch (e) {
    assert.match((e as Error).message, /cannot connect to \/nonexistent\/stor\.sock/);
  }
});

f('REPLY_ACK: a request the back-end fails throws with the request name', async () => {
  const srv = await within(20_000, 'start', startStor({ backend: { kind: 'null', size: 1 << 20 } }));
  try {
    const fe = VhostUserFrontend.connect(srv.socket, { timeoutMs: 3000 });
    fe.negotiate({ features: bit(VIRTIO_F.VERSION_1), protocolFeatures: bit(ProtocolFeature.REPLY_ACK) });
    try {
      fe.removeMemRegion({ guestAddr: 0n, size: 4096n, userAddr: 0n, mmapOffset: 0n });
      assert.unreachable('acked');
    } catch (e) {
      assert.match((e as Error).message, /^REM_MEM_REG: back-end failed the request \(ack 1\)/);
    }
    assert.is(fe.getQueueNum(), 1, 'the connection still works');
    fe.close();
  } finally {
    await srv.stop();
    cleanupSocket(srv.socket);
  }
});

f.run();
