// The vhost-user-blk export: wires the transport (socket, framing, fds), one session per front-end
// (the protocol state machine) and the native vhost-user-blk device (queue threads, memory table,
// rings). One front-end at a time, as vhost-user has it; when it goes away the device is reset and
// the next one is served. Nothing here runs per I/O.
import { EventEmitter } from 'node:events';
import {
  native,
  type BackendHandle,
  type BlkDeviceHandle,
  type CompletionMode,
  type QueueStats,
} from '../../native.js';
import { VIRTIO_BLK_F, VIRTIO_F, bit, encodeBlkConfig } from '../../proto/virtio-blk.js';
import { F_PROTOCOL_FEATURES, ProtocolFeature } from '../../proto/vhost-user.js';
import { eventLevel } from '../events.js';
import { VhostUserSession, type Logger, type SessionDevice } from './session.js';
import { VhostUserConnection, VhostUserListener } from './transport.js';

export type { LogLevel, Logger } from './session.js';
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
  /**
   * Offer inflight I/O tracking (INFLIGHT_SHMFD), so a restarted server resubmits what the previous one
   * had in flight. Default on; STOR_VHOST_USER_INFLIGHT=off in the environment switches it off (to
   * show what goes wrong without it).
   */
  inflight?: boolean;
  log?: Logger;
}

/** Memory slots offered through GET_MAX_MEM_SLOTS (the native table holds 64). */
const MAX_MEM_SLOTS = 32;
const MAX_DISCARD_SECTORS = 1 << 22;

/** The native device as a session sees it. */
function nativeSessionDevice(d: BlkDeviceHandle): SessionDevice {
  const n = native();
  return {
    reset: () => n.blkDeviceReset(d),
    setFeatures: (f) => n.blkDeviceSetFeatures(d, f),
    setMemTable: (regions) => n.blkDeviceSetMemTable(d, regions),
    addMemRegion: (r) => n.blkDeviceAddMemRegion(d, r),
    removeMemRegion: (r) => n.blkDeviceRemoveMemRegion(d, { ...r, fd: -1 }),
    setVring: (i, v) => n.blkDeviceSetVring(d, i, v),
    setVringFd: (i, kind, fd) => n.blkDeviceSetVringFd(d, i, kind, fd),
    startQueue: (i) => n.blkDeviceStartQueue(d, i),
    stopQueue: (i) => n.blkDeviceStopQueue(d, i),
    getInflight: (nq, qs) => n.blkDeviceGetInflight(d, nq, qs),
    setInflight: (b) => n.blkDeviceSetInflight(d, b),
  };
}

function inflightWanted(o: VhostUserBlkServerOptions): boolean {
  const env = process.env.STOR_VHOST_USER_INFLIGHT;
  return o.inflight ?? !(env === 'off' || env === '0');
}

export class VhostUserBlkServer extends EventEmitter {
  readonly options: VhostUserBlkServerOptions;
  readonly capacity: number;
  readonly featuresOffered: bigint;
  readonly protocolFeaturesOffered: bigint;
  private listener?: VhostUserListener;
  private device?: BlkDeviceHandle;
  private conn?: VhostUserConnection;
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
    let f =
      bit(VIRTIO_F.VERSION_1) |
      bit(F_PROTOCOL_FEATURES) |
      bit(VIRTIO_F.RING_INDIRECT_DESC) |
      bit(VIRTIO_F.RING_EVENT_IDX) |
      bit(VIRTIO_BLK_F.SEG_MAX) |
      bit(VIRTIO_BLK_F.BLK_SIZE) |
      bit(VIRTIO_BLK_F.FLUSH) |
      bit(VIRTIO_BLK_F.MQ) |
      bit(VIRTIO_BLK_F.TOPOLOGY);
    f |= ro ? bit(VIRTIO_BLK_F.RO) : bit(VIRTIO_BLK_F.DISCARD) | bit(VIRTIO_BLK_F.WRITE_ZEROES);
    this.featuresOffered = f;
    this.protocolFeaturesOffered =
      bit(ProtocolFeature.MQ) |
      bit(ProtocolFeature.REPLY_ACK) |
      bit(ProtocolFeature.CONFIG) |
      bit(ProtocolFeature.RESET_DEVICE) |
      bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
      (inflightWanted(options) ? bit(ProtocolFeature.INFLIGHT_SHMFD) : 0n);
    this.config = encodeBlkConfig({
      capacityBytes: info.capacity,
      blockSize: options.blockSize,
      numQueues: options.queues,
      segMax: Math.min(options.queueSize - 2, 254),
      maxDiscardSectors: MAX_DISCARD_SECTORS,
      maxWriteZeroesSectors: MAX_DISCARD_SECTORS,
      discardSectorAlignment: options.blockSize / 512,
      writeZeroesMayUnmap: true,
    });
  }

  get socketPath(): string {
    return this.options.socketPath;
  }
  get connected(): boolean {
    return this.conn !== undefined;
  }
  /** Front-ends served so far (including the current one). */
  get connectionCount(): number {
    return this.connections;
  }

  /** Binds the socket (replacing a stale one, refusing a live one) and starts accepting. */
  listen(): void {
    const n = native();
    this.listener = new VhostUserListener(this.options.socketPath);
    this.listener.listen(
      (fd) => this.accepted(fd),
      (message) => this.log('warn', message),
    );
    this.device = n.blkDeviceCreate(
      this.options.backend,
      {
        queues: this.options.queues,
        blockSize: this.options.blockSize,
        readonly: this.options.readonly,
        serial: this.options.serial,
        mode: this.options.mode,
        pollUs: this.options.pollUs ?? 64,
        maxDiscardSectors: MAX_DISCARD_SECTORS,
        maxWriteZeroesSectors: MAX_DISCARD_SECTORS,
      },
      (kind, queue, message) => this.onDeviceEvent(kind, queue, message),
    );
  }

  private accepted(fd: number): void {
    // The current front-end may already be gone with its EOF still queued (a client that
    // closes and reconnects at once): process that first, so only a live one causes a refusal.
    this.conn?.poll();
    if (this.conn || this.closed) {
      // vhost-user has one front-end per device: refuse, do not disturb the one we serve.
      this.log('warn', 'refused a second front-end: the device already has one (vhost-user allows one at a time)');
      native().close(fd);
      return;
    }
    this.connections++;
    const session = new VhostUserSession(
      {
        queues: this.options.queues,
        queueSize: this.options.queueSize,
        features: this.featuresOffered,
        protocolFeatures: this.protocolFeaturesOffered,
        configSpace: this.config,
        maxMemSlots: MAX_MEM_SLOTS,
      },
      nativeSessionDevice(this.device!),
      this.log,
    );
    const conn: VhostUserConnection = new VhostUserConnection(
      fd,
      (m) => {
        const out = session.handle(m);
        out.replies.forEach((r, i) => conn.send(r, i === 0 ? out.replyFds : undefined));
        VhostUserConnection.closeFds(out.closeFds);
        if (out.drop !== undefined) conn.drop(out.drop);
      },
      (reason) => this.connectionEnded(conn, reason),
    );
    this.conn = conn;
    this.log('info', `front-end connected (#${this.connections})`);
    this.emit('connect');
  }

  private onDeviceEvent(kind: string, queue: number, message: string): void {
    if (kind === 'broken') {
      this.log('error', `dropping front-end: ${message}`);
      this.conn?.drop(message);
    } else {
      this.log(eventLevel(kind), kind === 'reqerr' ? `queue ${queue}: ${message}` : message);
    }
  }

  /** A connection ended, for whatever reason: the device forgets it and waits for the next. */
  private connectionEnded(c: VhostUserConnection, reason: string): void {
    if (this.conn !== c) return;
    this.conn = undefined;
    if (this.device) native().blkDeviceReset(this.device);
    this.log('info', `front-end disconnected: ${reason}`);
    this.emit('disconnect', reason);
  }

  /** Per-queue counters and CPU time of the queue threads. */
  stats(): QueueStats[] {
    return this.device ? native().blkDeviceStats(this.device) : [];
  }

  /** Stops accepting, drains in-flight requests, flushes the backend, removes the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const n = native();
    this.listener?.stopAccepting();
    this.conn?.drop('server shutting down');
    if (this.device) {
      n.blkDeviceDestroy(this.device);
      this.device = undefined;
    }
    try {
      n.backendFlush(this.options.backend);
    } catch (e) {
      this.log('error', `flush: ${(e as Error).message}`);
    }
    this.listener?.close();
  }

  /** The config space, as served to GET_CONFIG. */
  configSpace(): Buffer {
    return this.config;
  }
  maxMemSlots(): number {
    return MAX_MEM_SLOTS;
  }
}
