// The vhost-user wire format (QEMU docs/interop/vhost-user.rst): a 12-byte header
// {request u32, flags u32, size u32} then `size` bytes of payload, native byte order (little-endian
// on every host stor runs on); file descriptors ride in SCM_RIGHTS with the header.
// Pure functions only: encoding and decoding, with every size checked.

export const HEADER_SIZE = 12;
/** Larger than any message the protocol defines; anything bigger is a broken or hostile peer. */
export const MAX_PAYLOAD = 4096;
export const VERSION = 0x1;
export const FLAG_REPLY = 1 << 2;
export const FLAG_NEED_REPLY = 1 << 3;
/** Memory table regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_TABLE_REGIONS = 8;
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 1 << 8;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

const REQ_NAMES = new Map<number, string>(Object.entries(Req).map(([k, v]) => [v, k]));
export function reqName(r: number): string {
  return REQ_NAMES.get(r) ?? `UNKNOWN(${r})`;
}

/** VHOST_USER_F_PROTOCOL_FEATURES: the virtio feature bit that gates protocol features. */
export const F_PROTOCOL_FEATURES = 30;

export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(b: Buffer): Header {
  if (b.length < HEADER_SIZE) throw new ProtocolError(`short header: ${b.length} bytes`);
  const h = { request: b.readUInt32LE(0), flags: b.readUInt32LE(4), size: b.readUInt32LE(8) };
  if ((h.flags & 0x3) !== VERSION)
    throw new ProtocolError(`unsupported protocol version ${h.flags & 0x3} in ${reqName(h.request)}`);
  if (h.size > MAX_PAYLOAD)
    throw new ProtocolError(`${reqName(h.request)} payload of ${h.size} bytes exceeds ${MAX_PAYLOAD}`);
  return h;
}

export function encodeMessage(request: number, payload: Buffer = Buffer.alloc(0), flags = VERSION): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + payload.length);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(payload.length, 8);
  payload.copy(b, HEADER_SIZE);
  return b;
}

export function encodeReply(request: number, payload: Buffer): Buffer {
  return encodeMessage(request, payload, VERSION | FLAG_REPLY);
}

function expectSize(what: string, p: Buffer, size: number): void {
  if (p.length !== size) throw new ProtocolError(`${what} payload is ${p.length} bytes, expected ${size}`);
}

export function encodeU64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}
export function decodeU64(what: string, p: Buffer): bigint {
  expectSize(what, p, 8);
  return p.readBigUInt64LE(0);
}

export interface VringState {
  index: number;
  num: number;
}
export function encodeVringState(s: VringState): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(s.index, 0);
  b.writeUInt32LE(s.num, 4);
  return b;
}
export function decodeVringState(what: string, p: Buffer): VringState {
  expectSize(what, p, 8);
  return { index: p.readUInt32LE(0), num: p.readUInt32LE(4) };
}

/** The inflight description of GET_INFLIGHT_FD / SET_INFLIGHT_FD: u64 mmap size, u64 mmap offset, u16 queues,
 *  u16 queue size (QEMU sends and expects the 24 bytes of its padded struct; 20 are meaningful). */
export interface InflightDescription {
  mmapSize: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}
export const INFLIGHT_SIZE = 24;
export function decodeInflight(what: string, p: Buffer): InflightDescription {
  if (p.length < 20 || p.length > INFLIGHT_SIZE)
    throw new ProtocolError(`${what} payload is ${p.length} bytes, expected 20 to ${INFLIGHT_SIZE}`);
  const size = p.readBigUInt64LE(0),
    offset = p.readBigUInt64LE(8);
  if (size > BigInt(Number.MAX_SAFE_INTEGER) || offset > BigInt(Number.MAX_SAFE_INTEGER))
    throw new ProtocolError(`${what}: mmap size or offset out of range`);
  return {
    mmapSize: Number(size),
    mmapOffset: Number(offset),
    numQueues: p.readUInt16LE(16),
    queueSize: p.readUInt16LE(18),
  };
}
export function encodeInflight(d: InflightDescription): Buffer {
  const b = Buffer.alloc(INFLIGHT_SIZE);
  b.writeBigUInt64LE(BigInt(d.mmapSize), 0);
  b.writeBigUInt64LE(BigInt(d.mmapOffset), 8);
  b.writeUInt16LE(d.numQueues, 16);
  b.writeUInt16LE(d.queueSize, 18);
  return b;
}

export interface VringAddr {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}
export const VRING_ADDR_SIZE = 40;
export function encodeVringAddr(a: VringAddr): Buffer {
  const b = Buffer.alloc(VRING_ADDR_SIZE);
  b.writeUInt32LE(a.index, 0);
  b.writeUInt32LE(a.flags, 4);
  b.writeBigUInt64LE(a.desc, 8);
  b.writeBigUInt64LE(a.used, 16);
  b.writeBigUInt64LE(a.avail, 24);
  b.writeBigUInt64LE(a.log, 32);
  return b;
}
export function decodeVringAddr(p: Buffer): VringAddr {
  expectSize('SET_VRING_ADDR', p, VRING_ADDR_SIZE);
  return {
    index: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    desc: p.readBigUInt64LE(8),
    used: p.readBigUInt64LE(16),
    avail: p.readBigUInt64LE(24),
    log: p.readBigUInt64LE(32),
  };
}

/**
 * One entry of a front-end's memory table: guest physical range → where it is mapped in the
 * front-end, and at which offset of its fd.
 */
export interface GuestRegion {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}
const REGION_SIZE = 32;

function readRegion(p: Buffer, off: number): GuestRegion {
  return {
    guestAddr: p.readBigUInt64LE(off),
    size: p.readBigUInt64LE(off + 8),
    userAddr: p.readBigUInt64LE(off + 16),
    mmapOffset: p.readBigUInt64LE(off + 24),
  };
}
function writeRegion(b: Buffer, off: number, r: GuestRegion): void {
  b.writeBigUInt64LE(r.guestAddr, off);
  b.writeBigUInt64LE(r.size, off + 8);
  b.writeBigUInt64LE(r.userAddr, off + 16);
  b.writeBigUInt64LE(r.mmapOffset, off + 24);
}

/** SET_MEM_TABLE: {u32 nregions, u32 padding, regions[]}. QEMU sends the fixed 8-slot array. */
export function decodeMemTable(p: Buffer): GuestRegion[] {
  if (p.length < 8) throw new ProtocolError(`SET_MEM_TABLE payload is ${p.length} bytes`);
  const n = p.readUInt32LE(0);
  if (n > MAX_MEM_TABLE_REGIONS)
    throw new ProtocolError(`SET_MEM_TABLE has ${n} regions, at most ${MAX_MEM_TABLE_REGIONS}`);
  if (p.length < 8 + n * REGION_SIZE)
    throw new ProtocolError(`SET_MEM_TABLE payload of ${p.length} bytes cannot hold ${n} regions`);
  const regions: GuestRegion[] = [];
  for (let i = 0; i < n; i++) regions.push(readRegion(p, 8 + i * REGION_SIZE));
  return regions;
}
export function encodeMemTable(regions: GuestRegion[]): Buffer {
  const b = Buffer.alloc(8 + MAX_MEM_TABLE_REGIONS * REGION_SIZE);
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => writeRegion(b, 8 + i * REGION_SIZE, r));
  return b;
}

/** ADD_MEM_REG / REM_MEM_REG: {u64 padding, region}. */
export function decodeSingleRegion(what: string, p: Buffer): GuestRegion {
  expectSize(what, p, 8 + REGION_SIZE);
  return readRegion(p, 8);
}
export function encodeSingleRegion(r: GuestRegion): Buffer {
  const b = Buffer.alloc(8 + REGION_SIZE);
  writeRegion(b, 8, r);
  return b;
}

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  data: Buffer;
}
/** The virtio config space is at most 256 bytes. */
export const MAX_CONFIG_SIZE = 256;
export function decodeConfig(what: string, p: Buffer): ConfigAccess {
  if (p.length < 12) throw new ProtocolError(`${what} payload is ${p.length} bytes`);
  const a = { offset: p.readUInt32LE(0), size: p.readUInt32LE(4), flags: p.readUInt32LE(8), data: p.subarray(12) };
  if (a.size > MAX_CONFIG_SIZE || a.offset > MAX_CONFIG_SIZE || a.offset + a.size > MAX_CONFIG_SIZE) {
    throw new ProtocolError(`${what} of ${a.size} bytes at offset ${a.offset} is outside the config space`);
  }
  if (a.data.length !== a.size) throw new ProtocolError(`${what} says ${a.size} bytes but carries ${a.data.length}`);
  return a;
}
export function encodeConfig(a: ConfigAccess): Buffer {
  const b = Buffer.alloc(12 + a.size);
  b.writeUInt32LE(a.offset, 0);
  b.writeUInt32LE(a.size, 4);
  b.writeUInt32LE(a.flags, 8);
  a.data.copy(b, 12, 0, a.size);
  return b;
}

/** The u64 of SET_VRING_KICK/CALL/ERR: the ring index, and whether an fd came with it. */
export function decodeVringFile(what: string, p: Buffer): { index: number; noFd: boolean } {
  const v = decodeU64(what, p);
  if (v & ~BigInt(VRING_IDX_MASK | VRING_NOFD_MASK))
    throw new ProtocolError(`${what} has unknown bits set: 0x${v.toString(16)}`);
  return { index: Number(v & BigInt(VRING_IDX_MASK)), noFd: (v & BigInt(VRING_NOFD_MASK)) !== 0n };
}

/** The u64 of SET_VRING_KICK/CALL/ERR, as a front-end sends it (noFd: polling / no notifier). */
export function encodeVringFile(index: number, noFd: boolean): Buffer {
  if (!Number.isInteger(index) || index < 0 || index > VRING_IDX_MASK)
    throw new ProtocolError(`vring index ${index} does not fit in ${VRING_IDX_MASK + 1} rings`);
  return encodeU64(BigInt(index) | (noFd ? BigInt(VRING_NOFD_MASK) : 0n));
}
