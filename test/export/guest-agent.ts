// Runs inside the test guest (tools/vm.ts) for the kernel exports of the conformance group
// (guest.ts is the host side). It attaches disks with `stor attach --ublk|--vduse` and drives the
// kernel block devices they make the way an application does: pread/pwrite with O_DIRECT, fsync,
// BLKDISCARD and BLKZEROOUT (blkdiscard, and fallocate's punch-hole for a write-zeroes that may
// unmap), and reads the disk's sysfs. Commands arrive as one JSON object a line on a serial port
// (the guest's ttyS1, a socket on the host), answers go back the same way; bulk data (write
// payloads, read results, whole-disk dumps) goes through a 9p share both sides see, since the
// emulated UART carries well under 100 KB/s.
//
// A block request reaches the hardware queue of the CPU that submits it, so "queue q" means "a CPU
// that blk-mq maps to q" (/sys/block/X/mq/q/cpu_list): each CPU has a worker process pinned to it
// (taskset), which submits a batch's requests all at once through libuv's thread pool.
//
//   node guest-agent.js --serial /dev/ttyS1 --share DIR --stor BIN     (the agent)
//   node guest-agent.js --worker                                         (a worker, started by the agent)
import { spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fstatSync,
  fsync,
  openSync,
  read,
  readFileSync,
  readSync,
  readdirSync,
  write,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ReadStream } from 'node:tty';
import { promisify } from 'node:util';
import { native } from '../../src/lib/native.js';

/** One block request of a batch; the data of a write is at dataOffset in the batch's input file. */
export type AgentOp =
  | { op: 'read'; offset: number; length: number }
  | { op: 'write'; offset: number; length: number; dataOffset: number }
  | { op: 'flush' }
  | { op: 'discard'; offset: number; length: number }
  | { op: 'write-zeroes'; offset: number; length: number; unmap?: boolean };

/** 'ok', or the errno code (EIO, EPERM, ...) the request failed with; SHORT for a short transfer. */
export interface AgentResult {
  status: string;
  /** Bytes a read put into the batch's output file (in op order). */
  length?: number;
}

/** What sysfs says about a disk. */
export interface AgentGeometry {
  sectors: number;
  logicalBlockSize: number;
  maxSegments: number;
  queues: number;
  readOnly: boolean;
  discardMaxBytes: number;
  writeZeroesMaxBytes: number;
  writeCache: string;
  /** virtio-blk's serial (the kernel asks with GET_ID); absent for ublk. */
  serial?: string;
}

// ---- the worker: one per CPU ----

const O_DIRECT = constants.O_DIRECT;
const pRead = promisify(read);
const pWrite = promisify(write);
const pFsync = promisify(fsync);

/** A buffer of len bytes at a page-aligned address (O_DIRECT needs the memory aligned too). */
function alignedBuffer(len: number): Buffer {
  const raw = Buffer.alloc(len + 4096);
  const misalign = Number(native().bufferAddress(raw) % 4096n);
  return raw.subarray((4096 - misalign) % 4096, ((4096 - misalign) % 4096) + len);
}

/** The errno code of a failed program, from the strerror text it printed. */
function errnoFromText(text: string): string {
  const known: Array<[RegExp, string]> = [
    [/Input\/output error/, 'EIO'],
    [/Operation not supported/, 'EOPNOTSUPP'],
    [/Operation not permitted/, 'EPERM'],
    [/Read-only file system/, 'EROFS'],
    [/Permission denied/, 'EACCES'],
    [/Bad file descriptor/, 'EBADF'],
    [/Invalid argument/, 'EINVAL'],
  ];
  return known.find(([re]) => re.test(text))?.[1] ?? `FAILED (${text.trim().split('\n').pop()})`;
}

/** Runs a program (it inherits this worker's CPU), resolves 'ok' or the errno it reported. */
function runTool(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', (e) => resolve(`FAILED (${e.message})`));
    p.on('close', (code) => resolve(code === 0 ? 'ok' : errnoFromText(err)));
  });
}

interface BatchMessage {
  id: number;
  device: string;
  ops: AgentOp[];
  /** Share file holding the writes' data, and the one to write the reads' data to. */
  input?: string;
  output: string;
}

async function runBatch(m: BatchMessage): Promise<AgentResult[]> {
  const input = m.input ? readFileSync(m.input) : Buffer.alloc(0);
  const modifies = m.ops.some((o) => o.op === 'write' || o.op === 'flush');
  let rw: number | undefined;
  let rwError = '';
  if (modifies) {
    try {
      rw = openSync(m.device, constants.O_RDWR | O_DIRECT);
    } catch (e) {
      rwError = (e as NodeJS.ErrnoException).code ?? 'EIO';
    }
  }
  const ro = m.ops.some((o) => o.op === 'read') ? openSync(m.device, constants.O_RDONLY | O_DIRECT) : undefined;
  const fail = (e: unknown): AgentResult => ({ status: (e as NodeJS.ErrnoException).code ?? 'EIO' });
  const readData: Buffer[] = new Array(m.ops.length);
  try {
    const results = await Promise.all(
      m.ops.map(async (o, i): Promise<AgentResult> => {
        const off = String('offset' in o ? o.offset : 0);
        const len = String('length' in o ? o.length : 0);
        switch (o.op) {
          case 'read': {
            const buf = alignedBuffer(o.length);
            try {
              const { bytesRead } = await pRead(ro!, buf, 0, o.length, o.offset);
              readData[i] = Buffer.from(buf.subarray(0, bytesRead));
              return { status: bytesRead === o.length ? 'ok' : 'SHORT', length: bytesRead };
            } catch (e) {
              return fail(e);
            }
          }
          case 'write': {
            if (rw === undefined) return { status: rwError };
            const buf = alignedBuffer(o.length);
            input.copy(buf, 0, o.dataOffset, o.dataOffset + o.length);
            try {
              const { bytesWritten } = await pWrite(rw, buf, 0, o.length, o.offset);
              return { status: bytesWritten === o.length ? 'ok' : 'SHORT' };
            } catch (e) {
              return fail(e);
            }
          }
          case 'flush':
            if (rw === undefined) return { status: rwError };
            return pFsync(rw).then(() => ({ status: 'ok' }), fail);
          case 'discard': // BLKDISCARD
            return { status: await runTool('blkdiscard', ['-f', '-o', off, '-l', len, m.device]) };
          case 'write-zeroes':
            // fallocate's punch hole is REQ_OP_WRITE_ZEROES that may unmap (never a fallback write);
            // BLKZEROOUT asks for zeroes without unmapping
            return {
              status: o.unmap
                ? await runTool('fallocate', ['-p', '-o', off, '-l', len, m.device])
                : await runTool('blkdiscard', ['-f', '-z', '-o', off, '-l', len, m.device]),
            };
        }
      }),
    );
    writeFileSync(m.output, Buffer.concat(readData.filter((b) => b !== undefined)));
    return results;
  } finally {
    if (rw !== undefined) closeSync(rw);
    if (ro !== undefined) closeSync(ro);
  }
}

function worker(): void {
  process.on('message', (m: BatchMessage) => {
    runBatch(m).then(
      (results) => process.send!({ id: m.id, results }),
      (e: Error) => process.send!({ id: m.id, error: e.message }),
    );
  });
}

// ---- the agent ----

interface Attached {
  proc: ChildProcess;
  device?: string;
  exited?: { code: number | null; signal: string | null };
}

function sysfs(dev: string, file: string): string {
  return readFileSync(`/sys/block/${basename(dev)}/${file}`, 'utf8').trim();
}

function geometry(dev: string): AgentGeometry {
  const num = (f: string) => Number(sysfs(dev, f));
  const g: AgentGeometry = {
    sectors: num('size'),
    logicalBlockSize: num('queue/logical_block_size'),
    maxSegments: num('queue/max_segments'),
    queues: readdirSync(`/sys/block/${basename(dev)}/mq`).length,
    readOnly: sysfs(dev, 'ro') === '1',
    discardMaxBytes: num('queue/discard_max_bytes'),
    writeZeroesMaxBytes: num('queue/write_zeroes_max_bytes'),
    writeCache: sysfs(dev, 'queue/write_cache'),
  };
  if (existsSync(`/sys/block/${basename(dev)}/serial`)) g.serial = sysfs(dev, 'serial');
  return g;
}

/** The first CPU blk-mq maps to hardware queue q of dev. */
function cpuOfQueue(dev: string, q: number): number {
  const list = sysfs(dev, `mq/${q}/cpu_list`);
  const first = Number(list.split(/[,-]/)[0]);
  if (!Number.isInteger(first)) throw new Error(`${dev}: queue ${q} has no CPU (cpu_list "${list}")`);
  return first;
}

/** Copies a whole file or block device (O_DIRECT, so the disk itself answers) to out. */
function dump(path: string, out: string): number {
  const fd = openSync(path, constants.O_RDONLY | (path.startsWith('/dev/') ? O_DIRECT : 0));
  try {
    const size = path.startsWith('/dev/') ? Number(sysfs(path, 'size')) * 512 : fstatSync(fd).size;
    const buf = alignedBuffer(size);
    for (let at = 0; at < size;) {
      const n = readSync(fd, buf, at, Math.min(1 << 20, size - at), at);
      if (n <= 0) throw new Error(`${path}: short read at ${at}`);
      at += n;
    }
    writeFileSync(out, buf);
    return size;
  } finally {
    closeSync(fd);
  }
}

async function agent(serialPath: string, share: string, storBin: string): Promise<void> {
  const port = openSync(serialPath, 'r+');
  const send = (o: object): void => {
    const line = Buffer.from(JSON.stringify(o) + '\n');
    for (let at = 0; at < line.length;) at += writeSync(port, line.subarray(at));
  };
  const attached = new Map<number, Attached>();
  let nextAttach = 1;
  const workers = new Map<number, ChildProcess>();
  const pending = new Map<number, (m: { results?: AgentResult[]; error?: string }) => void>();
  const self = fileURLToPath(import.meta.url);
  for (let cpu = 0; cpu < availableParallelism(); cpu++) {
    const w = spawn('taskset', ['-c', String(cpu), process.execPath, self, '--worker'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, UV_THREADPOOL_SIZE: '64' },
    });
    w.on('message', (m: { id: number; results?: AgentResult[]; error?: string }) => {
      pending.get(m.id)?.(m);
      pending.delete(m.id);
    });
    workers.set(cpu, w);
  }
  let batchId = 0;

  const handlers: Record<string, (r: Record<string, unknown>) => Promise<object> | object> = {
    hello: () => ({ cpus: workers.size }),
    async attach(r) {
      const stage = r.stage as { from: string; to: string } | undefined;
      if (stage && !existsSync(stage.to)) copyFileSync(join(share, stage.from), stage.to);
      const n = nextAttach++;
      const log = join(share, r.log as string);
      const proc = spawn(process.execPath, [storBin, 'attach', ...(r.args as string[]), '--json'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const a: Attached = { proc };
      attached.set(n, a);
      let out = '';
      const device = new Promise<string>((resolve, reject) => {
        proc.stdout!.on('data', (d: Buffer) => {
          appendFileSync(log, d);
          out += d.toString();
          const m = /"event":"ready".*"device":"([^"]+)"/.exec(out);
          if (m) resolve(m[1]!);
        });
        proc.stderr!.on('data', (d: Buffer) => appendFileSync(log, d));
        // 'close': stdout has been read to its end (the stopped line)
        proc.on('close', (code, signal) => {
          a.exited = { code, signal };
          send({ event: 'exit', attach: n, code, signal });
          reject(new Error(`stor attach exited (${code ?? signal}) before it was ready`));
        });
        setTimeout(() => reject(new Error('stor attach: no ready line in 90 s')), 90_000).unref();
      });
      a.device = await device;
      return { attach: n, device: a.device };
    },
    async detach(r) {
      const a = attached.get(r.attach as number);
      if (!a) throw new Error(`no attach ${String(r.attach)}`);
      if (!a.exited) {
        const gone = new Promise((res) => a.proc.once('close', res));
        a.proc.kill('SIGTERM');
        await gone;
      }
      attached.delete(r.attach as number);
      return a.exited!;
    },
    geometry: (r) => geometry(r.device as string),
    async batch(r) {
      const dev = r.device as string;
      const cpu = cpuOfQueue(dev, r.queue as number);
      const w = workers.get(cpu);
      if (!w) throw new Error(`no worker on CPU ${cpu}`);
      const id = ++batchId;
      const reply = new Promise<{ results?: AgentResult[]; error?: string }>((res) => pending.set(id, res));
      w.send({
        id,
        device: dev,
        ops: r.ops as AgentOp[],
        input: r.input ? join(share, r.input as string) : undefined,
        output: join(share, r.output as string),
      } satisfies BatchMessage);
      const m = await reply;
      if (m.error) throw new Error(m.error);
      return { results: m.results, cpu };
    },
    dump: (r) => ({ size: dump(r.path as string, join(share, r.out as string)) }),
    async quit() {
      for (const [n] of attached) await handlers.detach!({ attach: n });
      for (const w of workers.values()) w.kill();
      setTimeout(() => process.exit(0), 100);
      return {};
    },
  };

  let buffered = '';
  const input = (chunk: string): void => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line) continue;
      const r = JSON.parse(line) as Record<string, unknown>;
      Promise.resolve()
        .then(() => {
          const h = handlers[r.op as string];
          if (!h) throw new Error(`unknown op ${String(r.op)}`);
          return h(r);
        })
        .then(
          (answer) => send({ id: r.id, ...answer }),
          (e: Error) => send({ id: r.id, error: e.message }),
        );
    }
  };
  // A tty stream reads through epoll: a read blocked in the thread pool would keep exit() waiting.
  const reader = new ReadStream(port);
  reader.setRawMode(true);
  reader.on('data', (d: Buffer) => input(d.toString('latin1')));
  send({ event: 'up' });
}

const argv = process.argv.slice(2);
if (argv[0] === '--worker') worker();
else {
  const opt = (name: string): string => {
    const i = argv.indexOf(name);
    if (i < 0 || !argv[i + 1]) throw new Error(`guest-agent: ${name} is required`);
    return argv[i + 1]!;
  };
  agent(opt('--serial'), opt('--share'), opt('--stor')).catch((e: Error) => {
    process.stderr.write(`guest-agent: ${e.stack ?? e.message}\n`);
    process.exit(1);
  });
}
