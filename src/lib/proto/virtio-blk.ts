// virtio-blk (virtio 1.x, section 5.2): feature bits and the device configuration space.
// Shared by every frontend that presents virtio-blk (vhost-user-blk now, VDUSE later).

export const VIRTIO_BLK_F = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
} as const;

export const VIRTIO_F = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
} as const;

export const VIRTIO_BLK_T = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13 } as const;
export const VIRTIO_BLK_S = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

export const bit = (n: number): bigint => 1n << BigInt(n);
export function hasBit(features: bigint, n: number): boolean {
  return (features & bit(n)) !== 0n;
}

/** Names of the set bits, for logs and `stor info`. */
export function featureNames(features: bigint): string[] {
  const names: string[] = [];
  for (const [k, v] of Object.entries(VIRTIO_BLK_F)) if (hasBit(features, v)) names.push(k);
  for (const [k, v] of Object.entries(VIRTIO_F)) if (hasBit(features, v)) names.push(k);
  return names;
}

export interface BlkConfig {
  capacityBytes: number;
  blockSize: number;
  segMax: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  discardSectorAlignment: number;
  writeZeroesMayUnmap: boolean;
  /** TOPOLOGY: smallest and optimal I/O size, in logical blocks. */
  minIoBlocks?: number;
  optIoBlocks?: number;
}

/** Size of the config space we serve: through the secure-erase fields (virtio 1.2). */
export const BLK_CONFIG_SIZE = 72;

export const BLK_CONFIG_OFFSET = {
  capacity: 0,
  sizeMax: 8,
  segMax: 12,
  geometry: 16,
  blkSize: 20,
  topology: 24,
  writeback: 32,
  numQueues: 34,
  maxDiscardSectors: 36,
  maxDiscardSeg: 40,
  discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48,
  maxWriteZeroesSeg: 52,
  writeZeroesMayUnmap: 56,
} as const;

export function encodeBlkConfig(c: BlkConfig): Buffer {
  const b = Buffer.alloc(BLK_CONFIG_SIZE);
  const o = BLK_CONFIG_OFFSET;
  b.writeBigUInt64LE(BigInt(Math.floor(c.capacityBytes / 512)), o.capacity);
  b.writeUInt32LE(c.segMax, o.segMax);
  b.writeUInt32LE(c.blockSize, o.blkSize);
  b.writeUInt16LE(c.minIoBlocks ?? 1, o.topology + 2);
  b.writeUInt32LE(c.optIoBlocks ?? 1, o.topology + 4);
  b.writeUInt16LE(c.numQueues, o.numQueues);
  b.writeUInt32LE(c.maxDiscardSectors, o.maxDiscardSectors);
  b.writeUInt32LE(1, o.maxDiscardSeg);
  b.writeUInt32LE(c.discardSectorAlignment, o.discardSectorAlignment);
  b.writeUInt32LE(c.maxWriteZeroesSectors, o.maxWriteZeroesSectors);
  b.writeUInt32LE(1, o.maxWriteZeroesSeg);
  b.writeUInt8(c.writeZeroesMayUnmap ? 1 : 0, o.writeZeroesMayUnmap);
  return b;
}

export interface DecodedBlkConfig {
  minIoSize: number;
  optIoSize: number;
  capacitySectors: bigint;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: boolean;
}

/** Reads a config space (as a front-end does); fields past the end of b read as zero. */
export function decodeBlkConfig(b: Buffer): DecodedBlkConfig {
  const full = Buffer.alloc(Math.max(BLK_CONFIG_SIZE, b.length));
  b.copy(full);
  const o = BLK_CONFIG_OFFSET;
  return {
    minIoSize: full.readUInt16LE(o.topology + 2),
    optIoSize: full.readUInt32LE(o.topology + 4),
    capacitySectors: full.readBigUInt64LE(o.capacity),
    sizeMax: full.readUInt32LE(o.sizeMax),
    segMax: full.readUInt32LE(o.segMax),
    blkSize: full.readUInt32LE(o.blkSize),
    numQueues: full.readUInt16LE(o.numQueues),
    maxDiscardSectors: full.readUInt32LE(o.maxDiscardSectors),
    maxDiscardSeg: full.readUInt32LE(o.maxDiscardSeg),
    discardSectorAlignment: full.readUInt32LE(o.discardSectorAlignment),
    maxWriteZeroesSectors: full.readUInt32LE(o.maxWriteZeroesSectors),
    maxWriteZeroesSeg: full.readUInt32LE(o.maxWriteZeroesSeg),
    writeZeroesMayUnmap: full.readUInt8(o.writeZeroesMayUnmap) !== 0,
  };
}
