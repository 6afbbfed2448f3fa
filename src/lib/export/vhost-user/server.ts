// The vhost-user-blk back-end: a Unix socket server that speaks the vhost-user control protocol
// with one front-end at a time (QEMU, libblkio, stor's own client) and hands memory, rings and
// eventfds to the native data plane. Nothing here runs per I/O.
import { EventEmitter } from 'node:events';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { native, type BackendHandle, type BlkDeviceHandle, type CompletionMode, type FdWatch, type QueueStats } from '../../native.js';
import { StorError } from '../../core/errors.js';
import { BLK_CONFIG_SIZE, VIRTIO_BLK_F, VIRTIO_F, bit, encodeBlkConfig } from '../../proto/virtio-blk.js';
import {
  F_PROTOCOL_FEATURES, FLAG_NEED_REPLY, HEADER_SIZE, ProtocolError, ProtocolFeature, Req, decodeConfig,
  decodeHeader, decodeMemTable, decodeSingleRegion, decodeU64, decodeVringAddr, decodeVringFile, decodeVringState,
  encodeConfig, encodeReply, encodeU64, encodeVringState, reqName, type Header,
} from '../../proto/vhost-user.js';

export type LogLevel = 'info' | 'warn' | 'error';
export type Logger = (level: LogLevel, message: string) => void;

export interface VhostUserBlkServerOptions {
  socketPath: string;
  backend: BackendHandle;
  queues: number;
  /** Largest ring a front-end may ask for; also bounds seg_max. */
  queueSize: number;
  blockSize: 512 | 4096;
  readonly: boolean;
  serial: string;
  mode: CompletionMode;
  /** adaptive mode: how long a queue thread spins after its last request before it sleeps. */
  pollUs?: number;
  log?: Logger;
}

/** Memory slots offered through GET_MAX_MEM_SLOTS (the native table holds 64). */
const MAX_MEM_SLOTS = 32;
const MAX_DISCARD_SECTORS = 1 << 22;

interface QueueState {
  num?: number;
  addrSet: boolean;
  kick: 'unset' | 'fd' | 'nofd';
  enabled: boolean;
  started: boolean;
}

export class VhostUserBlkServer extends EventEmitter {
  readonly options: VhostUserBlkServerOptions;
  readonly capacity: number;
  readonly featuresOffered: bigint;
  readonly protocolFeaturesOffered: bigint;
  private listenFd = -1;
  private listenWatch?: FdWatch;
  private device?: BlkDeviceHandle;
  private conn?: Connection;
  private connections = 0;
  private closed = false;
  private readonly config: Buffer;
  private readonly log: Logger;

  constructor(options: VhostUserBlkServerOptions) {
    super();
    this.options = options;
    this.log = options.log ?? (() => {});
    const info = native().backendInfo(options.backend);
    this.capacity = info.capacity;
    const ro = options.readonly || info.readonly;
    let f = bit(VIRTIO_F.VERSION_1) | bit(F_PROTOCOL_FEATURES) | bit(VIRTIO_F.RING_INDIRECT_DESC) | bit(VIRTIO_F.RING_EVENT_IDX)
      | bit(VIRTIO_BLK_F.SEG_MAX) | bit(VIRTIO_BLK_F.BLK_SIZE) | bit(VIRTIO_BLK_F.FLUSH) | bit(VIRTIO_BLK_F.MQ)
      | bit(VIRTIO_BLK_F.TOPOLOGY);
    f |= ro ? bit(VIRTIO_BLK_F.RO) : bit(VIRTIO_BLK_F.DISCARD) | bit(VIRTIO_BLK_F.WRITE_ZEROES);
    this.featuresOffered = f;
    this.protocolFeaturesOffered = bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG)
      | bit(ProtocolFeature.RESET_DEVICE) | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS);
    this.config = encodeBlkConfig({
      capacityBytes: info.capacity, blockSize: options.blockSize, numQueues: options.queues,
      segMax: Math.min(options.queueSize - 2, 254), maxDiscardSectors: MAX_DISCARD_SECTORS,
      maxWriteZeroesSectors: MAX_DISCARD_SECTORS, discardSectorAlignment: options.blockSize / 512, writeZeroesMayUnmap: true,
    });
  }

  get socketPath(): string { return this.options.socketPath; }
  get connected(): boolean { return this.conn !== undefined; }
  /** Front-ends served so far (including the current one). */
  get connectionCount(): number { return this.connections; }

  /** Binds the socket (replacing a stale one, refusing a live one) and starts accepting. */
  listen(): void {
    const n = native();
    const path = this.options.socketPath;
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new StorError(`${path} exists and is not a socket`, { hint: 'choose another --socket path' });
      let live = false;
      try { const fd = n.unixConnect(path); n.close(fd); live = true; } catch { /* stale: nobody listens */ }
      if (live) throw new StorError(`${path} is in use by another server`, { hint: 'stop it, or choose another --socket path' });
      unlinkSync(path);
    }
    try {
      this.listenFd = n.unixListen(path, 16);
    } catch (e) {
      throw new StorError(`cannot listen on ${path}: ${(e as Error).message}`, { cause: e });
    }
    this.device = n.blkDeviceCreate(this.options.backend, {
      queues: this.options.queues, blockSize: this.options.blockSize, readonly: this.options.readonly,
      serial: this.options.serial, mode: this.options.mode, pollUs: this.options.pollUs ?? 64,
      maxDiscardSectors: MAX_DISCARD_SECTORS, maxWriteZeroesSectors: MAX_DISCARD_SECTORS,
    }, (kind, queue, message) => this.onDeviceEvent(kind, queue, message));
    this.listenWatch = n.watchFd(this.listenFd, true, false, () => this.acceptPending());
  }

  private acceptPending(): void {
    const n = native();
    for (;;) {
      let fd: number;
      try { fd = n.accept(this.listenFd); } catch (e) { this.log('warn', `accept: ${(e as Error).message}`); return; }
      if (fd < 0) return;
      // The current front-end may already be gone with its EOF still queued (a client that
      // closes and reconnects at once): process that first, so only a live one causes a refusal.
      this.conn?.poll();
      if (this.conn || this.closed) {
        // vhost-user has one front-end per device: refuse, do not disturb the one we serve.
        this.log('warn', 'refused a second front-end: the device already has one (vhost-user allows one at a time)');
        n.close(fd);
        continue;
      }
      this.connections++;
      this.conn = new Connection(this, fd, this.device!, this.log);
      this.log('info', `front-end connected (#${this.connections})`);
      this.emit('connect');
    }
  }

  private onDeviceEvent(kind: string, queue: number, message: string): void {
    if (kind === 'broken') {
      this.log('error', `dropping front-end: ${message}`);
      this.conn?.drop(message);
    } else if (kind === 'reqerr') {
      this.log('warn', `queue ${queue}: ${message}`);
    } else {
      this.log('warn', message);
    }
  }

  /** Called by a Connection when it ends, for whatever reason. */
  connectionEnded(c: Connection, reason: string): void {
    if (this.conn !== c) return;
    this.conn = undefined;
    native().blkDeviceReset(this.device!);
    this.log('info', `front-end disconnected: ${reason}`);
    this.emit('disconnect', reason);
  }

  /** Per-queue counters and CPU time of the queue threads. */
  stats(): QueueStats[] { return this.device ? native().blkDeviceStats(this.device) : []; }

  /** Stops accepting, drains in-flight requests, flushes the backend, removes the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const n = native();
    this.listenWatch?.stop();
    this.conn?.drop('server shutting down');
    if (this.device) { n.blkDeviceDestroy(this.device); this.device = undefined; }
    try { n.backendFlush(this.options.backend); } catch (e) { this.log('error', `flush: ${(e as Error).message}`); }
    if (this.listenFd >= 0) { n.close(this.listenFd); this.listenFd = -1; }
    try { unlinkSync(this.options.socketPath); } catch { /* already gone */ }
  }

  /** The config space, as served to GET_CONFIG. */
  configSpace(): Buffer { return this.config; }
  maxMemSlots(): number { return MAX_MEM_SLOTS; }
}

/** One front-end's session: message framing, protocol state, replies. */
class Connection {
  private watch?: FdWatch;
  private header = Buffer.alloc(0);
  private hdr?: Header;
  private payload = Buffer.alloc(0);
  private fds: number[] = [];
  private ended = false;
  private features = 0n;
  private featuresSet = false;
  private protocolFeatures = 0n;
  private memRegions = 0;
  private queues: QueueState[];

  constructor(private server: VhostUserBlkServer, private fd: number, private device: BlkDeviceHandle, private log: Logger) {
    this.queues = Array.from({ length: server.options.queues }, () => ({ addrSet: false, kick: 'unset' as const, enabled: false, started: false }));
    this.watch = native().watchFd(fd, true, false, (status) => {
      if (status < 0) { this.drop(`socket error ${status}`); return; }
      this.onReadable();
    });
  }

  drop(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.watch?.stop();
    const n = native();
    for (const f of this.fds) n.close(f);
    this.fds = [];
    n.close(this.fd);
    this.server.connectionEnded(this, reason);
  }

  /** Processes whatever the front-end has sent so far (including an EOF). */
  poll(): void { this.onReadable(); }

  private onReadable(): void {
    const n = native();
    // Read one message part at a time (never past a message's end) so fds stay with their message.
    while (!this.ended) {
      const want = this.hdr ? this.hdr.size - this.payload.length : HEADER_SIZE - this.header.length;
      let r;
      try { r = want > 0 ? n.recvmsg(this.fd, want) : { data: Buffer.alloc(0), fds: [], truncated: false }; }
      catch (e) { this.drop(`receive failed: ${(e as Error).message}`); return; }
      if (r === null) return;
      if (want > 0 && r.data.length === 0) { this.drop(this.hdr || this.header.length ? 'closed in the middle of a message' : 'closed by the front-end'); return; }
      if (r.truncated) { for (const f of r.fds) n.close(f); this.drop('too many file descriptors in one message'); return; }
      this.fds.push(...r.fds);
      if (!this.hdr) {
        this.header = Buffer.concat([this.header, r.data]);
        if (this.header.length < HEADER_SIZE) continue;
        try { this.hdr = decodeHeader(this.header); }
        catch (e) { this.drop(`bad message: ${(e as Error).message}`); return; }
        this.payload = Buffer.alloc(0);
        if (this.hdr.size > 0) continue;
      } else {
        this.payload = Buffer.concat([this.payload, r.data]);
        if (this.payload.length < this.hdr.size) continue;
      }
      const hdr = this.hdr, payload = this.payload, fds = this.fds;
      this.hdr = undefined; this.header = Buffer.alloc(0); this.payload = Buffer.alloc(0); this.fds = [];
      this.dispatch(hdr, payload, fds);
    }
  }

  private send(buf: Buffer): void {
    if (this.ended) return;
    let sent;
    try { sent = native().sendmsg(this.fd, buf); } catch (e) { this.drop(`send failed: ${(e as Error).message}`); return; }
    // Replies are tiny; a front-end that does not read them is broken.
    if (sent !== buf.length) this.drop('front-end is not reading replies');
  }

  private reply(request: number, payload: Buffer): void { this.send(encodeReply(request, payload)); }

  private dispatch(h: Header, p: Buffer, fds: number[]): void {
    const n = native();
    const name = reqName(h.request);
    let result = 0n;   // REPLY_ACK status: 0 ok, non-zero failed
    let replied = false;
    const takeFd = (): number => {
      if (fds.length !== 1) throw new ProtocolError(`${name} carries ${fds.length} fds, expected 1`);
      return fds.shift()!;
    };
    const noFds = (): void => { if (fds.length) throw new ProtocolError(`${name} carries ${fds.length} unexpected fds`); };
    const queueIndex = (i: number): QueueState => {
      const q = this.queues[i];
      if (!q) throw new ProtocolError(`${name} names queue ${i}; the device has ${this.queues.length}`);
      return q;
    };
    try {
      switch (h.request) {
        case Req.GET_FEATURES: noFds(); this.reply(h.request, encodeU64(this.server.featuresOffered)); replied = true; break;
        case Req.SET_FEATURES: {
          noFds();
          const f = decodeU64(name, p);
          const extra = f & ~this.server.featuresOffered;
          if (extra) throw new ProtocolError(`SET_FEATURES acks features never offered: 0x${extra.toString(16)}`);
          this.features = f;
          this.featuresSet = true;
          n.blkDeviceSetFeatures(this.device, f & ~bit(F_PROTOCOL_FEATURES));
          break;
        }
        case Req.SET_OWNER: noFds(); break;
        case Req.RESET_OWNER:
        case Req.RESET_DEVICE:
          noFds();
          n.blkDeviceReset(this.device);
          this.queues.forEach((q) => Object.assign(q, { num: undefined, addrSet: false, kick: 'unset', enabled: false, started: false }));
          this.memRegions = 0;
          this.features = 0n; this.featuresSet = false;
          break;
        case Req.GET_PROTOCOL_FEATURES: noFds(); this.reply(h.request, encodeU64(this.server.protocolFeaturesOffered)); replied = true; break;
        case Req.SET_PROTOCOL_FEATURES: {
          noFds();
          const f = decodeU64(name, p);
          const extra = f & ~this.server.protocolFeaturesOffered;
          if (extra) throw new ProtocolError(`SET_PROTOCOL_FEATURES acks features never offered: 0x${extra.toString(16)}`);
          this.protocolFeatures = f;
          break;
        }
        case Req.GET_QUEUE_NUM: noFds(); this.reply(h.request, encodeU64(this.server.options.queues)); replied = true; break;
        case Req.GET_MAX_MEM_SLOTS: noFds(); this.reply(h.request, encodeU64(this.server.maxMemSlots())); replied = true; break;
        case Req.GET_CONFIG: {
          noFds();
          const a = decodeConfig(name, p);
          const data = Buffer.alloc(a.size);
          this.server.configSpace().copy(data, 0, Math.min(a.offset, BLK_CONFIG_SIZE), Math.min(a.offset + a.size, BLK_CONFIG_SIZE));
          this.reply(h.request, encodeConfig({ ...a, data }));
          replied = true;
          break;
        }
        case Req.SET_CONFIG:
          // No writable field is offered (no CONFIG_WCE): accept and ignore, as the spec allows.
          noFds();
          decodeConfig(name, p);
          break;
        case Req.SET_MEM_TABLE: {
          const regions = decodeMemTable(p);
          if (fds.length !== regions.length) throw new ProtocolError(`SET_MEM_TABLE has ${regions.length} regions but ${fds.length} fds`);
          const given = fds.splice(0);
          try {
            n.blkDeviceSetMemTable(this.device, regions.map((r, i) => ({ ...r, fd: given[i] })));
          } catch (e) { throw new ProtocolError(`SET_MEM_TABLE: ${(e as Error).message}`); }
          this.memRegions = regions.length;
          this.startReadyQueues();
          break;
        }
        case Req.ADD_MEM_REG: {
          const r = decodeSingleRegion(name, p);
          const fd = takeFd();
          if (this.memRegions >= this.server.maxMemSlots()) { n.close(fd); throw new ProtocolError(`ADD_MEM_REG beyond ${this.server.maxMemSlots()} slots`); }
          try { n.blkDeviceAddMemRegion(this.device, { ...r, fd }); }
          catch (e) { throw new ProtocolError(`ADD_MEM_REG: ${(e as Error).message}`); }
          this.memRegions++;
          this.startReadyQueues();
          break;
        }
        case Req.REM_MEM_REG: {
          const r = decodeSingleRegion(name, p);
          for (const f of fds.splice(0)) n.close(f);   // QEMU sends the region's fd along; we need only the range
          if (n.blkDeviceRemoveMemRegion(this.device, { ...r, fd: -1 })) this.memRegions--;
          else result = 1n;
          break;
        }
        case Req.SET_VRING_NUM: {
          noFds();
          const s = decodeVringState(name, p);
          const q = queueIndex(s.index);
          if (s.num === 0 || s.num > this.server.options.queueSize || (s.num & (s.num - 1))) {
            throw new ProtocolError(`SET_VRING_NUM ${s.num} for queue ${s.index}: must be a power of 2 up to ${this.server.options.queueSize}`);
          }
          this.stopQueue(s.index);
          q.num = s.num;
          n.blkDeviceSetVring(this.device, s.index, { num: s.num });
          break;
        }
        case Req.SET_VRING_BASE: {
          noFds();
          const s = decodeVringState(name, p);
          queueIndex(s.index);
          if (s.num > 0xffff) throw new ProtocolError(`SET_VRING_BASE ${s.num} is not a 16-bit ring index`);
          this.stopQueue(s.index);
          n.blkDeviceSetVring(this.device, s.index, { base: s.num });
          break;
        }
        case Req.SET_VRING_ADDR: {
          noFds();
          const a = decodeVringAddr(p);
          const q = queueIndex(a.index);
          this.stopQueue(a.index);
          // rings outside the memory table are refused here (the connection drops with the reason)
          try { n.blkDeviceSetVring(this.device, a.index, { desc: a.desc, avail: a.avail, used: a.used }); }
          catch (e) { q.addrSet = false; throw new ProtocolError(`SET_VRING_ADDR for queue ${a.index}: ${(e as Error).message}`); }
          q.addrSet = true;
          this.maybeStart(a.index);
          break;
        }
        case Req.GET_VRING_BASE: {
          noFds();
          const s = decodeVringState(name, p);
          const q = queueIndex(s.index);
          const base = n.blkDeviceStopQueue(this.device, s.index);
          q.started = false;
          // Per the spec the ring is stopped now; it restarts on the next kick fd.
          q.kick = 'unset';
          this.reply(h.request, encodeVringState({ index: s.index, num: base }));
          replied = true;
          break;
        }
        case Req.SET_VRING_KICK:
        case Req.SET_VRING_CALL:
        case Req.SET_VRING_ERR: {
          const v = decodeVringFile(name, p);
          const q = queueIndex(v.index);
          let fd = -1;
          if (v.noFd) noFds(); else fd = takeFd();
          const kind = h.request === Req.SET_VRING_KICK ? 'kick' : h.request === Req.SET_VRING_CALL ? 'call' : 'err';
          try { n.blkDeviceSetVringFd(this.device, v.index, kind, fd); }
          catch (e) { throw new ProtocolError(`${name}: ${(e as Error).message}`); }
          if (kind === 'kick') {
            q.kick = v.noFd ? 'nofd' : 'fd';
            // Without protocol features a ring starts enabled (vhost-user.rst, "Ring states").
            if (!(this.features & bit(F_PROTOCOL_FEATURES))) q.enabled = true;
            this.maybeStart(v.index);
          }
          break;
        }
        case Req.SET_VRING_ENABLE: {
          noFds();
          const s = decodeVringState(name, p);
          const q = queueIndex(s.index);
          if (s.num > 1) throw new ProtocolError(`SET_VRING_ENABLE ${s.num}: must be 0 or 1`);
          q.enabled = s.num === 1;
          if (q.enabled) this.maybeStart(s.index); else this.stopQueue(s.index);
          break;
        }
        default:
          // Not offered (logging, inflight, status, backend channel...) or unknown: fail this request.
          for (const f of fds.splice(0)) n.close(f);
          this.log('warn', `unsupported request ${name} (${p.length}-byte payload): failed`);
          result = 1n;
          if (h.request === Req.GET_VRING_BASE || h.request === Req.GET_FEATURES) break;
          break;
      }
      if (fds.length) throw new ProtocolError(`${name} carries ${fds.length} unexpected fds`);
    } catch (e) {
      for (const f of fds) n.close(f);
      if (e instanceof ProtocolError) { this.drop(`${e.message}`); return; }
      this.drop(`${name} failed: ${(e as Error).message}`);
      return;
    }
    if (!replied && (h.flags & FLAG_NEED_REPLY) && (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK))) {
      this.reply(h.request, encodeU64(result));
    }
  }

  private stopQueue(i: number): void {
    const q = this.queues[i];
    if (q.started) { native().blkDeviceStopQueue(this.device, i); q.started = false; }
  }

  private maybeStart(i: number): void {
    const q = this.queues[i];
    if (q.started || !q.enabled || q.kick === 'unset' || !q.addrSet || !q.num || this.memRegions === 0) return;
    try {
      native().blkDeviceStartQueue(this.device, i);
      q.started = true;
    } catch (e) {
      throw new ProtocolError(`queue ${i} cannot start: ${(e as Error).message}`);
    }
  }

  private startReadyQueues(): void {
    for (let i = 0; i < this.queues.length; i++) this.maybeStart(i);
  }
}
