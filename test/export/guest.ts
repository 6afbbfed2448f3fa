// The host side of the conformance group's kernel exports (ublk, VDUSE): one Linux test guest
// (tools/vm.ts) booted on first use and shared by every kernel cell, the agent inside it
// (guest-agent.ts) reached over a serial line, and the DiskDriver that drives a kernel block device
// through that agent. Bulk data crosses through a directory shared with the guest over 9p; the
// serial line carries only the JSON commands and answers.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { consoleTail, runGuest, vmImage, type GuestResult } from '../../tools/vm.js';
import { ROOT, STOR_BIN } from '../helpers/paths.js';
import { BackendFixture } from './backends.js';
import type { AgentGeometry, AgentOp, AgentResult } from './guest-agent.js';
import type { DiskDriver, Geometry, Op, Result, Status } from './drivers.js';

/** Where the shared directory is mounted in the guest. */
const GUEST_SHARE = '/run/stor-conf';
const AGENT = join(ROOT, 'dist', 'test', 'export', 'guest-agent.js');

/** Why no kernel export can be tested here, or undefined. */
export function kernelGuestUnavailable(): string | undefined {
  try {
    vmImage();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

type Answer = Record<string, unknown> & { error?: string };

export class KernelGuest {
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();
  private readonly exited = new Map<number, string>();
  private nextFile = 0;
  private failed?: Error;
  /** Resolved by the agent's first line. */
  private agentUp!: () => void;
  readonly up = new Promise<void>((resolve) => (this.agentUp = resolve));

  private constructor(
    /** The shared directory as the host sees it. */
    readonly share: string,
    private readonly sockDir: string,
    private readonly server: Server,
    private readonly port: Socket,
    private readonly run: Promise<GuestResult>,
    private readonly console: () => string,
  ) {
    let buffered = '';
    port.on('data', (d: Buffer) => {
      buffered += d.toString('latin1');
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line.startsWith('{')) this.received(JSON.parse(line) as Answer);
      }
    });
    const gone = (why: string) => {
      this.failed ??= new Error(`test guest: ${why}; console:\n${this.console().split('\n').slice(-60).join('\n')}`);
      for (const w of this.waiting.values()) w.reject(this.failed);
      this.waiting.clear();
    };
    port.on('close', () => gone('the agent went away'));
    void run.then((r) => gone(`QEMU exited (${r.timedOut ? 'timed out' : `status ${r.status}`})`));
  }

  private received(a: Answer): void {
    if (a.event === 'up') {
      this.agentUp();
      return;
    }
    if (a.event === 'exit') {
      this.exited.set(a.attach as number, `exit ${String(a.code ?? a.signal)}`);
      return;
    }
    const w = this.waiting.get(a.id as number);
    if (!w) return;
    this.waiting.delete(a.id as number);
    if (a.error) w.reject(new Error(`guest agent: ${a.error}`));
    else w.resolve(a);
  }

  /** Boots the guest and waits for its agent (up to 120 s: TCG). */
  static async boot(): Promise<KernelGuest> {
    const share = mkdtempSync(join(tmpdir(), 'stor-conf-share-'));
    const sockDir = mkdtempSync(join(tmpdir(), 'stor-conf-sock-'));
    const sock = join(sockDir, 'agent.sock');
    let out = '';
    const server = createServer();
    const connected = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    const script = [
      'set -e',
      `mkdir -p ${GUEST_SHARE}`,
      `mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=524288,cache=none storconf ${GUEST_SHARE}`,
      'stty -F /dev/ttyS1 raw -echo',
      `exec node ${AGENT} --serial /dev/ttyS1 --share ${GUEST_SHARE} --stor ${STOR_BIN}`,
    ].join('\n');
    const abort = new AbortController();
    const run = runGuest({
      script,
      signal: abort.signal,
      memoryMiB: 1024,
      timeoutMs: 900_000,
      onConsole: (t) => (out += t),
      extraQemuArgs: [
        '-virtfs',
        `local,path=${share},mount_tag=storconf,security_model=none`,
        '-chardev',
        `socket,id=agent,path=${sock}`,
        '-device',
        'isa-serial,chardev=agent',
      ],
    });
    const gaveUp = async (e: Error): Promise<never> => {
      abort.abort();
      await run;
      server.close();
      rmSync(share, { recursive: true, force: true });
      rmSync(sockDir, { recursive: true, force: true });
      throw e;
    };
    const port = await Promise.race([
      connected,
      run.then((r) => {
        throw new Error(`test guest: QEMU exited before connecting:\n${consoleTail(r, 40)}`);
      }),
    ]).catch(gaveUp);
    const g = new KernelGuest(share, sockDir, server, port, run, () => out);
    const up = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`test guest: no agent after 120 s:\n${out.slice(-3000)}`)),
        120_000,
      );
      void g.up.then(() => {
        clearTimeout(timer);
        resolve();
      });
      void run.then(() => {
        clearTimeout(timer);
        reject(g.failed ?? new Error('test guest: QEMU exited'));
      });
    });
    await up.catch(gaveUp);
    return g;
  }

  /** Sends one command, resolves with the agent's answer. */
  call(op: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<Answer> {
    if (this.failed) return Promise.reject(this.failed);
    const id = ++this.nextId;
    return new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`guest agent: no answer to ${op} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (a) => {
          clearTimeout(timer);
          resolve(a);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.port.write(JSON.stringify({ id, op, ...args }) + '\n');
    });
  }

  /** A fresh name in the shared directory. */
  file(what: string): string {
    return `${what}-${++this.nextFile}`;
  }

  /** Why attach n is gone, or undefined while it runs. */
  attachExit(n: number): string | undefined {
    return this.exited.get(n);
  }

  /** A whole file or block device of the guest, copied through the shared directory. */
  async dump(path: string): Promise<Buffer> {
    const out = this.file('dump');
    await this.call('dump', { path, out });
    const data = readFileSync(join(this.share, out));
    unlinkSync(join(this.share, out));
    return data;
  }

  /** Detaches what is still attached, stops the agent and waits for the guest to power off. */
  async shutdown(): Promise<GuestResult> {
    if (!this.failed) await this.call('quit', {}, 60_000).catch(() => {});
    const r = await this.run;
    this.port.destroy();
    this.server.close();
    rmSync(this.share, { recursive: true, force: true });
    rmSync(this.sockDir, { recursive: true, force: true });
    return r;
  }
}

let booting: Promise<KernelGuest> | undefined;

/** The one test guest, booted on first use. */
export function kernelGuest(): Promise<KernelGuest> {
  booting ??= KernelGuest.boot();
  return booting;
}

/** Powers the guest off if it was booted; its result (the caller checks it), or undefined. */
export async function stopKernelGuest(): Promise<GuestResult | undefined> {
  if (!booting) return undefined;
  const g = await booting.catch(() => undefined);
  booting = undefined;
  if (!g) return undefined;
  const r = await g.shutdown();
  r.cleanup();
  return r;
}

function status(s: string): Status {
  return s === 'ok' ? 'ok' : s === 'EOPNOTSUPP' ? 'unsupp' : 'ioerr';
}

/** A kernel block device in the guest (ublk's /dev/ublkbN, VDUSE's /dev/vdX), driven by the agent. */
export class KernelDiskDriver implements DiskDriver {
  readonly name = 'kernel block device';
  readonly raw = false;

  private constructor(
    private readonly g: KernelGuest,
    readonly device: string,
    readonly geometry: Geometry,
    /** What sysfs said, for the kernel-only checks. */
    readonly sysfs: AgentGeometry,
  ) {}

  static async open(g: KernelGuest, device: string): Promise<KernelDiskDriver> {
    const s = (await g.call('geometry', { device })) as unknown as AgentGeometry;
    return new KernelDiskDriver(
      g,
      device,
      {
        capacity: s.sectors * 512,
        blockSize: s.logicalBlockSize,
        segMax: s.maxSegments,
        numQueues: s.queues,
        readOnly: s.readOnly,
        discard: s.discardMaxBytes > 0,
        writeZeroes: s.writeZeroesMaxBytes > 0,
        serial: s.serial,
        volatileCache: s.writeCache === 'write back',
      },
      s,
    );
  }

  async batch(q: number, ops: Op[]): Promise<Result[]> {
    const inputs: Buffer[] = [];
    let at = 0;
    const agentOps = ops.map((o): AgentOp | undefined => {
      switch (o.op) {
        case 'read':
        case 'discard':
        case 'flush':
          return o;
        case 'write-zeroes':
          return { op: o.op, offset: o.offset, length: o.length, unmap: o.unmap };
        case 'write':
          inputs.push(o.data);
          at += o.data.length;
          return { op: 'write', offset: o.offset, length: o.data.length, dataOffset: at - o.data.length };
        case 'get-id':
          return undefined; // the kernel has no request for it: the serial is in sysfs (geometry)
      }
    });
    const input = inputs.length ? this.g.file('in') : undefined;
    const output = this.g.file('out');
    if (input) writeFileSync(join(this.g.share, input), Buffer.concat(inputs));
    try {
      const a = await this.g.call('batch', {
        device: this.device,
        queue: q,
        ops: agentOps.filter((o) => o !== undefined),
        input,
        output,
      });
      const got = a.results as AgentResult[];
      const data = readFileSync(join(this.g.share, output));
      let pos = 0;
      let next = 0;
      return agentOps.map((o): Result => {
        if (!o) return { status: 'unsupp', data: Buffer.alloc(0) };
        const r = got[next++]!;
        const len = r.length ?? 0;
        const res: Result = { status: status(r.status), data: data.subarray(pos, pos + len) };
        pos += len;
        if (r.status !== 'ok') res.errno = r.status;
        return res;
      });
    } finally {
      for (const f of [input, output]) if (f) rmSync(join(this.g.share, f), { force: true });
    }
  }

  /** The whole disk in one O_DIRECT pass in the guest, copied through the share. */
  readWhole(): Promise<Buffer> {
    return this.g.dump(this.device);
  }

  async close(): Promise<void> {}
}

/**
 * A backend of a kernel export: null and mem live in stor's process in the guest; a file image is
 * made on the host (random bytes, as for every export), copied into the guest's tmpfs before the
 * first attach (stor's file backend over 9p would test 9p), and read back from there to compare.
 */
export class GuestBackendFixture extends BackendFixture {
  private staged = false;

  /** Where the image lives in the guest. */
  get guestImage(): string | undefined {
    return this.image ? `/tmp/${basename(dirname(this.image))}.img` : undefined;
  }

  /** The backend spec stor attach gets; the first time, the image is put where the guest can copy it. */
  async attachSpec(g: KernelGuest): Promise<{ backend: string; stage?: { from: string; to: string } }> {
    if (!this.image) return { backend: `${this.kind}:${this.size}` };
    if (this.staged) return { backend: `file:${this.guestImage}` };
    const from = g.file('image');
    copyFileSync(this.image, join(g.share, from));
    this.staged = true;
    return { backend: `file:${this.guestImage}`, stage: { from, to: this.guestImage! } };
  }

  protected override async readImage(): Promise<Buffer> {
    return (await kernelGuest()).dump(this.guestImage!);
  }
}
