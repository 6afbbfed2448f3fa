// A small seeded fuzz loop for the TypeScript half of vhost-user message handling (the codec in
// proto/vhost-user.ts and the session state machine), which libFuzzer cannot reach: random sequences
// of messages — known and unknown requests, payloads of random and of exactly-right lengths, mutated
// well-formed payloads, 0-3 fds — against a fake device that fails some calls. Invariants: handle()
// never throws (a bad message drops the front-end with a reason instead), and every fd a message
// brings is accounted for exactly once: taken by the device or handed back to be closed. The C side
// of the same messages is fuzzed by native/fuzz/fuzz_vhost_user.c.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VhostUserSession, type SessionDevice } from '../../src/lib/export/vhost-user/session.js';
import {
  F_PROTOCOL_FEATURES,
  ProtocolFeature,
  Req,
  encodeInflight,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
} from '../../src/lib/proto/vhost-user.js';
import { bit } from '../../src/lib/proto/virtio-blk.js';

/** mulberry32: a tiny seeded generator, so a failure replays. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('vhost-user session: 20000 random messages, never a throw, every fd accounted for once', () => {
  const rand = rng(Number(process.env.STOR_FUZZ_SEED ?? 1234));
  const int = (n: number) => Math.floor(rand() * n);
  let nextFd = 1000;
  const taken: number[] = [];
  const maybeFail = (what: string) => {
    if (rand() < 0.1) throw new Error(`fake ${what} failure`);
  };
  const device: SessionDevice = {
    reset: () => {},
    setFeatures: () => maybeFail('setFeatures'),
    setMemTable: (rs) => {
      taken.push(...rs.map((r) => r.fd));
      maybeFail('setMemTable');
    },
    addMemRegion: (r) => {
      taken.push(r.fd);
      maybeFail('addMemRegion');
    },
    removeMemRegion: () => rand() < 0.5,
    setVring: () => maybeFail('setVring'),
    setVringFd: (_i, _k, fd) => {
      if (fd >= 0) taken.push(fd);
      maybeFail('setVringFd');
    },
    startQueue: () => maybeFail('startQueue'),
    stopQueue: () => int(65536),
    getInflight: (nq, qs) => {
      maybeFail('getInflight');
      return { fd: 7, mmapSize: nq * qs * 16, mmapOffset: 0 };
    },
    setInflight: (b) => {
      taken.push(b.fd);
      maybeFail('setInflight');
    },
  };
  const requests = Object.values(Req);
  // well-formed payloads to mutate, so the fuzz gets past the length checks
  const wellFormed = (req: number): Buffer => {
    switch (req) {
      case Req.SET_FEATURES:
        return encodeU64(bit(F_PROTOCOL_FEATURES) | 1n);
      case Req.SET_PROTOCOL_FEATURES:
        return encodeU64(bit(ProtocolFeature.INFLIGHT_SHMFD) | bit(ProtocolFeature.REPLY_ACK));
      case Req.SET_VRING_ADDR:
        return encodeVringAddr({ index: int(3), flags: 0, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0n });
      case Req.GET_INFLIGHT_FD:
      case Req.SET_INFLIGHT_FD:
        return encodeInflight({ mmapSize: 4096, mmapOffset: 0, numQueues: 1 + int(3), queueSize: 1 << int(10) });
      default:
        return encodeVringState({ index: int(3), num: 1 << int(16) });
    }
  };
  let session = new VhostUserSession(
    {
      queues: 2,
      queueSize: 256,
      features: bit(F_PROTOCOL_FEATURES) | 1n,
      protocolFeatures: bit(ProtocolFeature.INFLIGHT_SHMFD) | bit(ProtocolFeature.REPLY_ACK),
      configSpace: Buffer.alloc(60),
      maxMemSlots: 8,
    },
    device,
  );
  for (let i = 0; i < 20000; i++) {
    const request = rand() < 0.9 ? requests[int(requests.length)]! : int(100);
    let payload: Buffer;
    const shape = rand();
    if (shape < 0.5) {
      payload = Buffer.from(wellFormed(request));
      for (let k = int(3); k > 0; k--) payload[int(payload.length)] = int(256);
    } else if (shape < 0.8) {
      payload = Buffer.alloc(int(48));
      for (let k = 0; k < payload.length; k++) payload[k] = int(256);
    } else {
      payload = Buffer.alloc([0, 8, 12, 20, 24, 40][int(6)]!);
    }
    const fds = Array.from({ length: rand() < 0.6 ? 0 : 1 + int(3) }, () => nextFd++);
    const flags = 1 | (rand() < 0.3 ? 0x8 : 0);
    const before = taken.length;
    const out = ((): ReturnType<VhostUserSession['handle']> => {
      try {
        return session.handle({ header: { request, flags, size: payload.length }, payload, fds });
      } catch (e) {
        return assert.unreachable(
          `message ${i} (request ${request}, ${payload.length} bytes) threw: ${(e as Error).stack}`,
        ) as never;
      }
    })();
    const accounted = [...taken.slice(before), ...out.closeFds].sort((a, b) => a - b);
    assert.equal(accounted, fds, `message ${i} (request ${request}): fds given ${fds}, accounted ${accounted}`);
    assert.ok(Array.isArray(out.replies));
    for (const r of out.replies) assert.ok(Buffer.isBuffer(r) && r.length >= 12);
    if (out.drop !== undefined) assert.type(out.drop, 'string');
    // the server gives each front-end a fresh session; keeping one across drops reaches deeper states
    if (i % 500 === 499) session = new VhostUserSession(session['cfg'], device);
  }
});

test.run();
