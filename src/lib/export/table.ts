// The device table: the named backends and named exports of one process, and the one place that
// creates and destroys them. `stor serve` is "one backend and one vhost-user-blk export" through it;
// `stor bench` starts its embedded server through it; `stor daemon`, `attach`, the SPDK-style RPC
// server and recovery after a restart will drive it next (toJSON() is what they list and persist).
// An export refers to its backend by name; a backend in use cannot be removed — by an export, or by a
// user the table does not run that has claimed it (claimBackend: a daemon's ublk and VDUSE disks).
// A backend may also wrap another (wrapBackend: the fault-injection filter stacked on an open backend,
// the daemon's delay and error bdevs): the wrapper claims its base, which therefore outlives it.
import { openBackend } from '../bdev/open.js';
import { StorError, usageError } from '../core/errors.js';
import { BACKEND_KIND, formatSpec, parseSpec, type Spec } from '../core/spec.js';
import { targetFromSpec, targetToSpec, type Target } from '../core/target.js';
import { native, type BackendHandle, type BackendInfo, type CompletionMode, type QueueStats } from '../native.js';
import { VhostUserBlkServer, type Logger } from './vhost-user/server.js';

export type { CompletionMode };

export interface BackendEntry {
  name: string;
  /** The canonical spec (sizes in bytes), as formatSpec writes it. */
  spec: string;
  target: Exclude<Target, { kind: 'vhost-user' }>;
  readonly: boolean;
  handle: BackendHandle;
  info: BackendInfo;
  /** A wrapper (wrapBackend): the backend it stacks on, and what it is. */
  wraps?: { base: string; kind: string };
}

export interface VhostUserBlkExportOptions {
  socket: string;
  queues: number;
  queueSize: number;
  blockSize: 512 | 4096;
  readonly: boolean;
  serial: string;
  mode: CompletionMode;
  pollUs?: number;
}

export interface ExportEntry {
  name: string;
  type: 'vhost-user-blk';
  backend: string;
  options: VhostUserBlkExportOptions;
  server: VhostUserBlkServer;
}

/** The table as JSON: what a daemon lists and what recovery would re-create. */
export interface DeviceTableJson {
  backends: Array<{ name: string; spec: string; driver: string; capacity: number; readonly: boolean }>;
  exports: Array<{
    name: string;
    type: 'vhost-user-blk';
    backend: string;
    socket: string;
    queues: number;
    queueSize: number;
    blockSize: number;
    readonly: boolean;
    serial: string;
    mode: CompletionMode;
    pollUs?: number;
    connections: number;
  }>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class DeviceTable {
  private readonly backendsByName = new Map<string, BackendEntry>();
  private readonly exportsByName = new Map<string, ExportEntry>();
  /** Users of a backend that are not exports of this table (a daemon's ublk and VDUSE disks), by backend. */
  private readonly claimsByBackend = new Map<string, Set<string>>();

  constructor(private readonly log: Logger = () => {}) {}

  /**
   * Opens a backend from a spec ("null:1G", "file:/img,create=1G", a bare path, or a parsed Spec) under
   * a name. `what` names the spec's origin in errors (e.g. '--backend').
   */
  addBackend(name: string, spec: string | Spec, opts: { readonly?: boolean; what?: string } = {}): BackendEntry {
    this.checkName(name, this.backendsByName, 'backend');
    const what = opts.what ?? `backend ${name}`;
    const parsed = typeof spec === 'string' ? parseSpec(spec, what, BACKEND_KIND) : spec;
    if (parsed.driver === 'vhost-user')
      throw usageError(what, `'${formatSpec(parsed)}' is not a backend`, BACKEND_KIND.forms);
    const target = targetFromSpec(parsed, what, BACKEND_KIND) as BackendEntry['target'];
    const { handle, info } = openBackend(target, { readonly: opts.readonly });
    const entry: BackendEntry = {
      name,
      spec: formatSpec(targetToSpec(target)),
      target,
      readonly: Boolean(opts.readonly) || info.readonly,
      handle,
      info,
    };
    this.backendsByName.set(name, entry);
    return entry;
  }

  /**
   * Stacks the fault-injection filter (native/bdev/fault.c, live: changed at run time with
   * native().faultSetLatency/faultInjectError) on the open backend `base`, as backend `name`. The base is
   * not reopened (a mem: backend keeps its data) and is claimed by the wrapper until the wrapper is
   * removed. `kind` says what it is in errors and listings ("delay", "error").
   */
  wrapBackend(name: string, base: string, o: { kind: string; props?: Record<string, string> }): BackendEntry {
    this.checkName(name, this.backendsByName, 'backend');
    const b = this.backend(base);
    let handle: BackendHandle;
    try {
      handle = native().bdevWrap(b.handle, o.props ?? {});
    } catch (e) {
      throw new StorError(`cannot wrap backend ${base}: ${(e as Error).message}`, { exitCode: 2 });
    }
    const entry: BackendEntry = {
      name,
      spec: `${o.kind}(${b.spec})`,
      target: b.target,
      readonly: b.readonly,
      handle,
      info: native().backendInfo(handle),
      wraps: { base, kind: o.kind },
    };
    this.claimBackend(base, `${o.kind} bdev ${name}`);
    this.backendsByName.set(name, entry);
    return entry;
  }

  /**
   * Lets requests a wrapper holds ("pending" errors) go on, in the backend and every wrapper under it:
   * an export being stopped drains its requests, and held ones would never come back.
   */
  releaseHeld(name: string): void {
    for (let b = this.backendsByName.get(name); b?.wraps; b = this.backendsByName.get(b.wraps.base)) {
      const state = native().faultState(b.handle);
      if (state.held) this.log('info', `${b.name}: releasing ${state.held} held request(s) so that its user can stop`);
      native().faultResume(b.handle);
    }
  }

  /** Flushes and forgets a backend; refused while an export serves it. */
  removeBackend(name: string): void {
    const b = this.backend(name);
    const user = [...this.exportsByName.values()].find((e) => e.backend === name);
    if (user)
      throw new StorError(`backend ${name} is in use by export ${user.name}`, { hint: 'remove the export first' });
    const claim = this.claimsByBackend.get(name)?.values().next().value;
    if (claim !== undefined)
      throw new StorError(`backend ${name} is in use by ${claim}`, { hint: `remove ${claim} first` });
    this.backendsByName.delete(name);
    try {
      native().backendFlush(b.handle);
    } catch (e) {
      this.log('error', `flush ${name}: ${(e as Error).message}`);
    }
    // released now, not at garbage collection: a file's fd and image lock go with it, so the same file
    // can be opened again at once (a daemon deletes and re-creates a bdev on one image)
    try {
      native().backendClose(b.handle);
    } catch (e) {
      this.log('error', `close ${name}: ${(e as Error).message}`);
    }
    if (b.wraps) this.releaseBackend(b.wraps.base, `${b.wraps.kind} bdev ${name}`);
  }

  /**
   * Marks a backend as used by something this table does not run (e.g. "ublk disk 3"): removeBackend
   * refuses it until released. Returns the backend.
   */
  claimBackend(name: string, by: string): BackendEntry {
    const b = this.backend(name);
    let claims = this.claimsByBackend.get(name);
    if (!claims) this.claimsByBackend.set(name, (claims = new Set()));
    claims.add(by);
    return b;
  }

  releaseBackend(name: string, by: string): void {
    const claims = this.claimsByBackend.get(name);
    claims?.delete(by);
    if (claims?.size === 0) this.claimsByBackend.delete(name);
  }

  /** Starts a vhost-user-blk export of a named backend; it listens when this returns. */
  addVhostUserBlkExport(name: string, backend: string, o: VhostUserBlkExportOptions): ExportEntry {
    this.checkName(name, this.exportsByName, 'export');
    const b = this.backend(backend);
    if (b.info.capacity % o.blockSize)
      throw usageError(
        '--block-size',
        `capacity ${b.info.capacity} is not a multiple of ${o.blockSize}`,
        '512 or 4096',
      );
    const server = new VhostUserBlkServer({
      socketPath: o.socket,
      backend: b.handle,
      queues: o.queues,
      queueSize: o.queueSize,
      blockSize: o.blockSize,
      readonly: o.readonly || b.readonly,
      serial: o.serial,
      mode: o.mode,
      pollUs: o.pollUs,
      log: this.log,
    });
    server.listen();
    const entry: ExportEntry = {
      name,
      type: 'vhost-user-blk',
      backend,
      options: { ...o, readonly: o.readonly || b.readonly },
      server,
    };
    this.exportsByName.set(name, entry);
    return entry;
  }

  /** Stops an export: no new front-ends, in-flight requests drain, the backend is flushed, the socket removed. */
  async removeExport(name: string): Promise<void> {
    const e = this.export(name);
    this.exportsByName.delete(name);
    this.releaseHeld(e.backend);
    await e.server.close();
  }

  backend(name: string): BackendEntry {
    const b = this.backendsByName.get(name);
    if (!b) throw new StorError(`no backend named ${name}`);
    return b;
  }

  export(name: string): ExportEntry {
    const e = this.exportsByName.get(name);
    if (!e) throw new StorError(`no export named ${name}`);
    return e;
  }

  listBackends(): BackendEntry[] {
    return [...this.backendsByName.values()];
  }
  listExports(): ExportEntry[] {
    return [...this.exportsByName.values()];
  }

  /** Per-queue counters and queue-thread CPU of one export. */
  stats(name: string): QueueStats[] {
    return this.export(name).server.stats();
  }

  /** Every export stopped (in reverse order of creation), then every backend flushed and forgotten. */
  async closeAll(): Promise<void> {
    for (const name of [...this.exportsByName.keys()].reverse()) await this.removeExport(name);
    for (const name of [...this.backendsByName.keys()].reverse()) this.removeBackend(name);
  }

  toJSON(): DeviceTableJson {
    return {
      backends: this.listBackends().map((b) => ({
        name: b.name,
        spec: b.spec,
        driver: b.wraps?.kind ?? b.target.kind,
        capacity: b.info.capacity,
        readonly: b.readonly,
      })),
      exports: this.listExports().map((e) => ({
        name: e.name,
        type: e.type,
        backend: e.backend,
        socket: e.options.socket,
        queues: e.options.queues,
        queueSize: e.options.queueSize,
        blockSize: e.options.blockSize,
        readonly: e.options.readonly,
        serial: e.options.serial,
        mode: e.options.mode,
        ...(e.options.pollUs !== undefined ? { pollUs: e.options.pollUs } : {}),
        connections: e.server.connectionCount,
      })),
    };
  }

  private checkName(name: string, map: Map<string, unknown>, what: string): void {
    if (!NAME.test(name))
      throw usageError(
        `${what} name`,
        `'${name}' is not a name`,
        'letters, digits, ".", "_" and "-", up to 64, starting with a letter or digit',
      );
    if (map.has(name)) throw new StorError(`a ${what} named ${name} exists already`);
  }
}
