// The vhost-user session state machine (src/lib/export/vhost-user/session.ts) driven message by
// message against a fake device that records every action: feature negotiation, REPLY_ACK, when a
// ring starts and stops, and that bad messages drop the front-end with a reason and give every fd
// back. No socket, no addon.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  VhostUserSession,
  type MappedGuestRegion,
  type Message,
  type SessionDevice,
} from '../../src/lib/export/vhost-user/session.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  F_PROTOCOL_FEATURES,
  HEADER_SIZE,
  ProtocolFeature,
  Req,
  VERSION,
  decodeHeader,
  encodeMemTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from '../../src/lib/proto/vhost-user.js';
import { bit } from '../../src/lib/proto/virtio-blk.js';

class FakeDevice implements SessionDevice {
  actions: string[] = [];
  fdsOwned: number[] = [];
  failNext?: string;
  base = 7;
  private act(a: string): void {
    this.actions.push(a);
    if (this.failNext) {
      const m = this.failNext;
      this.failNext = undefined;
      throw new Error(m);
    }
  }
  reset(): void {
    this.act('reset');
  }
  setFeatures(f: bigint): void {
    this.act(`features 0x${f.toString(16)}`);
  }
  setMemTable(rs: MappedGuestRegion[]): void {
    this.fdsOwned.push(...rs.map((r) => r.fd));
    this.act(`memtable ${rs.length}`);
  }
  addMemRegion(r: MappedGuestRegion): void {
    this.fdsOwned.push(r.fd);
    this.act('addmem');
  }
  removeMemRegion(): boolean {
    this.act('remmem');
    return true;
  }
  setVring(i: number, v: Record<string, unknown>): void {
    this.act(`vring ${i} ${Object.keys(v).join(',')}`);
  }
  setVringFd(i: number, kind: string, fd: number): void {
    if (fd >= 0) this.fdsOwned.push(fd);
    this.act(`${kind} ${i} ${fd}`);
  }
  startQueue(i: number): void {
    this.act(`start ${i}`);
  }
  stopQueue(i: number): number {
    this.act(`stop ${i}`);
    return this.base;
  }
}

const FEATURES = bit(32) | bit(F_PROTOCOL_FEATURES) | bit(9);
const PROTOCOL = bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG);

function make(queues = 2) {
  const dev = new FakeDevice();
  const logs: string[] = [];
  const s = new VhostUserSession(
    {
      queues,
      queueSize: 256,
      features: FEATURES,
      protocolFeatures: PROTOCOL,
      configSpace: Buffer.alloc(60, 0xab),
      maxMemSlots: 2,
    },
    dev,
    (level, m) => logs.push(`${level} ${m}`),
  );
  return { s, dev, logs };
}

function msg(
  request: number,
  payload: Buffer = Buffer.alloc(0),
  o: { fds?: number[]; needReply?: boolean } = {},
): Message {
  return {
    header: { request, flags: VERSION | (o.needReply ? FLAG_NEED_REPLY : 0), size: payload.length },
    payload,
    fds: o.fds ?? [],
  };
}
const region = { guestAddr: 0n, size: 1n << 20n, userAddr: 0x7000_0000n, mmapOffset: 0n };
const addr = (index: number) =>
  encodeVringAddr({ index, flags: 0, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0n });

function replyU64(b: Buffer, request: number): bigint {
  const h = decodeHeader(b);
  assert.is(h.request, request);
  assert.ok(h.flags & FLAG_REPLY, 'reply flag');
  assert.is(h.size, 8);
  return b.readBigUInt64LE(HEADER_SIZE);
}

test('GET_FEATURES offers the configured features; SET_FEATURES passes them on without the protocol-features bit', () => {
  const { s, dev } = make();
  const r = s.handle(msg(Req.GET_FEATURES));
  assert.is(r.replies.length, 1);
  assert.is(replyU64(r.replies[0], Req.GET_FEATURES), FEATURES);
  const set = s.handle(msg(Req.SET_FEATURES, encodeU64(FEATURES)));
  assert.is(set.drop, undefined);
  assert.equal(dev.actions, [`features 0x${(FEATURES & ~bit(F_PROTOCOL_FEATURES)).toString(16)}`]);
  assert.is(s.negotiatedFeatures, FEATURES);
});

test('acking a feature or protocol feature never offered drops the front-end', () => {
  const { s, dev } = make();
  assert.match(s.handle(msg(Req.SET_FEATURES, encodeU64(FEATURES | bit(5)))).drop ?? '', /never offered: 0x20/);
  assert.match(
    s.handle(msg(Req.SET_PROTOCOL_FEATURES, encodeU64(bit(ProtocolFeature.STATUS)))).drop ?? '',
    /never offered/,
  );
  assert.equal(dev.actions, []);
});

test('REPLY_ACK: a status reply only once negotiated and asked for; unsupported requests answer 1 and give their fds back', () => {
  const { s, logs } = make();
  assert.equal(s.handle(msg(Req.SET_OWNER, undefined, { needReply: true })).replies, [], 'not negotiated yet');
  s.handle(msg(Req.SET_PROTOCOL_FEATURES, encodeU64(bit(ProtocolFeature.REPLY_ACK))));
  assert.equal(s.handle(msg(Req.SET_OWNER)).replies, [], 'not asked for');
  const ok = s.handle(msg(Req.SET_OWNER, undefined, { needReply: true }));
  assert.is(replyU64(ok.replies[0], Req.SET_OWNER), 0n);
  const bad = s.handle(msg(Req.SET_LOG_FD, undefined, { needReply: true, fds: [41] }));
  assert.is(bad.drop, undefined, 'an unsupported request fails, it does not drop');
  assert.is(replyU64(bad.replies[0], Req.SET_LOG_FD), 1n);
  assert.equal(bad.closeFds, [41]);
  assert.match(logs.join('\n'), /unsupported request SET_LOG_FD/);
  // a GET_ request answers with its value, never with an extra ack
  assert.is(s.handle(msg(Req.GET_QUEUE_NUM, undefined, { needReply: true })).replies.length, 1);
});

test('with protocol features a ring starts only when enabled, sized, addressed, kicked and memory is mapped — in any order', () => {
  const { s, dev } = make();
  s.handle(msg(Req.SET_FEATURES, encodeU64(FEATURES)));
  s.handle(msg(Req.SET_VRING_NUM, encodeVringState({ index: 1, num: 128 })));
  s.handle(msg(Req.SET_VRING_ADDR, addr(1)));
  s.handle(msg(Req.SET_VRING_KICK, encodeVringFile(1, false), { fds: [50] }));
  assert.not.ok(dev.actions.includes('start 1'), 'not enabled and no memory yet');
  s.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 1, num: 1 })));
  assert.not.ok(dev.actions.includes('start 1'), 'no memory yet');
  assert.is(s.handle(msg(Req.SET_MEM_TABLE, encodeMemTable([region]), { fds: [60] })).drop, undefined);
  assert.ok(dev.actions.includes('start 1'), 'the memory table was the last condition');
  assert.ok(s.ring(1).started);
  assert.not.ok(s.ring(0).started, 'queue 0 was never set up');
  assert.equal(dev.fdsOwned.sort(), [50, 60]);
  // disabling stops it; GET_VRING_BASE stops a running ring and returns the device's base
  s.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 1, num: 0 })));
  assert.is(dev.actions.at(-1), 'stop 1');
  s.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 1, num: 1 })));
  assert.is(dev.actions.at(-1), 'start 1');
  const base = s.handle(msg(Req.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 })));
  assert.is(base.replies[0].readUInt32LE(HEADER_SIZE + 4), 7);
  assert.equal(
    s.ring(1),
    { num: 128, addrSet: true, kick: 'unset', enabled: true, started: false },
    'stopped until the next kick fd',
  );
  s.handle(msg(Req.SET_VRING_KICK, encodeVringFile(1, false), { fds: [51] }));
  assert.is(dev.actions.at(-1), 'start 1', 'a new kick fd restarts it');
});

test('without protocol features the kick fd enables the ring (vhost-user.rst, ring states); changing its size stops it first', () => {
  const { s, dev } = make(1);
  s.handle(msg(Req.SET_FEATURES, encodeU64(bit(32))));
  s.handle(msg(Req.ADD_MEM_REG, encodeSingleRegion(region), { fds: [60] }));
  s.handle(msg(Req.SET_VRING_NUM, encodeVringState({ index: 0, num: 64 })));
  s.handle(msg(Req.SET_VRING_ADDR, addr(0)));
  s.handle(msg(Req.SET_VRING_KICK, encodeVringFile(0, false), { fds: [50] }));
  assert.is(dev.actions.at(-1), 'start 0');
  s.handle(msg(Req.SET_VRING_NUM, encodeVringState({ index: 0, num: 128 })));
  assert.equal(dev.actions.slice(-2), ['stop 0', 'vring 0 num']);
  assert.not.ok(s.ring(0).started);
});

test('RESET_DEVICE resets the device and forgets every ring, the memory and the features', () => {
  const { s, dev } = make(1);
  s.handle(msg(Req.SET_FEATURES, encodeU64(bit(32))));
  s.handle(msg(Req.SET_MEM_TABLE, encodeMemTable([region]), { fds: [60] }));
  s.handle(msg(Req.SET_VRING_NUM, encodeVringState({ index: 0, num: 64 })));
  s.handle(msg(Req.RESET_DEVICE));
  assert.is(dev.actions.at(-1), 'reset');
  assert.equal(s.ring(0), { num: undefined, addrSet: false, kick: 'unset', enabled: false, started: false });
  assert.is(s.mappedRegions, 0);
  assert.is(s.negotiatedFeatures, 0n);
});

test('bad messages drop the front-end with a reason, and fds nobody took are handed back to close', () => {
  const cases: Array<[string, Message, RegExp, number[]]> = [
    [
      'queue out of range',
      msg(Req.SET_VRING_NUM, encodeVringState({ index: 2, num: 64 })),
      /names queue 2; the device has 2/,
      [],
    ],
    [
      'ring size not a power of 2',
      msg(Req.SET_VRING_NUM, encodeVringState({ index: 0, num: 100 })),
      /must be a power of 2 up to 256/,
      [],
    ],
    [
      'ring size above the limit',
      msg(Req.SET_VRING_NUM, encodeVringState({ index: 0, num: 512 })),
      /power of 2 up to 256/,
      [],
    ],
    ['base beyond 16 bits', msg(Req.SET_VRING_BASE, encodeVringState({ index: 0, num: 0x10000 })), /16-bit/, []],
    [
      'fds on a message that takes none',
      msg(Req.GET_FEATURES, undefined, { fds: [70, 71] }),
      /carries 2 unexpected fds/,
      [70, 71],
    ],
    ['a kick without its fd', msg(Req.SET_VRING_KICK, encodeVringFile(0, false)), /carries 0 fds, expected 1/, []],
    [
      'memory table with fewer fds than regions',
      msg(Req.SET_MEM_TABLE, encodeMemTable([region, region]), { fds: [72] }),
      /2 regions but 1 fds/,
      [72],
    ],
    ['short payload', msg(Req.SET_FEATURES, Buffer.alloc(4)), /payload is 4 bytes, expected 8/, []],
    ['enable with 2', msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 2 })), /must be 0 or 1/, []],
  ];
  for (const [name, m, re, fds] of cases) {
    const { s } = make();
    const r = s.handle(m);
    assert.match(r.drop ?? '(not dropped)', re, name);
    assert.equal(r.closeFds.sort(), fds, `${name}: fds given back`);
  }
});

test('memory slots are bounded, and a failing device action drops the front-end naming the request', () => {
  const { s, dev } = make();
  s.handle(msg(Req.ADD_MEM_REG, encodeSingleRegion(region), { fds: [80] }));
  s.handle(msg(Req.ADD_MEM_REG, encodeSingleRegion(region), { fds: [81] }));
  const third = s.handle(msg(Req.ADD_MEM_REG, encodeSingleRegion(region), { fds: [82] }));
  assert.match(third.drop ?? '', /beyond 2 slots/);
  assert.equal(third.closeFds, [82]);
  const { s: s2, dev: dev2 } = make();
  dev2.failNext = 'not an eventfd';
  const r = s2.handle(msg(Req.SET_VRING_CALL, encodeVringFile(0, false), { fds: [90] }));
  assert.match(r.drop ?? '', /SET_VRING_CALL: not an eventfd/);
  assert.equal(r.closeFds, [], 'the device owns the fd it was given');
  void dev;
});

test.run();
