// Shared by the hostile front-end tests: a `stor serve` over a backend whose every byte we know
// (a model Buffer), log assertions scoped to one case, and the proof that the server survived:
// a good front-end's write+read round trip and a whole-backend comparison with the model.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { cleanupSocket, startStor, type RunningServer } from '../../helpers/servers.js';
import { BlkSession, type BlkSessionOptions } from '../../helpers/virtq-driver.js';

export const DISK_SIZE = 4 << 20;
export const DISK_SECTORS = DISK_SIZE / 512;

/** Rejects if p has not settled within ms: uvu has no timeouts of its own. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type BackendKind = 'file' | 'mem';

export class Harness {
  server!: RunningServer;
  /** What every byte of the backend must be. */
  readonly model: Buffer;
  private dir = '';
  private path = '';
  private goodWrites = 0;
  fdsAtStart = 0;
  /** How long stop() waits after SIGTERM before SIGKILL (short for servers expected to hang). */
  stopTimeoutMs = 5000;

  constructor(
    readonly kind: BackendKind,
    readonly queues = 1,
    readonly extraArgs: string[] = [],
  ) {
    // file: random content, so a stray write anywhere shows; mem: starts zeroed.
    this.model = kind === 'file' ? randomBytes(DISK_SIZE) : Buffer.alloc(DISK_SIZE);
  }

  get socket(): string {
    return this.server.socket;
  }
  /** The image file of a file backend ('' for mem). */
  get imagePath(): string {
    return this.path;
  }

  async start(): Promise<void> {
    let backend;
    if (this.kind === 'file') {
      this.dir = mkdtempSync(join(tmpdir(), 'stor-hostile-'));
      this.path = join(this.dir, 'disk.img');
      writeFileSync(this.path, this.model);
      backend = { kind: 'file' as const, path: this.path };
    } else {
      backend = { kind: 'mem' as const, size: DISK_SIZE };
    }
    this.server = await startStor({ backend, queues: this.queues, extraArgs: this.extraArgs });
    this.fdsAtStart = this.openFds();
  }

  async stop(): Promise<void> {
    if (this.server) {
      await this.server.stop(this.stopTimeoutMs);
      cleanupSocket(this.server.socket);
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  alive(): boolean {
    return this.server.proc.exitCode === null && this.server.proc.signalCode === null;
  }

  /** Number of open fds of the server process (leak detection). */
  openFds(): number {
    try {
      return readdirSync(`/proc/${this.server.pid}/fd`).length;
    } catch {
      return -1;
    }
  }

  /** A position in the server's output; logs after it belong to the current case. */
  mark(): number {
    return this.server.output().length;
  }
  since(mark: number): string {
    return this.server.output().slice(mark);
  }

  /** Waits until the output after mark matches re; fails with that output if it does not. */
  async waitLog(mark: number, re: RegExp, ms = 4000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const out = this.since(mark);
      if (re.test(out)) return out;
      if (!this.alive())
        assert.unreachable(
          `server died (${this.server.proc.exitCode ?? this.server.proc.signalCode}) before logging ${re}; output since the case began:\n${out}`,
        );
      if (Date.now() > deadline)
        assert.unreachable(`server did not log ${re} within ${ms} ms; output since the case began:\n${out}`);
      await sleep(10);
    }
  }

  /** The server logs every end of a front-end session; the next one is refused until then. */
  async waitDisconnected(mark: number): Promise<string> {
    return this.waitLog(mark, /front-end disconnected/);
  }

  /** Opens a good session (the case's setup) with short timeouts. */
  open(o: BlkSessionOptions = {}): BlkSession {
    return BlkSession.open(this.socket, { timeoutMs: 3000, ...o });
  }

  /**
   * The server is alive and serves the NEXT front-end correctly: a write+read round trip on
   * every queue, then the whole backend equals the model (nothing outside the requested ranges
   * was written by whatever the previous front-end did).
   */
  async proveHealthy(): Promise<void> {
    assert.ok(this.alive(), `server is not running:\n${this.server.output().slice(-3000)}`);
    const m = this.mark();
    const s = this.open({ queues: this.queues });
    try {
      for (let q = 0; q < this.queues; q++) {
        const sector = 2048 + ((this.goodWrites++ * 8) % 4096);
        const data = randomBytes(4096);
        const w = await s.write(sector, data, q);
        assert.is(w.status, 0, `good write on queue ${q} after a hostile case`);
        data.copy(this.model, sector * 512);
        const r = await s.read(sector, 4096, q);
        assert.is(r.status, 0, `good read on queue ${q}`);
        assert.ok(r.data.equals(data), 'good read returns what was written');
      }
      await this.compareBackend(s);
    } finally {
      s.close();
    }
    await this.waitDisconnected(m);
  }

  /** Every byte of the backend equals the model. mem: read back through session s. */
  async compareBackend(s?: BlkSession): Promise<void> {
    let actual: Buffer;
    if (this.kind === 'file') {
      actual = readFileSync(this.path);
    } else {
      assert.ok(s, 'a mem backend is read back through a session');
      const parts: Buffer[] = [];
      const chunk = 1 << 20;
      for (let off = 0; off < DISK_SIZE; off += chunk) {
        // the read buffers are copied out; reuse their guest memory for the next chunk
        const pos = s!.mem.position();
        const r = await s!.read(off / 512, chunk);
        s!.mem.rewind(pos);
        assert.is(r.status, 0);
        parts.push(r.data);
      }
      actual = Buffer.concat(parts);
    }
    assert.is(actual.length, DISK_SIZE);
    if (!actual.equals(this.model)) {
      let first = 0;
      while (actual[first] === this.model[first]) first++;
      assert.unreachable(`backend differs from the model first at byte ${first} (sector ${Math.floor(first / 512)})`);
    }
  }
}
