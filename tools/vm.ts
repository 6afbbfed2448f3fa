// Kernel-level test harness: boots a Linux guest (bookworm-backports 6.12, built by
// test/vm/setup.sh) under QEMU with TCG, optionally attached to vhost-user-blk servers, and runs
// a bash script inside it. The guest chroots into the host root (shared read-only over
// virtio-9p), so it runs the host's own programs; a second, read-write 9p share carries the
// script in and the results and the exit status out (QEMU's exit code is lost at power-off).
//
// Every QEMU started here is bounded: killed on timeout, at process exit and on SIGINT/SIGTERM/
// SIGHUP; and the guest powers itself off shortly after the timeout even if this process died.
//
// Library: runGuest({ script, vhostUserBlk, memoryMiB, timeoutMs, env }) -> GuestResult.
// CLI:     node dist/tools/vm.js --help
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CACHE, ROOT } from './paths.js';
import { spawnChild } from './run.js';

export interface VhostUserBlkDisk {
  /** Unix socket of a vhost-user-blk server (stor serve, qemu-storage-daemon). */
  socket: string;
  /** num-queues of the guest's virtio-blk device; default 1. */
  queues?: number;
  /** QEMU reconnects to a server that went away after this many seconds (the chardev's reconnect=). */
  reconnect?: number;
}

/** How QEMU's TCG maps vCPUs to host threads: all on one, or one each. */
export type TcgThread = 'single' | 'multi';

export interface GuestOptions {
  /** Bash script run inside the guest, chrooted into the host root, cwd /tmp (a tmpfs). */
  script: string;
  /** One virtio-blk disk per entry, in order: /dev/vda, /dev/vdb, ... */
  vhostUserBlk?: VhostUserBlkDisk[];
  /** Guest RAM in MiB (a shared memfd, which vhost-user needs). Default 1024. */
  memoryMiB?: number;
  /** Guest vCPUs. Default 2 (virtio-blk uses at most one queue per vCPU). */
  cpus?: number;
  /** TCG threading; without it STOR_VM_TCG_THREAD, else TCG_THREAD_DEFAULT (see there for why single). */
  tcgThread?: TcgThread;
  /** QEMU is killed after this long. Default 120 000. */
  timeoutMs?: number;
  /** Exported to the script. */
  env?: Record<string, string>;
  /** Files written into the share before boot; the guest reads them in $STOR_VM_SHARE/NAME. */
  files?: Record<string, string | Buffer>;
  /** Called with every piece of console output as it arrives. */
  onConsole?: (text: string) => void;
  /** Copy the console to stderr as it arrives (default: STOR_VM_VERBOSE=1 in the environment). */
  echo?: boolean;
  /** Appended to the QEMU command line. */
  extraQemuArgs?: string[];
  /** Kills QEMU when aborted (a caller that gave up on the guest before its script ended). */
  signal?: AbortSignal;
}

export interface GuestResult {
  /** The script's exit status, read from the share; null if the script never finished. */
  status: number | null;
  timedOut: boolean;
  /** Serial console and QEMU's own output, \r\n folded to \n. */
  console: string;
  /** Host directory the script wrote through $STOR_VM_RESULTS. */
  resultsDir: string;
  durationMs: number;
  qemuExit: { code: number | null; signal: NodeJS.Signals | null };
  /** QEMU's process id (gone by the time the result exists). */
  pid: number | undefined;
  /** Removes the run's share directory (results included). */
  cleanup(): void;
}

/** Where the script sees things inside the guest. */
export const GUEST_SHARE = '/run/stor-vm';
export const GUEST_RESULTS = `${GUEST_SHARE}/results`;

export interface VmImage {
  dir: string;
  kernel: string;
  initrd: string;
}

/** The cached kernel and initramfs; throws with the fix when setup has not run. */
export function vmImage(): VmImage {
  const dir = join(CACHE, 'vm', 'current');
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initramfs.cpio');
  if (!existsSync(kernel) || !existsSync(initrd) || !existsSync(join(dir, 'ready'))) {
    throw new Error(`no guest image in ${dir}: run test/vm/setup.sh as root (scripts/setup-debian.sh does)`);
  }
  return { dir: realpathSync(dir), kernel, initrd };
}

// ---- every QEMU is killed when this process goes ----
const live = new Set<ChildProcess>();
function killAll(): void {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  live.clear();
}
/** How many QEMU processes started here are still running (0 between runs). */
export function liveGuests(): number {
  return live.size;
}
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      killAll();
      // Only take over the signal's default (exit) when nobody else handles it.
      if (process.listenerCount(sig) === 1) process.exit(128 + (osConstants.signals[sig] ?? 0));
    };
    process.on(sig, onSignal);
  }
}

/**
 * The repository as the host sees it, when the guest cannot: the guest mounts fresh tmpfs over /tmp
 * and /run, so a clone there (CI's, for one) would be invisible to the stor it runs. It then gets
 * a share of its own (tag storrepo), mounted read-only at the same path before the script runs.
 */
function hiddenRepo(): string | undefined {
  const root = realpathSync(ROOT);
  return /^\/(tmp|run)(\/|$)/.test(root) ? root : undefined;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** QEMU 7.2's multi-threaded TCG races with the guest kernel's live code patching (text_poke_bp
 *  on static keys and alternatives): a vCPU can run a stale translation that still holds the
 *  temporary int3 after patching is over, and the guest dies with "Oops: int3" (seen in CI, in
 *  boot, while the host was busy). One TCG thread serialises the vCPUs, so a write to kernel text
 *  invalidates translations before any vCPU runs again; guests still see 2 CPUs and 2 queues. */
export const TCG_THREAD_DEFAULT: TcgThread = 'single';

const isTcgThread = (v: string | undefined): v is TcgThread => v === 'single' || v === 'multi';

/** The caller's choice, else the environment's (for A/B runs of whole suites), else the default. */
function tcgThread(o: GuestOptions): TcgThread {
  const env = process.env.STOR_VM_TCG_THREAD;
  return o.tcgThread ?? (isTcgThread(env) ? env : TCG_THREAD_DEFAULT);
}

/** QEMU command line for one run (exported for the CLI's --dry-run and for debugging). */
export function qemuArgs(o: GuestOptions, shareDir: string, img: VmImage): string[] {
  const mem = o.memoryMiB ?? 1024;
  const timeoutS = Math.ceil((o.timeoutMs ?? 120_000) / 1000);
  const args = [
    '-accel',
    `tcg,thread=${tcgThread(o)}`,
    '-cpu',
    'max',
    '-smp',
    String(o.cpus ?? 2),
    // vhost-user maps guest RAM in the server: it must be a shareable memfd.
    '-m',
    `${mem}M`,
    '-object',
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-machine',
    'pc,memory-backend=mem',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    img.kernel,
    '-initrd',
    img.initrd,
    // The guest's own watchdog fires a little after ours: it only matters if we are gone.
    '-append',
    `console=ttyS0 quiet panic=-1 stor.timeout=${timeoutS + 15}`,
    '-virtfs',
    'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs',
    `local,path=${shareDir},mount_tag=storvm,security_model=none`,
  ];
  const repo = hiddenRepo();
  if (repo) args.push('-virtfs', `local,path=${repo},mount_tag=storrepo,security_model=none,readonly=on`);
  (o.vhostUserBlk ?? []).forEach((d, i) => {
    args.push(
      '-chardev',
      `socket,id=vub${i},path=${d.socket}${d.reconnect ? `,reconnect=${d.reconnect}` : ''}`,
      '-device',
      `vhost-user-blk-pci,chardev=vub${i},num-queues=${d.queues ?? 1}`,
    );
  });
  args.push(...(o.extraQemuArgs ?? []));
  return args;
}

/** run.sh's lines that mount a repository the guest's tmpfs would hide (see hiddenRepo). */
function repoMount(): string {
  const repo = hiddenRepo();
  if (!repo) return '';
  const q = shellQuote(repo);
  return (
    `mkdir -p ${q} && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose storrepo ${q} ` +
    `|| { echo "stor-vm: cannot mount the repository at ${repo}" >&2; exit 1; }\n`
  );
}

/** Boots a guest, runs o.script in it, and resolves when QEMU is gone (never rejects on guest failure). */
export function runGuest(o: GuestOptions): Promise<GuestResult> {
  const img = vmImage();
  hookExit();
  const timeoutMs = o.timeoutMs ?? 120_000;
  const shareDir = mkdtempSync(join(tmpdir(), 'stor-vm-'));
  const resultsDir = join(shareDir, 'results');
  mkdirSync(resultsDir);
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    TERM: 'dumb',
    LANG: 'C.UTF-8',
    STOR_VM_SHARE: GUEST_SHARE,
    STOR_VM_RESULTS: GUEST_RESULTS,
    ...(o.env ?? {}),
  };
  for (const k of Object.keys(env)) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad env name: ${k}`);
  for (const [name, data] of Object.entries(o.files ?? {})) {
    if (!/^[A-Za-z0-9._-]+$/.test(name) || ['run.sh', 'script.sh', 'status', 'results'].includes(name)) {
      throw new Error(`bad share file name: ${name}`);
    }
    writeFileSync(join(shareDir, name), data);
  }
  writeFileSync(join(shareDir, 'script.sh'), o.script);
  writeFileSync(
    join(shareDir, 'run.sh'),
    Object.entries(env)
      .map(([k, v]) => `export ${k}=${shellQuote(v)}\n`)
      .join('') +
      repoMount() +
      `cd /tmp\nexec /bin/bash ${GUEST_SHARE}/script.sh\n`,
  );

  const echo = o.echo ?? process.env.STOR_VM_VERBOSE === '1';
  const started = Date.now();
  return new Promise((resolveRun) => {
    // spawnChild starts it; the timeout, the abort and the exit/signal hooks stay this harness's own
    let out = '';
    let timedOut = false;
    const onText = (raw: string) => {
      const text = raw.replace(/\r\n/g, '\n').replace(/\r/g, '');
      out += text;
      if (echo) process.stderr.write(text);
      o.onConsole?.(text);
    };
    const { proc, ended } = spawnChild('qemu-system-x86_64', qemuArgs(o, shareDir, img), onText);
    live.add(proc);
    const timer = setTimeout(() => {
      timedOut = true;
      onText(`\n[harness] timeout after ${timeoutMs} ms: killing QEMU\n`);
      proc.kill('SIGKILL');
    }, timeoutMs);
    const onAbort = () => {
      onText('\n[harness] aborted by the caller: killing QEMU\n');
      proc.kill('SIGKILL');
    };
    if (o.signal?.aborted) onAbort();
    else o.signal?.addEventListener('abort', onAbort, { once: true });
    // once QEMU is gone and all its console output read
    void ended.then(({ code, signal, error }) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      live.delete(proc);
      if (error) out += `\n[harness] cannot run qemu-system-x86_64: ${error.message}\n`;
      let status: number | null = null;
      try {
        const s = readFileSync(join(shareDir, 'status'), 'utf8').trim();
        if (/^\d+$/.test(s)) status = Number(s);
      } catch {
        /* the script never finished */
      }
      resolveRun({
        status,
        timedOut,
        console: out,
        resultsDir,
        pid: proc.pid,
        durationMs: Date.now() - started,
        qemuExit: { code, signal },
        cleanup: () => rmSync(shareDir, { recursive: true, force: true }),
      });
    });
  });
}

/** The last `lines` lines of the console, for failure messages. */
export function consoleTail(r: GuestResult, lines = 120): string {
  const all = r.console.trimEnd().split('\n');
  return (all.length > lines ? [`... (${all.length - lines} earlier lines)`] : []).concat(all.slice(-lines)).join('\n');
}

/** Throws, with the console's tail, unless the script exited 0. */
export function assertGuestOk(r: GuestResult, what: string): void {
  if (r.status === 0) return;
  const why = r.timedOut
    ? 'timed out'
    : r.status === null
      ? `never finished (QEMU exit ${r.qemuExit.code ?? r.qemuExit.signal})`
      : `exited ${r.status}`;
  throw new Error(`guest: ${what} ${why} after ${Math.round(r.durationMs / 1000)} s; console:\n${consoleTail(r)}`);
}

// ---- CLI ----
const USAGE = `usage: node dist/tools/vm.js [options] (--script FILE | -- COMMAND...)
Boots the stor test guest under QEMU (TCG) and runs a bash script or command in it; exits with
its status (124 on timeout, 125 if it never finished). The console is copied to stdout.
  --vhost-user-blk SOCK   attach a vhost-user-blk server as the next /dev/vdX (repeatable)
  --queues N              num-queues of the preceding --vhost-user-blk (default 1)
  --memory MIB            guest RAM (default 1024)
  --cpus N                guest vCPUs (default 2)
  --tcg-thread single|multi  TCG threads: one for all vCPUs (default) or one each
  --timeout SECS          kill QEMU after SECS (default 120)
  --env NAME=VALUE        export to the script (repeatable)
  --keep                  keep the results directory (printed on stderr)
  --dry-run               print the QEMU command line and exit
Inside the guest: the host root read-only (chroot), /tmp a tmpfs, $STOR_VM_RESULTS written back
to the host. Needs test/vm/setup.sh to have run (as root).`;

async function main(argv: string[]): Promise<number> {
  const o: GuestOptions = { script: '', vhostUserBlk: [], env: {}, echo: false };
  let keep = false;
  let dry = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const num = () => {
      const v = Number(val());
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive integer`);
      return v;
    };
    switch (a) {
      case '--vhost-user-blk':
        o.vhostUserBlk!.push({ socket: resolve(val()), queues: 1 });
        break;
      case '--queues': {
        const last = o.vhostUserBlk!.at(-1);
        if (!last) throw new Error('--queues must follow a --vhost-user-blk');
        last.queues = num();
        break;
      }
      case '--memory':
        o.memoryMiB = num();
        break;
      case '--cpus':
        o.cpus = num();
        break;
      case '--tcg-thread': {
        const v = val();
        if (!isTcgThread(v)) throw new Error('--tcg-thread takes single or multi');
        o.tcgThread = v;
        break;
      }
      case '--timeout':
        o.timeoutMs = num() * 1000;
        break;
      case '--env': {
        const kv = val();
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new Error('--env needs NAME=VALUE');
        o.env![kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--script':
        o.script = readFileSync(val(), 'utf8');
        break;
      case '--keep':
        keep = true;
        break;
      case '--dry-run':
        dry = true;
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        return 0;
      case '--':
        o.script = argv.slice(i + 1).join(' ') + '\n';
        i = argv.length;
        break;
      default:
        throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!o.script) throw new Error('nothing to run: give --script FILE or -- COMMAND');
  if (dry) {
    process.stdout.write(
      ['qemu-system-x86_64', ...qemuArgs(o, '<share>', vmImage())]
        .map((s) => (/[\s']/.test(s) ? shellQuote(s) : s))
        .join(' ') + '\n',
    );
    return 0;
  }
  o.onConsole = (t) => process.stdout.write(t);
  const r = await runGuest(o);
  if (keep) process.stderr.write(`[harness] results: ${r.resultsDir}\n`);
  else r.cleanup();
  process.stderr.write(
    `[harness] ${r.timedOut ? 'timed out' : `status ${r.status ?? 'none'}`} in ${(r.durationMs / 1000).toFixed(1)} s\n`,
  );
  if (r.timedOut) return 124;
  return r.status ?? 125;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`harness: ${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`);
      process.exitCode = 2;
    },
  );
}
