// A libblkio-style client. open() a target — a vhost-user-blk socket (virtio-blk over
// vhost-user, zero copy from shared memory regions), a file or block device (io_uring), or an
// in-process null/mem backend — and issue reads, writes, flushes, discards and write-zeroes as
// promises. Requests run through the native data plane; JavaScript only submits and resolves.
import { statSync } from 'node:fs';
import { EXIT, StorError, usageError } from '../core/errors.js';
import {
  native,
  STOR_OP,
  STOR_REQ_F_UNMAP,
  type BackendHandle,
  type ClientQueueHandle,
  type FdWatch,
  type BdevProperties,
  type VuClientRegion,
} from '../native.js';
import { parseTarget, type Target } from '../core/target.js';
import { formatSpec } from '../core/spec.js';
import { openBackend } from '../bdev/open.js';
import { SPIN_US_DEFAULT } from '../core/completion.js';
import { assertWholeSectors } from '../bdev/identity.js';
import { VIRTIO_BLK_F, VIRTIO_F, bit, featureNames, hasBit } from '../proto/virtio-blk.js';
import { ProtocolFeature } from '../proto/vhost-user.js';
import { VhostUserFrontend } from './vhost-user-frontend.js';
import { BlkioError } from './errors.js';

/**
 * notify: completions through an eventfd watched by the Node event loop; poll: busy-polled.
 * 'event' is an alias of notify.
 */
export type Completion = 'notify' | 'poll' | 'event';

export interface OpenOptions {
  /** Queues to use (each is a virtqueue or an io_uring), default 1. */
  numQueues?: number;
  /** Ring entries per queue (requests in flight per queue), default 256. */
  queueSize?: number;
  /** notify (alias event): completions through an eventfd watched by the Node event loop; poll: busy-polled. */
  completion?: Completion;
  readOnly?: boolean;
  /** io_uring targets: O_DIRECT. */
  direct?: boolean;
  /** Control-plane reply timeout (vhost-user), default 5000 ms. */
  timeoutMs?: number;
  /** Polled completion: how long one poll attempt spins before yielding to the event loop (spin-us). */
  spinUs?: number;
  /** @deprecated the old name of spinUs */
  pollSpinUs?: number;
}

/** Named as libblkio names them (capacity, request-alignment, ...), in camelCase. */
export interface Properties {
  driver: 'virtio-blk-vhost-user' | 'io_uring' | 'null' | 'mem' | 'rbd';
  target: string;
  capacity: number;
  requestAlignment: number;
  bufAlignment: number;
  optimalIoAlignment: number;
  optimalIoSize: number;
  /** 0: no limit. */
  maxTransfer: number;
  maxQueues: number;
  numQueues: number;
  maxSegments: number;
  readOnly: boolean;
  canDiscard: boolean;
  canWriteZeroes: boolean;
  discardAlignment: number;
  maxDiscardLength: number;
  maxWriteZeroesLength: number;
  maxMemRegions: number;
  needsMemRegions: boolean;
  /** virtio features negotiated (vhost-user) */
  features: string[];
}

/** The device's properties: all as the backend (C) reports them; only the queue count is the opener's choice. */
function propertiesOf(driver: Properties['driver'], c: BdevProperties, numQueues: number): Properties {
  return {
    driver,
    target: c.desc,
    capacity: c.capacity,
    requestAlignment: c.requestAlignment,
    bufAlignment: c.bufAlignment,
    optimalIoAlignment: c.optimalIoAlignment,
    optimalIoSize: c.optimalIoSize,
    maxTransfer: c.maxTransfer,
    maxQueues: c.maxQueues,
    numQueues,
    maxSegments: c.maxSegments,
    readOnly: c.readOnly,
    canDiscard: c.canDiscard,
    canWriteZeroes: c.canWriteZeroes,
    discardAlignment: c.discardAlignment,
    maxDiscardLength: c.maxDiscardLength,
    maxWriteZeroesLength: c.maxWriteZeroesLength,
    maxMemRegions: c.maxMemRegions,
    needsMemRegions: c.needsMemRegions,
    features: featureNames(c.virtioFeatures),
  };
}

export interface RequestOptions {
  queue?: number;
}

/** Shared memory the device reads and writes without copying (vhost-user), or an aligned buffer. */
export interface MemRegion {
  buffer: Buffer;
  size: number;
}

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
  op: string;
  offset: number;
  length: number;
}

/** Largest request sent from a buffer outside registered memory: it goes through a bounce buffer. */
const BOUNCE_SIZE = 1 << 20;
const NEG_ERRNO = (r: number): number => -r;

class QueueRunner {
  private tokens = new Map<number, Pending>();
  private next = 1;
  private waiting: Array<() => void> = [];
  private watch?: FdWatch;
  private pollScheduled = false;
  private closed = false;
  private readonly eventFd: number;

  constructor(
    readonly handle: ClientQueueHandle,
    private completion: Completion,
    private spinUs: number,
  ) {
    this.eventFd = native().clientInfo(handle).eventFd;
    if (completion !== 'poll' && this.eventFd >= 0) {
      this.watch = native().watchFd(this.eventFd, true, false, () => this.reap(0, true));
      // Only in-flight requests keep the process alive.
      this.watch.ref(false);
    }
  }

  get inflight(): number {
    return this.tokens.size;
  }

  async submit(
    op: number,
    opName: string,
    offset: number,
    length: number,
    buf: Uint8Array | null,
    flags = 0,
  ): Promise<void> {
    const n = native();
    for (;;) {
      const token = this.next++;
      const p = new Promise<void>((resolve, reject) =>
        this.tokens.set(token, { resolve, reject, op: opName, offset, length }),
      );
      let ok: boolean;
      try {
        ok = n.clientSubmit(this.handle, op, offset, length, buf, token, flags);
      } catch (e) {
        this.tokens.delete(token);
        throw new BlkioError(opName, offset, length, 22, (e as Error).message);
      }
      if (!ok) {
        // every slot is busy: wait for a completion, then try again
        this.tokens.delete(token);
        await new Promise<void>((r) => {
          this.waiting.push(r);
          this.kick();
        });
        continue;
      }
      this.kick();
      return p;
    }
  }

  /** Makes sure completions will be noticed: commit, then arm the event fd or schedule a poll. */
  private kick(): void {
    const n = native();
    n.clientCommit(this.handle);
    if (this.watch) {
      this.watch.ref(true);
      this.reap(0, true); // arm, and take what already completed (synchronous or raced)
    } else if (!this.pollScheduled) {
      this.pollScheduled = true;
      setImmediate(() => {
        this.pollScheduled = false;
        this.reap(this.spinUs, false);
      });
    }
  }

  reap(spinUs: number, arm: boolean): void {
    if (this.closed) return; // a poll scheduled before close()
    const done = native().clientReap(this.handle, spinUs, arm);
    for (let i = 0; i < done.length; i += 2) {
      const p = this.tokens.get(done[i]);
      if (!p) continue;
      this.tokens.delete(done[i]);
      const r = done[i + 1];
      if (r < 0) p.reject(new BlkioError(p.op, p.offset, p.length, NEG_ERRNO(r)));
      else p.resolve();
    }
    while (this.waiting.length && done.length) this.waiting.shift()!();
    if (this.tokens.size === 0) {
      this.watch?.ref(false);
      return;
    }
    if (!this.watch) {
      if (!this.pollScheduled) {
        this.pollScheduled = true;
        setImmediate(() => {
          this.pollScheduled = false;
          this.reap(this.spinUs, false);
        });
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch?.stop();
    this.watch = undefined;
    native().clientQueueClose(this.handle);
    for (const [, p] of this.tokens) p.reject(new BlkioError(p.op, p.offset, p.length, 107, 'the device was closed'));
    this.tokens.clear();
  }
}

export class BlockDevice {
  readonly properties: Properties;
  /** The native backend: engines (copy, bench) run on it without JavaScript per request. */
  readonly backend: BackendHandle;
  /** Opened on first use, so that native engines (copy, bench) can claim the queues instead. */
  private queues: Array<QueueRunner | undefined>;
  private closed = false;
  private regions: Array<{ start: bigint; end: bigint }> = [];
  private ctlWatch?: FdWatch;

  private constructor(
    props: Properties,
    backend: BackendHandle,
    private queueSize: number,
    private completion: Completion,
    private spinUs: number,
    private fe?: VhostUserFrontend,
  ) {
    this.properties = props;
    this.backend = backend;
    this.queues = new Array(props.numQueues).fill(undefined);
    if (fe) {
      // The server going away must fail in-flight requests, not hang them.
      this.ctlWatch = native().watchFd(fe.fd, true, false, () => {
        const r = native().recvmsg(fe.fd, 64);
        if (r && r.data.length > 0) {
          for (const f of r.fds) native().close(f);
          return;
        }
        if (r === null) return;
        this.ctlWatch?.stop();
        this.ctlWatch = undefined;
        native().vuClientMarkDead(this.backend);
        for (const q of this.queues) q?.reap(0, false);
      });
      // an open device must not keep the process alive by itself
      this.ctlWatch.ref(false);
    }
  }

  /** Opens a target: "vhost-user:/path.sock", "file:/img", "/dev/vdb", "null:1G", "mem:1G". */
  static async open(target: string | Target, opts: OpenOptions = {}): Promise<BlockDevice> {
    const t = typeof target === 'string' ? parseTarget(target) : target;
    const numQueues = opts.numQueues ?? 1;
    const queueSize = opts.queueSize ?? 256;
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 64)
      throw usageError('numQueues', `${numQueues} is not 1..64`);
    if (!Number.isInteger(queueSize) || queueSize < 2 || queueSize > 32768 || queueSize & (queueSize - 1)) {
      throw usageError('queueSize', `${queueSize} is not a power of 2 from 2 to 32768`);
    }
    const completion = opts.completion ?? 'notify';
    if (completion !== 'notify' && completion !== 'poll' && completion !== 'event')
      throw usageError(
        'completion',
        `'${String(completion)}' is not a completion mode`,
        'notify, poll (event: an alias of notify)',
      );
    const spin = opts.spinUs ?? opts.pollSpinUs ?? SPIN_US_DEFAULT;
    if (t.kind === 'vhost-user') return BlockDevice.openVhostUser(t.path, numQueues, queueSize, completion, spin, opts);
    if (t.kind === 'file') assertWholeSectors(t.path);
    const { handle, properties: c } = openBackend(t, { readonly: opts.readOnly, direct: opts.direct });
    const props = propertiesOf(t.kind === 'file' ? 'io_uring' : t.kind, c, numQueues);
    if (numQueues > c.maxQueues)
      throw usageError('numQueues', `${numQueues} queues asked, the device has ${c.maxQueues}`);
    return new BlockDevice(props, handle, queueSize, completion, spin);
  }

  private static openVhostUser(
    path: string,
    numQueues: number,
    queueSize: number,
    completion: Completion,
    spin: number,
    opts: OpenOptions,
  ): BlockDevice {
    let fe: VhostUserFrontend;
    let st;
    try {
      st = statSync(path);
    } catch {
      /* connect says what is wrong */
    }
    if (st && !st.isSocket())
      throw new StorError(`${path} is not a socket`, {
        hint: 'vhost-user: needs the Unix socket of a vhost-user-blk server',
      });
    try {
      fe = VhostUserFrontend.connect(path, { timeoutMs: opts.timeoutMs ?? 5000 });
    } catch (e) {
      throw new StorError(
        `cannot connect to vhost-user socket ${path}: ${(e as Error).message.replace(/^.*?: /, '')}`,
        {
          hint: 'is a vhost-user-blk server (stor serve, qemu-storage-daemon) listening there?',
          cause: e,
        },
      );
    }
    try {
      const want =
        bit(VIRTIO_F.VERSION_1) |
        bit(VIRTIO_F.RING_EVENT_IDX) |
        bit(VIRTIO_F.RING_INDIRECT_DESC) |
        bit(VIRTIO_BLK_F.SEG_MAX) |
        bit(VIRTIO_BLK_F.BLK_SIZE) |
        bit(VIRTIO_BLK_F.FLUSH) |
        bit(VIRTIO_BLK_F.MQ) |
        bit(VIRTIO_BLK_F.DISCARD) |
        bit(VIRTIO_BLK_F.WRITE_ZEROES) |
        bit(VIRTIO_BLK_F.RO) |
        bit(VIRTIO_BLK_F.TOPOLOGY);
      const neg = fe.negotiate({
        features: want,
        protocolFeatures:
          bit(ProtocolFeature.MQ) |
          bit(ProtocolFeature.REPLY_ACK) |
          bit(ProtocolFeature.CONFIG) |
          bit(ProtocolFeature.CONFIGURE_MEM_SLOTS),
        required: bit(VIRTIO_F.VERSION_1),
      });
      if (!hasBit(neg.protocolFeatures, ProtocolFeature.CONFIG))
        throw new StorError(`${path}: the server does not offer the CONFIG protocol feature (capacity cannot be read)`);
      const slots = hasBit(neg.protocolFeatures, ProtocolFeature.CONFIGURE_MEM_SLOTS);
      // the backend (C) derives every property from the negotiated features and the config space
      let created;
      try {
        created = native().vuClientCreate({
          features: neg.features,
          config: fe.getConfig(0, 60),
          readonly: opts.readOnly ?? false,
          queues: numQueues,
          queueSize,
          maxMemSlots: slots ? fe.getMaxMemSlots() : 0,
          bounceSize: BOUNCE_SIZE,
          desc: formatSpec({ driver: 'vhost-user', props: { path } }),
          controlFd: fe.fd,
        });
      } catch (e) {
        const m = /^numQueues: (.*)$/.exec((e as Error).message);
        throw m ? usageError('numQueues', m[1]) : e;
      }
      const f = neg.features;
      const region = {
        guestAddr: created.memAddr,
        userAddr: created.memAddr,
        size: BigInt(created.memSize),
        mmapOffset: 0n,
        fd: created.memFd,
      };
      if (slots) fe.addMemRegion(region);
      else fe.setMemTable([region]);
      const pf = hasBit(f, 30);
      created.queues.forEach((q, i) => {
        fe.setVringNum(i, queueSize);
        fe.setVringBase(i, 0);
        fe.setVringAddr({ index: i, desc: q.desc, used: q.used, avail: q.avail });
        fe.setVringCall(i, q.callFd);
        fe.setVringKick(i, q.kickFd);
        if (pf) fe.setVringEnable(i, true);
      });
      const c = native().bdevProperties(created.backend);
      const props = propertiesOf('virtio-blk-vhost-user', c, numQueues);
      const dev = new BlockDevice(props, created.backend, queueSize, completion, spin, fe);
      dev.memSlots = slots;
      dev.registered.push({
        guestAddr: created.memAddr,
        userAddr: created.memAddr,
        size: BigInt(created.memSize),
        mmapOffset: 0n,
        fd: created.memFd,
      });
      return dev;
    } catch (e) {
      fe.close();
      if (e instanceof StorError) throw e;
      const msg = (e as Error).message;
      // a server that hangs up in the handshake is most often busy: vhost-user serves one front-end at a time
      const hungUp = /broken pipe|reset by peer|EPIPE|ECONNRESET|closed|end of file|EOF/i.test(msg);
      throw new StorError(`vhost-user handshake with ${path} failed: ${msg}`, {
        cause: e,
        hint: hungUp
          ? "the server hung up: a vhost-user-blk server serves one front-end at a time; is another client (a VM, stor bench or copy) connected? The server's log says why"
          : undefined,
      });
    }
  }

  private memSlots = false;
  private registered: Array<{ guestAddr: bigint; userAddr: bigint; size: bigint; mmapOffset: bigint; fd: number }> = [];

  /** Memory for zero-copy I/O: for vhost-user, a shared region the server maps (ADD_MEM_REG). */
  allocMemRegion(size: number): MemRegion {
    this.assertOpen();
    if (this.properties.driver !== 'virtio-blk-vhost-user' || !this.fe) {
      return { buffer: Buffer.alloc(size), size };
    }
    const r: VuClientRegion = native().vuClientAllocRegion(this.backend, size);
    const reg = { guestAddr: r.addr, userAddr: r.addr, size: BigInt(r.size), mmapOffset: 0n, fd: r.fd };
    if (this.memSlots) this.fe.addMemRegion(reg);
    else {
      this.registered.push(reg);
      this.fe.setMemTable(this.registered);
    }
    this.regions.push({ start: r.addr, end: r.addr + BigInt(r.size) });
    return { buffer: r.buffer, size: r.size };
  }

  private inRegion(buf: Uint8Array): boolean {
    if (!this.regions.length) return false;
    const a = native().bufferAddress(buf);
    return this.regions.some((r) => a >= r.start && a + BigInt(buf.length) <= r.end);
  }

  private queue(opts?: RequestOptions): QueueRunner {
    const i = opts?.queue ?? 0;
    if (!Number.isInteger(i) || i < 0 || i >= this.queues.length)
      throw usageError('queue', `${i} is not a queue of this device (it has ${this.queues.length})`);
    let q = this.queues[i];
    if (!q) {
      let h;
      try {
        h = native().clientQueueOpen(this.backend, this.queueSize);
      } catch (e) {
        throw new StorError(`cannot open queue ${i}: ${(e as Error).message}`);
      }
      q = this.queues[i] = new QueueRunner(h, this.completion, this.spinUs);
    }
    return q;
  }

  private assertOpen(): void {
    if (this.closed) throw new StorError('the device is closed');
  }

  /** Validates a request before submission; what fails here is the caller's mistake (exit 2). */
  private check(op: string, offset: number, length: number, needsWrite: boolean): void {
    this.assertOpen();
    const p = this.properties;
    const bad = (detail: string, errno = 22): BlkioError =>
      new BlkioError(op, offset, length, errno, detail, EXIT.USAGE);
    if (!Number.isSafeInteger(offset) || offset < 0) throw bad('offset must be a non-negative integer');
    if (!Number.isSafeInteger(length) || length < 0) throw bad('length must be a non-negative integer');
    if (offset % p.requestAlignment || length % p.requestAlignment) {
      throw bad(`offset and length must be multiples of the request alignment (${p.requestAlignment})`);
    }
    if (offset + length > p.capacity) throw bad(`past the end of the device (capacity ${p.capacity})`);
    if (needsWrite && p.readOnly) throw bad('the device is read-only', 30);
  }

  /**
   * Checks a whole byte range (bounds, alignment, read-only) before a caller splits it into requests,
   * so that a range that cannot succeed fails before anything is read or written.
   */
  checkRange(op: string, offset: number, length: number, forWrite = false): void {
    this.check(op, offset, length, forWrite);
  }

  /** Reads length bytes at offset into a new Buffer. */
  async read(offset: number, length: number, opts?: RequestOptions): Promise<Buffer> {
    // allocated where O_DIRECT wants it, so that no bounce copy is needed
    const buf =
      this.properties.bufAlignment > 1 && length > 0 ? this.alignedBuffer(length) : Buffer.allocUnsafe(length);
    await this.readInto(offset, buf, opts);
    return buf;
  }

  async readInto(offset: number, buf: Uint8Array, opts?: RequestOptions): Promise<void> {
    this.check('read', offset, buf.length, false);
    await this.dataRequest(STOR_OP.READ, 'read', offset, buf, opts);
  }

  async write(offset: number, data: Uint8Array, opts?: RequestOptions): Promise<void> {
    this.check('write', offset, data.length, true);
    await this.dataRequest(STOR_OP.WRITE, 'write', offset, data, opts);
  }

  private async dataRequest(
    op: number,
    name: string,
    offset: number,
    buf: Uint8Array,
    opts?: RequestOptions,
  ): Promise<void> {
    if (buf.length === 0) return;
    const q = this.queue(opts);
    // O_DIRECT files want buffers at buf-alignment: others go through aligned bounce buffers
    if (!this.isBufAligned(buf)) {
      await this.viaAlignedBounce(q, op, name, offset, buf);
      return;
    }
    // Zero copy from registered memory; otherwise through bounce buffers of BOUNCE_SIZE each.
    if (this.inRegion(buf) || buf.length <= BOUNCE_SIZE || this.properties.driver !== 'virtio-blk-vhost-user') {
      await q.submit(op, name, offset, buf.length, buf);
      return;
    }
    const parts: Promise<void>[] = [];
    for (let o = 0; o < buf.length; o += BOUNCE_SIZE) {
      const len = Math.min(BOUNCE_SIZE, buf.length - o);
      parts.push(q.submit(op, name, offset + o, len, buf.subarray(o, o + len)));
    }
    await Promise.all(parts);
  }

  private isBufAligned(buf: Uint8Array): boolean {
    const align = this.properties.bufAlignment;
    return align <= 1 || native().bufferAddress(buf) % BigInt(align) === 0n;
  }

  /** An uninitialised buffer of length bytes whose address is a multiple of buf-alignment. */
  private alignedBuffer(length: number): Buffer {
    const align = BigInt(this.properties.bufAlignment);
    const raw = Buffer.allocUnsafeSlow(length + Number(align));
    const skip = Number((align - (native().bufferAddress(raw) % align)) % align);
    return raw.subarray(skip, skip + length);
  }

  /** A request from or into an unaligned buffer: pieces of up to BOUNCE_SIZE through aligned copies. */
  private async viaAlignedBounce(
    q: QueueRunner,
    op: number,
    name: string,
    offset: number,
    buf: Uint8Array,
  ): Promise<void> {
    const piece = Math.min(buf.length, BOUNCE_SIZE); // a multiple of the request alignment, as buf.length is
    let next = 0;
    const worker = async (): Promise<void> => {
      const bounce = this.alignedBuffer(piece);
      while (next < buf.length) {
        const at = next;
        const len = Math.min(piece, buf.length - at);
        next += len;
        const b = bounce.subarray(0, len);
        if (op === STOR_OP.WRITE) b.set(buf.subarray(at, at + len));
        await q.submit(op, name, offset + at, len, b);
        if (op === STOR_OP.READ) buf.set(b, at);
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, Math.ceil(buf.length / piece)) }, worker));
  }

  async flush(opts?: RequestOptions): Promise<void> {
    this.assertOpen();
    await this.queue(opts).submit(STOR_OP.FLUSH, 'flush', 0, 0, null);
  }

  async discard(offset: number, length: number, opts?: RequestOptions): Promise<void> {
    this.check('discard', offset, length, true);
    if (!this.properties.canDiscard)
      throw new BlkioError('discard', offset, length, 95, 'the device does not support discard');
    await this.rangeRequest(STOR_OP.DISCARD, 'discard', offset, length, this.properties.maxDiscardLength, 0, opts);
  }

  async writeZeroes(offset: number, length: number, opts?: RequestOptions & { unmap?: boolean }): Promise<void> {
    this.check('write-zeroes', offset, length, true);
    if (!this.properties.canWriteZeroes)
      throw new BlkioError('write-zeroes', offset, length, 95, 'the device does not support write-zeroes');
    await this.rangeRequest(
      STOR_OP.WRITE_ZEROES,
      'write-zeroes',
      offset,
      length,
      this.properties.maxWriteZeroesLength,
      opts?.unmap ? STOR_REQ_F_UNMAP : 0,
      opts,
    );
  }

  private async rangeRequest(
    op: number,
    name: string,
    offset: number,
    length: number,
    max: number,
    flags: number,
    opts?: RequestOptions,
  ): Promise<void> {
    const q = this.queue(opts);
    const step = max > 0 ? max : length;
    const parts: Promise<void>[] = [];
    for (let o = 0; o < length; o += step)
      parts.push(q.submit(op, name, offset + o, Math.min(step, length - o), null, flags));
    await Promise.all(parts);
  }

  /** Completes in-flight requests, stops the rings and disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ctlWatch?.stop();
    for (const q of this.queues) q?.close();
    if (this.fe && !this.fe.isClosed) {
      try {
        for (let i = 0; i < this.queues.length; i++) this.fe.getVringBase(i);
      } catch {
        /* server gone: nothing to stop */
      }
      native().vuClientMarkDead(this.backend, true);
      this.fe.close();
    }
    // now, not at garbage collection: a file's fd and its image locks go with the device
    native().backendClose(this.backend);
  }
}

export function open(target: string | Target, opts?: OpenOptions): Promise<BlockDevice> {
  return BlockDevice.open(target, opts);
}
