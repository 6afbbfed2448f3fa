// The vhost-user FRONT-END control plane (what QEMU and libblkio do): connect to a back-end's
// socket, negotiate features, hand over guest memory and vrings, read the device config.
// Synchronous and bounded: every wait for a reply has a deadline (waitReadable), so a dead or
// silent back-end is an error, never a hang. Also exposes raw sends for tests that must send
// what a well-behaved front-end never would.
import { native } from '../native.js';
import {
  F_PROTOCOL_FEATURES,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  MAX_PAYLOAD,
  ProtocolFeature,
  Req,
  VERSION,
  decodeHeader,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeMemTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  reqName,
  type Header,
  type GuestRegion,
  type VringAddr,
} from '../proto/vhost-user.js';

/** A front-end operation failed; `request` names the message it was about, when there is one. */
export class FrontendError extends Error {
  readonly request?: string;
  constructor(message: string, request?: number, options?: { cause?: unknown }) {
    super(request === undefined ? message : `${reqName(request)}: ${message}`, options);
    this.name = 'FrontendError';
    if (request !== undefined) this.request = reqName(request);
  }
}

/** The back-end closed the connection (or reset it). */
export class BackendClosedError extends FrontendError {
  constructor(message: string, request?: number) {
    super(message, request);
    this.name = 'BackendClosedError';
  }
}

/** No reply within the deadline. */
export class FrontendTimeoutError extends FrontendError {
  constructor(message: string, request?: number) {
    super(message, request);
    this.name = 'FrontendTimeoutError';
  }
}

export interface Message {
  header: Header;
  payload: Buffer;
  fds: number[];
}

/** A memory region and the fd that backs it (mmapOffset is the region's offset in that fd). */
export interface FrontendMemRegion extends GuestRegion {
  fd: number;
}

export interface SendOptions {
  fds?: number[];
  /** Sets NEED_REPLY and waits for the u64 ack (only if REPLY_ACK was negotiated, unless forced). */
  ack?: boolean;
  /** Extra flag bits OR'ed into the header (tests). */
  flags?: number;
}

export interface FrontendOptions {
  /** Deadline for each reply, in milliseconds (default 5000). */
  timeoutMs?: number;
}

export interface NegotiatedFeatures {
  features: bigint;
  protocolFeatures: bigint;
  offered: bigint;
  protocolOffered: bigint;
}

export class VhostUserFrontend {
  readonly fd: number;
  readonly socketPath: string;
  timeoutMs: number;
  /** Features acknowledged with SET_FEATURES / SET_PROTOCOL_FEATURES so far. */
  features = 0n;
  protocolFeatures = 0n;
  private closed = false;

  private constructor(fd: number, socketPath: string, opts: FrontendOptions) {
    this.fd = fd;
    this.socketPath = socketPath;
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  /** Connects to a back-end's Unix socket. */
  static connect(socketPath: string, opts: FrontendOptions = {}): VhostUserFrontend {
    let fd: number;
    try {
      fd = native().unixConnect(socketPath);
    } catch (e) {
      throw new FrontendError(`cannot connect to ${socketPath}: ${(e as Error).message}`, undefined, { cause: e });
    }
    // Non-blocking, so that a back-end that stops reading cannot block a send forever.
    native().setNonBlocking(fd, true);
    return new VhostUserFrontend(fd, socketPath, opts);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Closes our end. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native().close(this.fd);
  }

  private get replyAck(): boolean {
    return (this.protocolFeatures & (1n << BigInt(ProtocolFeature.REPLY_ACK))) !== 0n;
  }

  // ---- raw transport ------------------------------------------------------------------------

  /** Sends bytes as they are (any header, any size) with optional fds, in one sendmsg. */
  sendRaw(bytes: Buffer, fds: number[] = [], timeoutMs = this.timeoutMs): void {
    if (this.closed) throw new FrontendError('connection is closed');
    // A stream socket carries fds only along with at least one byte.
    if (bytes.length === 0) throw new FrontendError('nothing to send');
    const n = native();
    const deadline = Date.now() + timeoutMs;
    let off = 0;
    while (off < bytes.length) {
      let sent: number;
      // fds ride with the first byte only, as the back-end expects them with the header.
      try {
        sent = n.sendmsg(this.fd, bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        const m = (e as Error).message;
        if (/EPIPE|ECONNRESET|Broken pipe|reset by peer/i.test(m)) throw new BackendClosedError(`send failed: ${m}`);
        throw new FrontendError(`send failed: ${m}`, undefined, { cause: e });
      }
      if (sent < 0) {
        if (Date.now() > deadline)
          throw new FrontendTimeoutError(
            `back-end did not take ${bytes.length - off} more bytes within ${timeoutMs} ms`,
          );
        sleepMs(1);
        continue;
      }
      off += sent;
    }
  }

  /** Sends one message (header built here); never waits for a reply. */
  send(request: number, payload: Buffer = Buffer.alloc(0), opts: { fds?: number[]; flags?: number } = {}): void {
    if (payload.length > MAX_PAYLOAD)
      throw new FrontendError(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`, request);
    this.sendRaw(encodeMessage(request, payload, VERSION | (opts.flags ?? 0)), opts.fds ?? []);
  }

  /** Reads exactly len bytes (collecting any fds) before the deadline. */
  private readExact(len: number, deadline: number, request: number | undefined, fds: number[]): Buffer {
    const n = native();
    const parts: Buffer[] = [];
    let got = 0;
    while (got < len) {
      const left = deadline - Date.now();
      if (left <= 0 || !n.waitReadable(this.fd, left)) {
        throw new FrontendTimeoutError(`no reply within ${this.timeoutMs} ms (${got} of ${len} bytes)`, request);
      }
      let r;
      try {
        r = n.recvmsg(this.fd, len - got);
      } catch (e) {
        throw new BackendClosedError(`receive failed: ${(e as Error).message}`, request);
      }
      if (r === null) continue;
      fds.push(...r.fds);
      if (r.data.length === 0) {
        for (const f of fds) n.close(f);
        throw new BackendClosedError(
          got || parts.length ? 'back-end closed in the middle of a reply' : 'back-end closed the connection',
          request,
        );
      }
      parts.push(r.data);
      got += r.data.length;
    }
    return Buffer.concat(parts, len);
  }

  /** Receives one message from the back-end; `request` is only for error messages. */
  receive(timeoutMs = this.timeoutMs, request?: number): Message {
    if (this.closed) throw new FrontendError('connection is closed', request);
    const deadline = Date.now() + timeoutMs;
    const fds: number[] = [];
    const hb = this.readExact(HEADER_SIZE, deadline, request, fds);
    let header: Header;
    try {
      header = decodeHeader(hb);
    } catch (e) {
      throw new FrontendError(`bad reply: ${(e as Error).message}`, request, { cause: e });
    }
    const payload = header.size ? this.readExact(header.size, deadline, request, fds) : Buffer.alloc(0);
    return { header, payload, fds };
  }

  /** Receives the reply to `request`; a reply to anything else is a protocol error. */
  private receiveReply(request: number): Buffer {
    const m = this.receive(this.timeoutMs, request);
    for (const f of m.fds) native().close(f);
    if (m.header.request !== request)
      throw new FrontendError(`got a reply to ${reqName(m.header.request)} instead`, request);
    if (!(m.header.flags & FLAG_REPLY)) throw new FrontendError('reply lacks the REPLY flag', request);
    return m.payload;
  }

  /**
   * Waits until the back-end closes the connection, discarding anything it sends meanwhile.
   * Returns true if it closed within timeoutMs, false if it is still open.
   */
  waitClosed(timeoutMs: number): boolean {
    if (this.closed) return true;
    const n = native();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || !n.waitReadable(this.fd, left)) return false;
      let r;
      try {
        r = n.recvmsg(this.fd, 65536);
      } catch {
        return true;
      } // ECONNRESET: closed
      if (r === null) continue;
      for (const f of r.fds) n.close(f);
      if (r.data.length === 0) return true;
    }
  }

  // ---- requests --------------------------------------------------------------------------

  /**
   * Sends a message that has no reply of its own. With REPLY_ACK negotiated (or opts.ack true),
   * sets NEED_REPLY and waits for the ack; a non-zero ack throws.
   */
  request(request: number, payload: Buffer = Buffer.alloc(0), opts: SendOptions = {}): void {
    const ack = opts.ack ?? this.replyAck;
    this.send(request, payload, { fds: opts.fds, flags: (opts.flags ?? 0) | (ack ? FLAG_NEED_REPLY : 0) });
    if (!ack) return;
    const v = decodeReplyU64(request, this.receiveReply(request));
    if (v !== 0n) throw new FrontendError(`back-end failed the request (ack ${v})`, request);
  }

  /** Sends a message that has a reply (GET_*) and returns the reply payload. */
  query(request: number, payload: Buffer = Buffer.alloc(0), fds: number[] = []): Buffer {
    this.send(request, payload, { fds });
    return this.receiveReply(request);
  }

  getFeatures(): bigint {
    return decodeReplyU64(Req.GET_FEATURES, this.query(Req.GET_FEATURES));
  }
  setFeatures(f: bigint): void {
    // REPLY_ACK is not known to apply before protocol features are set; QEMU sends it without.
    this.request(Req.SET_FEATURES, encodeU64(f));
    this.features = f;
  }
  getProtocolFeatures(): bigint {
    return decodeReplyU64(Req.GET_PROTOCOL_FEATURES, this.query(Req.GET_PROTOCOL_FEATURES));
  }
  setProtocolFeatures(f: bigint): void {
    this.send(Req.SET_PROTOCOL_FEATURES, encodeU64(f));
    this.protocolFeatures = f;
  }
  setOwner(): void {
    this.request(Req.SET_OWNER);
  }
  resetOwner(): void {
    this.request(Req.RESET_OWNER);
  }
  resetDevice(): void {
    this.request(Req.RESET_DEVICE);
  }
  getQueueNum(): number {
    return Number(decodeReplyU64(Req.GET_QUEUE_NUM, this.query(Req.GET_QUEUE_NUM)));
  }
  getMaxMemSlots(): number {
    return Number(decodeReplyU64(Req.GET_MAX_MEM_SLOTS, this.query(Req.GET_MAX_MEM_SLOTS)));
  }

  /** GET_CONFIG: `size` bytes of the device config space from `offset`. */
  getConfig(offset: number, size: number): Buffer {
    const p = this.query(Req.GET_CONFIG, encodeConfig({ offset, size, flags: 0, data: Buffer.alloc(size) }));
    if (p.length !== 12 + size)
      throw new FrontendError(`reply is ${p.length} bytes, expected ${12 + size}`, Req.GET_CONFIG);
    if (p.readUInt32LE(0) !== offset || p.readUInt32LE(4) !== size) {
      throw new FrontendError(`reply is for offset ${p.readUInt32LE(0)} size ${p.readUInt32LE(4)}`, Req.GET_CONFIG);
    }
    return Buffer.from(p.subarray(12));
  }

  /** SET_MEM_TABLE: replaces the whole table; one fd per region. */
  setMemTable(regions: FrontendMemRegion[]): void {
    this.request(Req.SET_MEM_TABLE, encodeMemTable(regions), { fds: regions.map((r) => r.fd) });
  }
  addMemRegion(r: FrontendMemRegion): void {
    this.request(Req.ADD_MEM_REG, encodeSingleRegion(r), { fds: [r.fd] });
  }
  removeMemRegion(r: GuestRegion): void {
    this.request(Req.REM_MEM_REG, encodeSingleRegion(r));
  }

  setVringNum(index: number, num: number): void {
    this.request(Req.SET_VRING_NUM, encodeVringState({ index, num }));
  }
  setVringBase(index: number, base: number): void {
    this.request(Req.SET_VRING_BASE, encodeVringState({ index, num: base }));
  }
  /** Ring addresses are in the front-end's address space (the regions' userAddr), per the spec. */
  setVringAddr(a: Omit<VringAddr, 'flags' | 'log'> & { flags?: number; log?: bigint }): void {
    this.request(Req.SET_VRING_ADDR, encodeVringAddr({ flags: 0, log: 0n, ...a }));
  }
  /** GET_VRING_BASE stops the ring and returns the next avail index the back-end would process. */
  getVringBase(index: number): number {
    const p = this.query(Req.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    let s;
    try {
      s = decodeVringState('GET_VRING_BASE reply', p);
    } catch (e) {
      throw new FrontendError((e as Error).message, Req.GET_VRING_BASE);
    }
    if (s.index !== index) throw new FrontendError(`reply is for ring ${s.index}`, Req.GET_VRING_BASE);
    return s.num;
  }
  /** fd undefined: no eventfd (the back-end polls / does not notify). */
  setVringKick(index: number, fd?: number): void {
    this.vringFile(Req.SET_VRING_KICK, index, fd);
  }
  setVringCall(index: number, fd?: number): void {
    this.vringFile(Req.SET_VRING_CALL, index, fd);
  }
  setVringErr(index: number, fd?: number): void {
    this.vringFile(Req.SET_VRING_ERR, index, fd);
  }
  private vringFile(request: number, index: number, fd?: number): void {
    this.request(request, encodeVringFile(index, fd === undefined), { fds: fd === undefined ? [] : [fd] });
  }
  setVringEnable(index: number, enable: boolean): void {
    this.request(Req.SET_VRING_ENABLE, encodeVringState({ index, num: enable ? 1 : 0 }));
  }

  /**
   * The usual opening: GET_FEATURES, SET_FEATURES (wanted ∩ offered, plus PROTOCOL_FEATURES when
   * offered), GET/SET_PROTOCOL_FEATURES (wanted ∩ offered), SET_OWNER. Throws if a `required` bit
   * is not offered.
   */
  negotiate(want: { features: bigint; protocolFeatures?: bigint; required?: bigint }): NegotiatedFeatures {
    const offered = this.getFeatures();
    const missing = (want.required ?? 0n) & ~offered;
    if (missing)
      throw new FrontendError(`back-end does not offer required features 0x${missing.toString(16)}`, Req.GET_FEATURES);
    const pf = 1n << BigInt(F_PROTOCOL_FEATURES);
    let protocolOffered = 0n,
      protocolFeatures = 0n;
    const features = (want.features | pf) & offered;
    if (offered & pf) {
      protocolOffered = this.getProtocolFeatures();
      protocolFeatures = (want.protocolFeatures ?? 0n) & protocolOffered;
      this.setProtocolFeatures(protocolFeatures);
    }
    this.setFeatures(features);
    this.setOwner();
    return { features, protocolFeatures, offered, protocolOffered };
  }
}

function decodeReplyU64(request: number, p: Buffer): bigint {
  try {
    return decodeU64(`${reqName(request)} reply`, p);
  } catch (e) {
    throw new FrontendError((e as Error).message, request);
  }
}

/** Blocks the thread briefly (used only while a send would block). */
function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
