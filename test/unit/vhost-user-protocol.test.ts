// The vhost-user codec (src/lib/proto/vhost-user.ts): round trips, and every size check that
// stands between a hostile front-end and the server's state.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  MAX_PAYLOAD,
  ProtocolError,
  Req,
  VERSION,
  VRING_ADDR_SIZE,
  decodeConfig,
  decodeHeader,
  decodeMemTable,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeMemTable,
  encodeMessage,
  encodeReply,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  reqName,
  type GuestRegion,
} from '../../src/lib/proto/vhost-user.js';

const t = suite('vhost-user protocol codec');

function throwsProtocol(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, ProtocolError);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected a ProtocolError matching ${re}`);
}

t('encodeMessage lays out request, flags, size little-endian then the payload', () => {
  const m = encodeMessage(Req.SET_FEATURES, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]), VERSION | FLAG_NEED_REPLY);
  assert.is(m.length, HEADER_SIZE + 8);
  assert.equal([...m.subarray(0, 12)], [2, 0, 0, 0, 0x09, 0, 0, 0, 8, 0, 0, 0]);
  assert.equal([...m.subarray(12)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(decodeHeader(m), { request: Req.SET_FEATURES, flags: VERSION | FLAG_NEED_REPLY, size: 8 });
});

t('encodeReply sets the REPLY flag and version 1', () => {
  const h = decodeHeader(encodeReply(Req.GET_FEATURES, encodeU64(5n)));
  assert.is(h.flags, VERSION | FLAG_REPLY);
  assert.is(h.size, 8);
});

t('decodeHeader rejects a short header', () => {
  throwsProtocol(() => decodeHeader(Buffer.alloc(11)), /short header: 11 bytes/);
  throwsProtocol(() => decodeHeader(Buffer.alloc(0)), /short header: 0 bytes/);
});

t('decodeHeader rejects a payload size over MAX_PAYLOAD and accepts exactly MAX_PAYLOAD', () => {
  const h = encodeMessage(Req.SET_MEM_TABLE);
  h.writeUInt32LE(MAX_PAYLOAD, 8);
  assert.is(decodeHeader(h).size, MAX_PAYLOAD);
  h.writeUInt32LE(MAX_PAYLOAD + 1, 8);
  throwsProtocol(() => decodeHeader(h), /SET_MEM_TABLE payload of 4097 bytes exceeds 4096/);
  h.writeUInt32LE(0xffffffff, 8);
  throwsProtocol(() => decodeHeader(h), /exceeds/);
});

t('decodeHeader rejects versions other than 1 (including 0)', () => {
  for (const flags of [0, 2, 3, FLAG_REPLY]) {
    const h = encodeMessage(Req.GET_FEATURES, Buffer.alloc(0), flags);
    throwsProtocol(() => decodeHeader(h), /unsupported protocol version/);
  }
});

t('reqName names known requests and marks unknown ones', () => {
  assert.is(reqName(Req.GET_CONFIG), 'GET_CONFIG');
  assert.is(reqName(1000), 'UNKNOWN(1000)');
  assert.is(reqName(0), 'UNKNOWN(0)');
});

t('u64 round-trips, including values above 2^53, and rejects 7 and 9 bytes', () => {
  for (const v of [0n, 1n, 0x1234_5678_9abc_def0n, (1n << 64n) - 1n]) assert.is(decodeU64('x', encodeU64(v)), v);
  throwsProtocol(() => decodeU64('SET_FEATURES', Buffer.alloc(7)), /SET_FEATURES payload is 7 bytes, expected 8/);
  throwsProtocol(() => decodeU64('SET_FEATURES', Buffer.alloc(9)), /9 bytes, expected 8/);
});

t('vring state round-trips and rejects wrong sizes', () => {
  const s = { index: 3, num: 0xffff };
  assert.equal(decodeVringState('x', encodeVringState(s)), s);
  throwsProtocol(() => decodeVringState('SET_VRING_NUM', Buffer.alloc(4)), /4 bytes, expected 8/);
  throwsProtocol(() => decodeVringState('SET_VRING_NUM', Buffer.alloc(16)), /16 bytes, expected 8/);
});

t('vring addr round-trips all five fields and rejects wrong sizes', () => {
  const a = {
    index: 1,
    flags: 1,
    desc: 0x7f00_0000_1000n,
    used: 0x7f00_0000_3000n,
    avail: 0x7f00_0000_2000n,
    log: (1n << 64n) - 1n,
  };
  const b = encodeVringAddr(a);
  assert.is(b.length, VRING_ADDR_SIZE);
  assert.equal(decodeVringAddr(b), a);
  // field order on the wire: index, flags, desc, used, avail, log
  assert.is(b.readBigUInt64LE(16), a.used);
  assert.is(b.readBigUInt64LE(24), a.avail);
  throwsProtocol(() => decodeVringAddr(Buffer.alloc(39)), /39 bytes, expected 40/);
  throwsProtocol(() => decodeVringAddr(Buffer.alloc(41)), /41 bytes, expected 40/);
});

const region = (i: number): GuestRegion => ({
  guestAddr: BigInt(i) << 32n,
  size: 0x1000n * BigInt(i + 1),
  userAddr: 0x7f00_0000_0000n + BigInt(i),
  mmapOffset: BigInt(i * 4096),
});

t('mem table round-trips 0, 1 and 8 regions in the fixed 8-slot layout', () => {
  for (const n of [0, 1, MAX_MEM_TABLE_REGIONS]) {
    const rs = Array.from({ length: n }, (_, i) => region(i));
    const b = encodeMemTable(rs);
    assert.is(b.length, 8 + 8 * 32);
    assert.equal(decodeMemTable(b), rs);
  }
});

t('mem table rejects more than 8 regions, a payload too short for its count, and a truncated header', () => {
  const b = encodeMemTable([region(0)]);
  b.writeUInt32LE(9, 0);
  throwsProtocol(() => decodeMemTable(b), /9 regions, at most 8/);
  b.writeUInt32LE(0xffffffff, 0);
  throwsProtocol(() => decodeMemTable(b), /regions, at most 8/);
  const short = Buffer.alloc(8 + 32 * 2 - 1);
  short.writeUInt32LE(2, 0);
  throwsProtocol(() => decodeMemTable(short), /cannot hold 2 regions/);
  throwsProtocol(() => decodeMemTable(Buffer.alloc(7)), /7 bytes/);
});

t('single region (ADD/REM_MEM_REG) round-trips with its 8-byte padding and rejects wrong sizes', () => {
  const r = region(5);
  const b = encodeSingleRegion(r);
  assert.is(b.length, 40);
  assert.is(b.readBigUInt64LE(0), 0n);
  assert.equal(decodeSingleRegion('ADD_MEM_REG', b), r);
  throwsProtocol(() => decodeSingleRegion('ADD_MEM_REG', Buffer.alloc(32)), /32 bytes, expected 40/);
  throwsProtocol(() => decodeSingleRegion('ADD_MEM_REG', Buffer.alloc(8 + 8 * 32 + 8)), /expected 40/);
});

t('config round-trips and its data length must match size', () => {
  const a = { offset: 8, size: 4, flags: 0, data: Buffer.from([1, 2, 3, 4]) };
  const d = decodeConfig('GET_CONFIG', encodeConfig(a));
  assert.is(d.offset, 8);
  assert.is(d.size, 4);
  assert.equal([...d.data], [1, 2, 3, 4]);
  const b = encodeConfig(a);
  throwsProtocol(() => decodeConfig('GET_CONFIG', b.subarray(0, b.length - 1)), /says 4 bytes but carries 3/);
  throwsProtocol(() => decodeConfig('GET_CONFIG', Buffer.concat([b, Buffer.alloc(1)])), /says 4 bytes but carries 5/);
  throwsProtocol(() => decodeConfig('GET_CONFIG', Buffer.alloc(11)), /11 bytes/);
});

t('config accesses must lie inside the 256-byte config space, without integer wrap-around', () => {
  const at = (offset: number, size: number): Buffer => {
    const b = Buffer.alloc(12 + Math.min(size, 300));
    b.writeUInt32LE(offset >>> 0, 0);
    b.writeUInt32LE(size >>> 0, 4);
    return b;
  };
  assert.is(decodeConfig('GET_CONFIG', at(0, MAX_CONFIG_SIZE)).size, 256);
  assert.is(decodeConfig('GET_CONFIG', at(255, 1)).offset, 255);
  assert.is(decodeConfig('GET_CONFIG', at(256, 0)).size, 0);
  throwsProtocol(() => decodeConfig('GET_CONFIG', at(0, 257)), /outside the config space/);
  throwsProtocol(() => decodeConfig('GET_CONFIG', at(255, 2)), /outside the config space/);
  throwsProtocol(() => decodeConfig('GET_CONFIG', at(257, 0)), /outside the config space/);
  // offset + size would wrap to a small number in 32-bit arithmetic
  throwsProtocol(() => decodeConfig('GET_CONFIG', at(0xffffffff, 2)), /outside the config space/);
  throwsProtocol(() => decodeConfig('GET_CONFIG', at(2, 0xffffffff)), /outside the config space/);
});

t('vring file: index in bits 0-7, NOFD in bit 8, any other bit rejected', () => {
  assert.equal(decodeVringFile('SET_VRING_KICK', encodeVringFile(0, false)), { index: 0, noFd: false });
  assert.equal(decodeVringFile('SET_VRING_KICK', encodeVringFile(255, true)), { index: 255, noFd: true });
  assert.is(encodeVringFile(3, true).readBigUInt64LE(0), 0x103n);
  throwsProtocol(() => decodeVringFile('SET_VRING_CALL', encodeU64(0x200n)), /unknown bits set: 0x200/);
  throwsProtocol(() => decodeVringFile('SET_VRING_CALL', encodeU64(1n << 63n)), /unknown bits/);
  throwsProtocol(() => decodeVringFile('SET_VRING_CALL', Buffer.alloc(4)), /4 bytes, expected 8/);
  throwsProtocol(() => encodeVringFile(256, false), /does not fit/);
  throwsProtocol(() => encodeVringFile(-1, false), /does not fit/);
});

t.run();
