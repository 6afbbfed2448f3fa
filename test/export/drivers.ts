// How the conformance checks drive an export: a DiskDriver issues block requests on a queue and
// reports the virtio-blk status each got, whatever carries it. Two drivers reach a vhost-user-blk
// socket: the TypeScript test driver (test/helpers/virtq-driver.ts: every request goes to the
// server as built, with any segment layout, so refusals are the server's) and stor's own client
// library (`open()` from src/lib: what an application sees; it refuses some requests itself, so
// checks about the server's refusals skip it). The VDUSE and ublk exports bring their own driver
// behind the same interface (guest.ts: the kernel block device in the test guest).
import { formatSpec, open, type BlockDevice } from '../../src/lib/index.js';
import { VIRTIO_BLK_F, VIRTIO_BLK_S, VIRTIO_BLK_T, bit, hasBit } from '../../src/lib/proto/virtio-blk.js';
import { BlkSession, DRIVER_FEATURES, dwzSegment, type Seg } from '../helpers/virtq-driver.js';

export type Status = 'ok' | 'ioerr' | 'unsupp' | `bad ${number}`;

/** What the export says about the disk (virtio-blk config space and features, or their equivalent). */
export interface Geometry {
  capacity: number;
  blockSize: number;
  /** Largest number of data segments in one request. */
  segMax: number;
  numQueues: number;
  readOnly: boolean;
  discard: boolean;
  writeZeroes: boolean;
  /** The serial the kernel read with GET_ID (a kernel virtio-blk disk's sysfs), when a driver knows it. */
  serial?: string;
  /** The disk caches writes until a flush (a kernel disk's write_cache), when a driver knows it. */
  volatileCache?: boolean;
}

export type Op =
  | { op: 'read'; offset: number; length: number; segments?: number[] }
  | { op: 'write'; offset: number; data: Buffer; segments?: number[] }
  | { op: 'flush' }
  | { op: 'discard'; offset: number; length: number }
  | { op: 'write-zeroes'; offset: number; length: number; unmap?: boolean }
  | { op: 'get-id' };

export interface Result {
  status: Status;
  data: Buffer;
  /** The errno code a kernel block device failed the request with (EIO, EPERM, EROFS, ...). */
  errno?: string;
}

export interface DiskDriver {
  readonly name: string;
  readonly geometry: Geometry;
  /**
   * true: requests reach the export as given (past the end, on a read-only disk, any segment
   * layout), so the export's own answer is what is checked. false: the driver refuses some itself.
   */
  readonly raw: boolean;
  /** Submits every op on queue q at once (all in flight together), resolves with their results in order. */
  batch(q: number, ops: Op[]): Promise<Result[]>;
  /** The whole disk, when the driver has a faster way than 1 MiB reads (the guest's: its serial line is slow). */
  readWhole?(): Promise<Buffer>;
  close(): Promise<void>;
}

export async function one(d: DiskDriver, q: number, op: Op): Promise<Result> {
  return (await d.batch(q, [op]))[0]!;
}

/** Reads the whole disk: in 1 MiB requests on queue 0, or the driver's own way. */
export async function readAll(d: DiskDriver): Promise<Buffer> {
  if (d.readWhole) return d.readWhole();
  const parts: Buffer[] = [];
  const chunk = 1 << 20;
  for (let off = 0; off < d.geometry.capacity; off += chunk) {
    const r = await one(d, 0, { op: 'read', offset: off, length: Math.min(chunk, d.geometry.capacity - off) });
    if (r.status !== 'ok') throw new Error(`${d.name}: reading the disk back at ${off}: ${r.status}`);
    parts.push(r.data);
  }
  return Buffer.concat(parts);
}

function statusName(s: number): Status {
  return s === VIRTIO_BLK_S.OK
    ? 'ok'
    : s === VIRTIO_BLK_S.IOERR
      ? 'ioerr'
      : s === VIRTIO_BLK_S.UNSUPP
        ? 'unsupp'
        : `bad ${s}`;
}

/** Splits length into the given segment sizes (the last one takes the rest). */
function split(length: number, segments?: number[]): number[] {
  if (!segments?.length) return [length];
  const sizes = segments.slice(0, -1);
  const rest = length - sizes.reduce((a, b) => a + b, 0);
  if (rest <= 0) throw new Error(`segments ${segments.join(',')} do not fit ${length} bytes`);
  return [...sizes, rest];
}

/** The test driver over vhost-user: raw virtio-blk requests in shared memory. */
export class VirtqDriver implements DiskDriver {
  readonly name = 'virtq test driver';
  readonly raw = true;
  readonly geometry: Geometry;
  private active = 0;
  private base = 0;

  private constructor(private readonly s: BlkSession) {
    const f = s.features;
    const c = s.config;
    this.geometry = {
      capacity: Number(c.capacitySectors) * 512,
      blockSize: hasBit(f, VIRTIO_BLK_F.BLK_SIZE) ? c.blkSize : 512,
      segMax: hasBit(f, VIRTIO_BLK_F.SEG_MAX) ? c.segMax : 1,
      numQueues: hasBit(f, VIRTIO_BLK_F.MQ) ? c.numQueues : 1,
      readOnly: hasBit(f, VIRTIO_BLK_F.RO),
      discard: hasBit(f, VIRTIO_BLK_F.DISCARD),
      writeZeroes: hasBit(f, VIRTIO_BLK_F.WRITE_ZEROES),
    };
  }

  /** ringSize must be at least segMax + 2 for the longest request to fit the rules of the ring. */
  static open(socket: string, queues: number, ringSize: number): VirtqDriver {
    return new VirtqDriver(
      BlkSession.open(socket, {
        queues,
        queueSize: ringSize,
        memSize: 32 << 20,
        timeoutMs: 3000,
        features: DRIVER_FEATURES | bit(VIRTIO_BLK_F.RO),
      }),
    );
  }

  async batch(qi: number, ops: Op[]): Promise<Result[]> {
    const q = this.s.queues[qi];
    if (!q) throw new Error(`queue ${qi} is not started`);
    const mem = this.s.mem;
    // Batches on different queues run at once on one bump allocator: the memory is given back when
    // the last of them is done.
    if (this.active++ === 0) this.base = mem.position();
    try {
      const posted = new Map<
        number,
        { index: number; statusOff: number; inSegs: Array<{ off: number; len: number }> }
      >();
      ops.forEach((o, index) => {
        const hdr = mem.alloc(16, 16);
        const type = {
          read: VIRTIO_BLK_T.IN,
          write: VIRTIO_BLK_T.OUT,
          flush: VIRTIO_BLK_T.FLUSH,
          discard: VIRTIO_BLK_T.DISCARD,
          'write-zeroes': VIRTIO_BLK_T.WRITE_ZEROES,
          'get-id': VIRTIO_BLK_T.GET_ID,
        }[o.op];
        mem.buf.writeUInt32LE(type, hdr);
        mem.buf.writeUInt32LE(0, hdr + 4);
        mem.buf.writeBigUInt64LE(o.op === 'read' || o.op === 'write' ? BigInt(o.offset / 512) : 0n, hdr + 8);
        const segs: Seg[] = [{ off: hdr, len: 16, write: false }];
        const inSegs: Array<{ off: number; len: number }> = [];
        const place = (bytes: Buffer | number, write: boolean): void => {
          const len = typeof bytes === 'number' ? bytes : bytes.length;
          const off = mem.alloc(len, 512);
          if (typeof bytes === 'number')
            mem.buf.fill(0xee, off, off + len); // poison: a read must overwrite it
          else bytes.copy(mem.buf, off);
          segs.push({ off, len, write });
          if (write) inSegs.push({ off, len });
        };
        if (o.op === 'read') {
          for (const len of split(o.length, o.segments)) place(len, true);
        } else if (o.op === 'write') {
          let at = 0;
          for (const len of split(o.data.length, o.segments)) {
            place(o.data.subarray(at, at + len), false);
            at += len;
          }
        } else if (o.op === 'discard' || o.op === 'write-zeroes') {
          place(dwzSegment(o.offset / 512, o.length / 512, o.op === 'write-zeroes' && o.unmap ? 1 : 0), false);
        } else if (o.op === 'get-id') place(20, true);
        const statusOff = mem.alloc(1, 1);
        mem.buf[statusOff] = 0xff; // not a status: proves the device wrote one
        segs.push({ off: statusOff, len: 1, write: true });
        // long chains go through one indirect table, as Linux's virtio-blk driver sends them
        const head = q.postChain(segs, { indirect: segs.length > 8 });
        posted.set(head, { index, statusOff, inSegs });
      });
      q.kick();
      const results: Result[] = new Array(ops.length);
      for (const c of q.complete(await q.waitUsed(ops.length, 5000))) {
        const p = posted.get(c.head);
        if (!p) throw new Error(`completion for head ${c.head}, which this batch did not post`);
        const data = Buffer.concat(p.inSegs.map((sg) => Buffer.from(mem.buf.subarray(sg.off, sg.off + sg.len))));
        results[p.index] = { status: statusName(mem.buf[p.statusOff]!), data };
      }
      return results;
    } finally {
      if (--this.active === 0) mem.rewind(this.base); // everything the batches placed was copied out
    }
  }

  async close(): Promise<void> {
    this.s.close();
  }
}

/** stor's client library (`open('vhost-user:...')`): requests as an application makes them. */
export class LibraryDriver implements DiskDriver {
  readonly name = 'stor client library';
  readonly raw = false;
  readonly geometry: Geometry;

  private constructor(private readonly dev: BlockDevice) {
    const p = dev.properties;
    this.geometry = {
      capacity: p.capacity,
      blockSize: p.requestAlignment,
      segMax: p.maxSegments,
      numQueues: p.maxQueues,
      readOnly: p.readOnly,
      discard: p.canDiscard,
      writeZeroes: p.canWriteZeroes,
    };
  }

  static async open(socket: string, queues: number): Promise<LibraryDriver> {
    return new LibraryDriver(
      await open(formatSpec({ driver: 'vhost-user', props: { path: socket } }), { numQueues: queues, timeoutMs: 3000 }),
    );
  }

  async batch(q: number, ops: Op[]): Promise<Result[]> {
    const d = this.dev;
    const run = async (o: Op): Promise<Result> => {
      let data: Buffer = Buffer.alloc(0);
      try {
        switch (o.op) {
          case 'read':
            data = await d.read(o.offset, o.length, { queue: q });
            break;
          case 'write':
            await d.write(o.offset, o.data, { queue: q });
            break;
          case 'flush':
            await d.flush({ queue: q });
            break;
          case 'discard':
            await d.discard(o.offset, o.length, { queue: q });
            break;
          case 'write-zeroes':
            await d.writeZeroes(o.offset, o.length, { queue: q, unmap: o.unmap });
            break;
          case 'get-id':
            return { status: 'unsupp', data };
        }
        return { status: 'ok', data };
      } catch (e) {
        return { status: (e as { errno?: number }).errno === 95 ? 'unsupp' : 'ioerr', data };
      }
    };
    return Promise.all(ops.map(run));
  }

  async close(): Promise<void> {
    await this.dev.close();
  }
}
