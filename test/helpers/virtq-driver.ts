// TEST-ONLY: the driver side of virtio-blk over vhost-user, in TypeScript. Guest memory is a memfd
// we map MAP_SHARED; the back-end maps the same fd. Split virtqueues (virtio 1.x, 2.7) laid out
// by hand so tests can post good requests AND craft what a buggy or hostile driver would:
// loops, bad addresses, wrong directions, bogus heads, avail index jumps, broken indirect tables.
//
// Addresses: descriptors carry guest physical addresses (gpa = GPA_BASE + offset in the memfd);
// ring addresses in SET_VRING_ADDR are front-end virtual addresses (uva = our mapping + offset),
// as QEMU sends them. GPA_BASE is deliberately not 0 so that a mix-up cannot go unnoticed.
import { native } from '../../src/lib/native.js';
import { VhostUserFrontend, type FrontendMemRegion } from '../../src/lib/client/vhost-user-frontend.js';
import { ProtocolFeature } from '../../src/lib/proto/vhost-user.js';
import {
  VIRTIO_BLK_F,
  VIRTIO_BLK_T,
  VIRTIO_F,
  bit,
  decodeBlkConfig,
  type DecodedBlkConfig,
} from '../../src/lib/proto/virtio-blk.js';

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
export const AVAIL_F_NO_INTERRUPT = 1;
export const GPA_BASE = 0x1_0000_0000n;
export const SECTOR = 512;

/** A shared-memory "guest RAM" with a bump allocator. */
export class GuestMemory {
  readonly fd: number;
  readonly size: number;
  readonly buf: Buffer;
  readonly uvaBase: bigint;
  readonly gpaBase: bigint;
  private next = 0;

  constructor(size: number, gpaBase = GPA_BASE) {
    const n = native();
    this.size = size;
    this.gpaBase = gpaBase;
    this.fd = n.memfdCreate('stor-test-guest', size);
    this.buf = n.mmapShared(this.fd, size, 0);
    this.uvaBase = n.bufferAddress(this.buf);
  }

  /** Reserves len bytes aligned to align; returns the offset in the memfd. Memory starts zeroed. */
  alloc(len: number, align = 16): number {
    const off = Math.ceil(this.next / align) * align;
    if (off + len > this.size) throw new Error(`guest memory exhausted: ${len} bytes wanted at ${off} of ${this.size}`);
    this.next = off + len;
    return off;
  }

  /** The allocator's position, to rewind to once what was allocated after it is no longer in use. */
  position(): number {
    return this.next;
  }
  rewind(pos: number): void {
    if (pos > this.next) throw new Error('rewind forward');
    this.next = pos;
  }

  gpa(off: number): bigint {
    return this.gpaBase + BigInt(off);
  }
  uva(off: number): bigint {
    return this.uvaBase + BigInt(off);
  }
  /** The region for SET_MEM_TABLE; the fd is dup'ed by the kernel when sent, ours stays valid. */
  region(): FrontendMemRegion {
    return { guestAddr: this.gpaBase, size: BigInt(this.size), userAddr: this.uvaBase, mmapOffset: 0n, fd: this.fd };
  }
  close(): void {
    native().close(this.fd);
  }
}

export interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}
export interface Used {
  id: number;
  len: number;
}
/** One buffer of a chain: device-writable or device-readable. */
export interface Seg {
  off?: number;
  addr?: bigint;
  len: number;
  write: boolean;
}

export interface BlkRequest {
  type: number;
  sector: bigint | number;
  /** device-readable payload after the header (write data, discard segment). */
  out?: Buffer;
  /** bytes of device-writable data before the status byte (read data, GET_ID). */
  inLen?: number;
  /** post through one indirect descriptor instead of a direct chain. */
  indirect?: boolean;
}

export interface Posted {
  head: number;
  descs: number[];
  hdrOff: number;
  outOff: number;
  inOff: number;
  inLen: number;
  statusOff: number;
}

export interface Completion extends Posted {
  status: number;
  usedLen: number;
  data: Buffer;
}

/** A split virtqueue, driver side. */
export class Virtqueue {
  readonly index: number;
  readonly num: number;
  readonly descOff: number;
  readonly availOff: number;
  readonly usedOff: number;
  readonly kickFd: number;
  readonly callFd: number;
  private free: number[];
  availIdx = 0;
  lastUsed = 0;
  private posted = new Map<number, Posted>();

  constructor(
    readonly mem: GuestMemory,
    index: number,
    num: number,
  ) {
    this.index = index;
    this.num = num;
    this.descOff = mem.alloc(16 * num, 16);
    this.availOff = mem.alloc(6 + 2 * num, 2);
    this.usedOff = mem.alloc(6 + 8 * num, 4);
    this.free = Array.from({ length: num }, (_, i) => i);
    const n = native();
    this.kickFd = n.eventfd(0, true);
    this.callFd = n.eventfd(0, true);
  }

  writeDesc(i: number, d: Desc): void {
    const o = this.descOff + 16 * i;
    const b = this.mem.buf;
    b.writeBigUInt64LE(d.addr, o);
    b.writeUInt32LE(d.len >>> 0, o + 8);
    b.writeUInt16LE(d.flags, o + 12);
    b.writeUInt16LE(d.next, o + 14);
  }
  /** Writes a descriptor into any table (e.g. an indirect one) at byte offset tableOff. */
  writeDescAt(tableOff: number, i: number, d: Desc): void {
    const o = tableOff + 16 * i;
    const b = this.mem.buf;
    b.writeBigUInt64LE(d.addr, o);
    b.writeUInt32LE(d.len >>> 0, o + 8);
    b.writeUInt16LE(d.flags, o + 12);
    b.writeUInt16LE(d.next, o + 14);
  }

  setAvailFlags(f: number): void {
    this.mem.buf.writeUInt16LE(f, this.availOff);
  }
  /** Writes avail->idx as is (hostile tests); normal posting goes through publish(). */
  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.mem.buf.writeUInt16LE(this.availIdx, this.availOff + 2);
  }
  usedIdx(): number {
    return this.mem.buf.readUInt16LE(this.usedOff + 2);
  }
  usedElem(i: number): Used {
    const o = this.usedOff + 4 + 8 * (i % this.num);
    return { id: this.mem.buf.readUInt32LE(o), len: this.mem.buf.readUInt32LE(o + 4) };
  }

  /** Puts head in the next avail slot and publishes the new avail->idx. */
  publish(head: number): void {
    this.mem.buf.writeUInt16LE(head & 0xffff, this.availOff + 4 + 2 * (this.availIdx % this.num));
    // x86 keeps stores in order; the ring entry is visible before the index that covers it.
    this.setAvailIdx(this.availIdx + 1);
  }

  kick(): void {
    native().eventfdWrite(this.kickFd, 1);
  }

  allocDescs(n: number): number[] {
    if (n > this.free.length) throw new Error(`queue ${this.index}: ${n} descriptors wanted, ${this.free.length} free`);
    return this.free.splice(0, n);
  }

  /**
   * Posts a chain of buffers as given (any direction order, any address) and publishes it.
   * Buffers with `off` are placed in guest memory; `addr` is used verbatim (hostile tests).
   */
  postChain(segs: Seg[], opts: { indirect?: boolean; publish?: boolean } = {}): number {
    const addrOf = (s: Seg): bigint => s.addr ?? this.mem.gpa(s.off ?? 0);
    const flagsOf = (s: Seg, last: boolean, i: number): { flags: number; next: number } => ({
      flags: (s.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT),
      next: last ? 0 : i + 1,
    });
    let head: number;
    if (opts.indirect) {
      const table = this.mem.alloc(16 * segs.length, 16);
      segs.forEach((s, i) =>
        this.writeDescAt(table, i, { addr: addrOf(s), len: s.len, ...flagsOf(s, i === segs.length - 1, i) }),
      );
      [head] = this.allocDescs(1);
      this.writeDesc(head, { addr: this.mem.gpa(table), len: 16 * segs.length, flags: DESC_F_INDIRECT, next: 0 });
      this.posted.set(head, { head, descs: [head], hdrOff: -1, outOff: -1, inOff: -1, inLen: 0, statusOff: -1 });
    } else {
      const ids = this.allocDescs(segs.length);
      segs.forEach((s, i) => {
        const last = i === segs.length - 1;
        this.writeDesc(ids[i], {
          addr: addrOf(s),
          len: s.len,
          flags: (s.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT),
          next: last ? 0 : ids[i + 1],
        });
      });
      head = ids[0];
      this.posted.set(head, { head, descs: ids, hdrOff: -1, outOff: -1, inOff: -1, inLen: 0, statusOff: -1 });
    }
    if (opts.publish ?? true) this.publish(head);
    return head;
  }

  /** Posts a virtio-blk request: header, optional readable payload, optional writable data, status. */
  post(r: BlkRequest): Posted {
    const m = this.mem;
    const hdrOff = m.alloc(16, 16);
    m.buf.writeUInt32LE(r.type, hdrOff);
    m.buf.writeUInt32LE(0, hdrOff + 4);
    m.buf.writeBigUInt64LE(BigInt(r.sector), hdrOff + 8);
    const segs: Seg[] = [{ off: hdrOff, len: 16, write: false }];
    let outOff = -1,
      inOff = -1;
    if (r.out?.length) {
      outOff = m.alloc(r.out.length, 512);
      r.out.copy(m.buf, outOff);
      segs.push({ off: outOff, len: r.out.length, write: false });
    }
    const inLen = r.inLen ?? 0;
    if (inLen) {
      inOff = m.alloc(inLen, 512);
      m.buf.fill(0xee, inOff, inOff + inLen); // poison: reads must overwrite it
      segs.push({ off: inOff, len: inLen, write: true });
    }
    const statusOff = m.alloc(1, 1);
    m.buf[statusOff] = 0xff; // not a valid status: proves the device wrote it
    segs.push({ off: statusOff, len: 1, write: true });
    const head = this.postChain(segs, { indirect: r.indirect });
    const p = { ...this.posted.get(head)!, hdrOff, outOff, inOff, inLen, statusOff };
    this.posted.set(head, p);
    return p;
  }

  /**
   * Waits until `count` more used entries have appeared (async: lets the event loop run, so the
   * server's log output is still collected). Throws after timeoutMs.
   */
  async waitUsed(count: number, timeoutMs = 5000): Promise<Used[]> {
    const deadline = Date.now() + timeoutMs;
    const n = native();
    const target = (this.lastUsed + count) & 0xffff;
    while (((this.usedIdx() - this.lastUsed) & 0xffff) < count) {
      if (Date.now() > deadline) {
        throw new Error(
          `queue ${this.index}: ${(this.usedIdx() - this.lastUsed) & 0xffff} of ${count} completions within ${timeoutMs} ms (used idx ${this.usedIdx()}, want ${target})`,
        );
      }
      if (n.waitReadable(this.callFd, 2)) n.eventfdRead(this.callFd);
      await new Promise((r) => setImmediate(r));
    }
    const out: Used[] = [];
    for (let i = 0; i < count; i++) out.push(this.usedElem(this.lastUsed + i));
    this.lastUsed = (this.lastUsed + count) & 0xffff;
    return out;
  }

  /** Turns used entries into completions of posted requests and frees their descriptors. */
  complete(used: Used[]): Completion[] {
    return used.map((u) => {
      const p = this.posted.get(u.id);
      if (!p) throw new Error(`queue ${this.index}: used ring names head ${u.id}, which is not in flight`);
      this.posted.delete(u.id);
      this.free.push(...p.descs);
      const status = p.statusOff >= 0 ? this.mem.buf[p.statusOff] : -1;
      const data = p.inOff >= 0 ? Buffer.from(this.mem.buf.subarray(p.inOff, p.inOff + p.inLen)) : Buffer.alloc(0);
      return { ...p, status, usedLen: u.len, data };
    });
  }

  /** Posts one request, kicks, waits for it. */
  async run(r: BlkRequest, timeoutMs = 5000): Promise<Completion> {
    const p = this.post(r);
    this.kick();
    const [c] = this.complete(await this.waitUsed(1, timeoutMs));
    if (c.head !== p.head) throw new Error(`queue ${this.index}: completion for head ${c.head}, expected ${p.head}`);
    return c;
  }

  close(): void {
    native().close(this.kickFd);
    native().close(this.callFd);
  }
}

/** Features a test driver asks for: the basics, indirect descriptors, and the blk request types. */
export const DRIVER_FEATURES =
  bit(VIRTIO_F.VERSION_1) |
  bit(VIRTIO_F.RING_INDIRECT_DESC) |
  bit(VIRTIO_BLK_F.SEG_MAX) |
  bit(VIRTIO_BLK_F.BLK_SIZE) |
  bit(VIRTIO_BLK_F.FLUSH) |
  bit(VIRTIO_BLK_F.MQ) |
  bit(VIRTIO_BLK_F.DISCARD) |
  bit(VIRTIO_BLK_F.WRITE_ZEROES);
export const DRIVER_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG);

export interface BlkSessionOptions {
  queues?: number;
  queueSize?: number;
  memSize?: number;
  timeoutMs?: number;
  /** Stop after memory is set (before the rings), so tests can set rings up by hand. */
  noRings?: boolean;
  /** Virtio features the driver asks for (default DRIVER_FEATURES). */
  features?: bigint;
}

/** A front-end + guest memory + started virtqueues: a whole virtio-blk driver for tests. */
export class BlkSession {
  readonly queues: Virtqueue[] = [];
  config!: DecodedBlkConfig;
  features = 0n;

  private constructor(
    readonly fe: VhostUserFrontend,
    readonly mem: GuestMemory,
  ) {}

  static open(socket: string, o: BlkSessionOptions = {}): BlkSession {
    const fe = VhostUserFrontend.connect(socket, { timeoutMs: o.timeoutMs ?? 5000 });
    const mem = new GuestMemory(o.memSize ?? 16 << 20);
    const s = new BlkSession(fe, mem);
    try {
      const neg = fe.negotiate({ features: o.features ?? DRIVER_FEATURES, protocolFeatures: DRIVER_PROTOCOL_FEATURES });
      s.features = neg.features;
      const nq = o.queues ?? 1;
      const max = fe.getQueueNum();
      if (nq > max) throw new Error(`back-end has ${max} queues, ${nq} wanted`);
      s.config = decodeBlkConfig(fe.getConfig(0, 60));
      fe.setMemTable([mem.region()]);
      if (!o.noRings) for (let i = 0; i < nq; i++) s.startQueue(i, o.queueSize ?? 64);
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  /** Lays out and hands over ring i: num, base 0, addresses, kick, call, enable. */
  startQueue(i: number, num: number, addr?: { desc?: bigint; avail?: bigint; used?: bigint }): Virtqueue {
    const q = new Virtqueue(this.mem, i, num);
    this.queues[i] = q;
    this.fe.setVringNum(i, num);
    this.fe.setVringBase(i, 0);
    this.fe.setVringAddr({
      index: i,
      desc: addr?.desc ?? this.mem.uva(q.descOff),
      avail: addr?.avail ?? this.mem.uva(q.availOff),
      used: addr?.used ?? this.mem.uva(q.usedOff),
    });
    this.fe.setVringCall(i, q.callFd);
    this.fe.setVringKick(i, q.kickFd);
    this.fe.setVringEnable(i, true);
    return q;
  }

  get q0(): Virtqueue {
    return this.queues[0];
  }

  async read(sector: number | bigint, len: number, q = 0): Promise<Completion> {
    return this.queues[q].run({ type: VIRTIO_BLK_T.IN, sector, inLen: len });
  }
  async write(sector: number | bigint, data: Buffer, q = 0): Promise<Completion> {
    return this.queues[q].run({ type: VIRTIO_BLK_T.OUT, sector, out: data });
  }

  close(): void {
    this.fe.close();
    for (const q of this.queues) q?.close();
    this.mem.close();
  }
}

/** The 16-byte discard / write-zeroes segment. */
export function dwzSegment(sector: bigint | number, numSectors: number, flags = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(sector), 0);
  b.writeUInt32LE(numSectors >>> 0, 8);
  b.writeUInt32LE(flags >>> 0, 12);
  return b;
}
