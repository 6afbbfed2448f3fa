// One front-end's vhost-user session as a pure state machine: a decoded message in, replies and
// device actions out. It owns the protocol-level state — negotiated features, protocol features,
// how many memory regions are mapped, and for each ring whether its size, addresses and kick fd
// were given, whether it is enabled, and whether it runs — and decides from it when a ring starts
// or stops (vhost-user.rst, "Ring states"). It never touches a socket or the addon: the data plane
// is reached through the SessionDevice interface (the native vhost-user-blk device in server.ts, a
// recording fake in the unit tests), and file descriptors it does not hand to the device are given
// back to the caller to close.
import { BLK_CONFIG_SIZE, bit } from '../../proto/virtio-blk.js';
import {
  F_PROTOCOL_FEATURES,
  FLAG_NEED_REPLY,
  ProtocolError,
  ProtocolFeature,
  Req,
  decodeConfig,
  decodeInflight,
  decodeMemTable,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeInflight,
  encodeReply,
  encodeU64,
  encodeVringState,
  reqName,
  type Header,
  type GuestRegion,
} from '../../proto/vhost-user.js';

export type LogLevel = 'info' | 'warn' | 'error';
export type Logger = (level: LogLevel, message: string) => void;

/** A region of the front-end's memory with the fd that maps it; the device owns the fd once given. */
export interface MappedGuestRegion extends GuestRegion {
  fd: number;
}

/**
 * What the session asks of the data plane. Calls that fail throw (the session then drops the
 * front-end); fds passed in belong to the device from then on, even when the call throws.
 */
export interface SessionDevice {
  reset(): void;
  setFeatures(features: bigint): void;
  setMemTable(regions: MappedGuestRegion[]): void;
  addMemRegion(region: MappedGuestRegion): void;
  /** false when no mapped region matches. */
  removeMemRegion(region: GuestRegion): boolean;
  setVring(index: number, v: { num?: number; base?: number; desc?: bigint; avail?: bigint; used?: bigint }): void;
  setVringFd(index: number, kind: 'kick' | 'call' | 'err', fd: number): void;
  startQueue(index: number): void;
  /** Stops the ring after its in-flight requests complete; returns the next avail index. */
  stopQueue(index: number): number;
  /** GET_INFLIGHT_FD (devices with inflight tracking): a new buffer; its fd stays the device's. */
  getInflight?(numQueues: number, queueSize: number): { fd: number; mmapSize: number; mmapOffset: number };
  /** SET_INFLIGHT_FD: the front-end's buffer; the device owns fd from then on, even when this throws. */
  setInflight?(b: { fd: number; mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number }): void;
}

/** What the device offers; fixed for the life of the export. */
export interface SessionConfig {
  queues: number;
  /** Largest ring a front-end may ask for. */
  queueSize: number;
  features: bigint;
  protocolFeatures: bigint;
  /** The virtio config space served to GET_CONFIG. */
  configSpace: Buffer;
  maxMemSlots: number;
}

export interface Message {
  header: Header;
  payload: Buffer;
  fds: number[];
}

/** What handling one message produced: replies to send in order, fds to close, and whether to drop the front-end. */
export interface Outcome {
  replies: Buffer[];
  /** fds sent with the first reply (GET_INFLIGHT_FD); they stay their owner's, the caller does not close them. */
  replyFds?: number[];
  closeFds: number[];
  drop?: string;
}

/** A ring's protocol state. The ring's contents (addresses, base, fds, thread) live in the device. */
export interface RingState {
  num?: number;
  addrSet: boolean;
  kick: 'unset' | 'fd' | 'nofd';
  enabled: boolean;
  started: boolean;
}

const freshRing = (): RingState => ({ num: undefined, addrSet: false, kick: 'unset', enabled: false, started: false });

export class VhostUserSession {
  private features = 0n;
  private protocolFeatures = 0n;
  private memRegions = 0;
  private readonly rings: RingState[];

  constructor(
    private readonly cfg: SessionConfig,
    private readonly device: SessionDevice,
    private readonly log: Logger = () => {},
  ) {
    this.rings = Array.from({ length: cfg.queues }, freshRing);
  }

  /** A copy of ring i's state, for tests and diagnostics. */
  ring(i: number): RingState {
    return { ...this.rings[i] };
  }
  get negotiatedFeatures(): bigint {
    return this.features;
  }
  get negotiatedProtocolFeatures(): bigint {
    return this.protocolFeatures;
  }
  get mappedRegions(): number {
    return this.memRegions;
  }

  /** Handles one whole message. A protocol violation or a failed device action gives `drop`. */
  handle(msg: Message): Outcome {
    const out: Outcome = { replies: [], closeFds: [] };
    const h = msg.header,
      p = msg.payload,
      fds = [...msg.fds];
    const name = reqName(h.request);
    let result = 0n; // REPLY_ACK status: 0 ok, non-zero failed
    let replied = false;
    const reply = (payload: Buffer): void => {
      out.replies.push(encodeReply(h.request, payload));
      replied = true;
    };
    const takeFd = (): number => {
      if (fds.length !== 1) throw new ProtocolError(`${name} carries ${fds.length} fds, expected 1`);
      return fds.shift()!;
    };
    const noFds = (): void => {
      if (fds.length) throw new ProtocolError(`${name} carries ${fds.length} unexpected fds`);
    };
    const queueIndex = (i: number): RingState => {
      const q = this.rings[i];
      if (!q) throw new ProtocolError(`${name} names queue ${i}; the device has ${this.rings.length}`);
      return q;
    };
    try {
      switch (h.request) {
        case Req.GET_FEATURES:
          noFds();
          reply(encodeU64(this.cfg.features));
          break;
        case Req.SET_FEATURES: {
          noFds();
          const f = decodeU64(name, p);
          const extra = f & ~this.cfg.features;
          if (extra) throw new ProtocolError(`SET_FEATURES acks features never offered: 0x${extra.toString(16)}`);
          this.features = f;
          this.device.setFeatures(f & ~bit(F_PROTOCOL_FEATURES));
          break;
        }
        case Req.SET_OWNER:
          noFds();
          break;
        case Req.RESET_OWNER:
        case Req.RESET_DEVICE:
          noFds();
          this.device.reset();
          this.rings.forEach((q) => Object.assign(q, freshRing()));
          this.memRegions = 0;
          this.features = 0n;
          break;
        case Req.GET_PROTOCOL_FEATURES:
          noFds();
          reply(encodeU64(this.cfg.protocolFeatures));
          break;
        case Req.SET_PROTOCOL_FEATURES: {
          noFds();
          const f = decodeU64(name, p);
          const extra = f & ~this.cfg.protocolFeatures;
          if (extra)
            throw new ProtocolError(`SET_PROTOCOL_FEATURES acks features never offered: 0x${extra.toString(16)}`);
          this.protocolFeatures = f;
          break;
        }
        case Req.GET_QUEUE_NUM:
          noFds();
          reply(encodeU64(this.cfg.queues));
          break;
        case Req.GET_MAX_MEM_SLOTS:
          noFds();
          reply(encodeU64(this.cfg.maxMemSlots));
          break;
        case Req.GET_CONFIG: {
          noFds();
          const a = decodeConfig(name, p);
          const data = Buffer.alloc(a.size);
          this.cfg.configSpace.copy(
            data,
            0,
            Math.min(a.offset, BLK_CONFIG_SIZE),
            Math.min(a.offset + a.size, BLK_CONFIG_SIZE),
          );
          reply(encodeConfig({ ...a, data }));
          break;
        }
        case Req.SET_CONFIG:
          // No writable field is offered (no CONFIG_WCE): accept and ignore, as the spec allows.
          noFds();
          decodeConfig(name, p);
          break;
        case Req.SET_MEM_TABLE: {
          const regions = decodeMemTable(p);
          if (fds.length !== regions.length)
            throw new ProtocolError(`SET_MEM_TABLE has ${regions.length} regions but ${fds.length} fds`);
          const given = fds.splice(0);
          try {
            this.device.setMemTable(regions.map((r, i) => ({ ...r, fd: given[i] })));
          } catch (e) {
            throw new ProtocolError(`SET_MEM_TABLE: ${(e as Error).message}`);
          }
          this.memRegions = regions.length;
          this.startReadyQueues();
          break;
        }
        case Req.ADD_MEM_REG: {
          const r = decodeSingleRegion(name, p);
          const fd = takeFd();
          if (this.memRegions >= this.cfg.maxMemSlots) {
            out.closeFds.push(fd);
            throw new ProtocolError(`ADD_MEM_REG beyond ${this.cfg.maxMemSlots} slots`);
          }
          try {
            this.device.addMemRegion({ ...r, fd });
          } catch (e) {
            throw new ProtocolError(`ADD_MEM_REG: ${(e as Error).message}`);
          }
          this.memRegions++;
          this.startReadyQueues();
          break;
        }
        case Req.REM_MEM_REG: {
          const r = decodeSingleRegion(name, p);
          out.closeFds.push(...fds.splice(0)); // QEMU sends the region's fd along; we need only the range
          if (this.device.removeMemRegion(r)) this.memRegions--;
          else result = 1n;
          break;
        }
        case Req.SET_VRING_NUM: {
          noFds();
          const s = decodeVringState(name, p);
          const q = queueIndex(s.index);
          if (s.num === 0 || s.num > this.cfg.queueSize || s.num & (s.num - 1)) {
            throw new ProtocolError(
              `SET_VRING_NUM ${s.num} for queue ${s.index}: must be a power of 2 up to ${this.cfg.queueSize}`,
            );
          }
          this.stopQueue(s.index);
          q.num = s.num;
          this.device.setVring(s.index, { num: s.num });
          break;
        }
        case Req.SET_VRING_BASE: {
          noFds();
          const s = decodeVringState(name, p);
          queueIndex(s.index);
          if (s.num > 0xffff) throw new ProtocolError(`SET_VRING_BASE ${s.num} is not a 16-bit ring index`);
          this.stopQueue(s.index);
          this.device.setVring(s.index, { base: s.num });
          break;
        }
        case Req.SET_VRING_ADDR: {
          noFds();
          const a = decodeVringAddr(p);
          const q = queueIndex(a.index);
          this.stopQueue(a.index);
          // rings outside the memory table are refused here (the connection drops with the reason)
          try {
            this.device.setVring(a.index, { desc: a.desc, avail: a.avail, used: a.used });
          } catch (e) {
            q.addrSet = false;
            throw new ProtocolError(`SET_VRING_ADDR for queue ${a.index}: ${(e as Error).message}`);
          }
          q.addrSet = true;
          this.maybeStart(a.index);
          break;
        }
        case Req.GET_VRING_BASE: {
          noFds();
          const s = decodeVringState(name, p);
          const q = queueIndex(s.index);
          const base = this.device.stopQueue(s.index);
          q.started = false;
          // Per the spec the ring is stopped now; it restarts on the next kick fd.
          q.kick = 'unset';
          reply(encodeVringState({ index: s.index, num: base }));
          break;
        }
        case Req.SET_VRING_KICK:
        case Req.SET_VRING_CALL:
        case Req.SET_VRING_ERR: {
          const v = decodeVringFile(name, p);
          const q = queueIndex(v.index);
          let fd = -1;
          if (v.noFd) noFds();
          else fd = takeFd();
          const kind = h.request === Req.SET_VRING_KICK ? 'kick' : h.request === Req.SET_VRING_CALL ? 'call' : 'err';
          try {
            this.device.setVringFd(v.index, kind, fd);
          } catch (e) {
            throw new ProtocolError(`${name}: ${(e as Error).message}`);
          }
          if (kind === 'kick') {
            q.kick = v.noFd ? 'nofd' : 'fd';
            // Without protocol features a ring starts enabled (vhost-user.rst, "Ring states").
            if (!(this.features & bit(F_PROTOCOL_FEATURES))) q.enabled = true;
            this.maybeStart(v.index);
          }
          break;
        }
        case Req.GET_INFLIGHT_FD: {
          noFds();
          const want = decodeInflight(name, p);
          if (!(this.protocolFeatures & bit(ProtocolFeature.INFLIGHT_SHMFD)) || !this.device.getInflight)
            throw new ProtocolError(`${name} without the INFLIGHT_SHMFD protocol feature`);
          if (want.numQueues > this.rings.length)
            throw new ProtocolError(`${name} for ${want.numQueues} queues; the device has ${this.rings.length}`);
          if (want.queueSize > this.cfg.queueSize)
            throw new ProtocolError(`${name} for rings of ${want.queueSize}; at most ${this.cfg.queueSize}`);
          let got;
          try {
            got = this.device.getInflight(want.numQueues, want.queueSize);
          } catch (e) {
            throw new ProtocolError(`${name}: ${(e as Error).message}`);
          }
          reply(encodeInflight({ ...want, mmapSize: got.mmapSize, mmapOffset: got.mmapOffset }));
          out.replyFds = [got.fd];
          break;
        }
        case Req.SET_INFLIGHT_FD: {
          const b = decodeInflight(name, p);
          const fd = takeFd();
          if (!(this.protocolFeatures & bit(ProtocolFeature.INFLIGHT_SHMFD)) || !this.device.setInflight) {
            out.closeFds.push(fd);
            throw new ProtocolError(`${name} without the INFLIGHT_SHMFD protocol feature`);
          }
          if (b.numQueues > this.rings.length) {
            out.closeFds.push(fd);
            throw new ProtocolError(`${name} for ${b.numQueues} queues; the device has ${this.rings.length}`);
          }
          try {
            this.device.setInflight({ ...b, fd });
          } catch (e) {
            throw new ProtocolError(`${name}: ${(e as Error).message}`);
          }
          break;
        }
        case Req.SET_VRING_ENABLE: {
          noFds();
          const s = decodeVringState(name, p);
          const q = queueIndex(s.index);
          if (s.num > 1) throw new ProtocolError(`SET_VRING_ENABLE ${s.num}: must be 0 or 1`);
          q.enabled = s.num === 1;
          if (q.enabled) this.maybeStart(s.index);
          else this.stopQueue(s.index);
          break;
        }
        default:
          // Not offered (logging, inflight, status, backend channel...) or unknown: fail this request.
          out.closeFds.push(...fds.splice(0));
          this.log('warn', `unsupported request ${name} (${p.length}-byte payload): failed`);
          result = 1n;
          break;
      }
      if (fds.length) throw new ProtocolError(`${name} carries ${fds.length} unexpected fds`);
    } catch (e) {
      out.closeFds.push(...fds);
      out.drop = e instanceof ProtocolError ? e.message : `${name} failed: ${(e as Error).message}`;
      return out;
    }
    if (!replied && h.flags & FLAG_NEED_REPLY && this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) {
      out.replies.push(encodeReply(h.request, encodeU64(result)));
    }
    return out;
  }

  private stopQueue(i: number): void {
    const q = this.rings[i];
    if (q.started) {
      this.device.stopQueue(i);
      q.started = false;
    }
  }

  /** A ring runs once it is enabled and has a kick (or no-fd polling), addresses, a size and memory. */
  private maybeStart(i: number): void {
    const q = this.rings[i];
    if (q.started || !q.enabled || q.kick === 'unset' || !q.addrSet || !q.num || this.memRegions === 0) return;
    try {
      this.device.startQueue(i);
      q.started = true;
    } catch (e) {
      throw new ProtocolError(`queue ${i} cannot start: ${(e as Error).message}`);
    }
  }

  private startReadyQueues(): void {
    for (let i = 0; i < this.rings.length; i++) this.maybeStart(i);
  }
}
