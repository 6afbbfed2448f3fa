// Records of the kernel disks stor has attached on this machine (VDUSE and ublk), one JSON file per
// disk under /run/stor/attach. `stor attach --list` reads them; a later attach with the same name
// (VDUSE) or id (ublk) finds a disk left behind by a killed process there; recovery (ublk
// --recover, VDUSE --reconnect) takes the saved spec from them. /run is a tmpfs: records do not
// outlive a reboot, and neither do the kernel devices they describe.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type AttachTransport = 'vduse' | 'ublk';

export interface AttachedRecord {
  transport: AttachTransport;
  /** VDUSE device name, or the ublk device id as a decimal string. */
  name: string;
  /** The kernel block node, e.g. /dev/vda or /dev/ublkb0 ('' until the kernel has bound it). */
  node: string;
  /** The backend, as canonical spec text (formatSpec). */
  backend: string;
  /** The serving process. */
  pid: number;
  capacity: number;
  queues: number;
  /** Export options needed to re-create or recover the disk the same way (queue size, block size...). */
  options: Record<string, unknown>;
  /** ISO time of the attach. */
  createdAt: string;
}

export interface AttachedListing extends AttachedRecord {
  /** Whether the serving process is still alive (false: the disk was left behind by a dead process). */
  alive: boolean;
}

/** Directory of the records; STOR_RUN_DIR moves it (tests, non-root experiments). */
export function attachDir(): string {
  return join(process.env.STOR_RUN_DIR ?? '/run/stor', 'attach');
}

function recordPath(transport: AttachTransport, name: string): string {
  return join(attachDir(), `${transport}-${name}.json`);
}

/** Writes (or replaces) a record atomically: a reader never sees half a file. */
export function saveAttached(record: AttachedRecord): void {
  mkdirSync(attachDir(), { recursive: true, mode: 0o755 });
  const path = recordPath(record.transport, record.name);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(record, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

export function removeAttached(transport: AttachTransport, name: string): void {
  rmSync(recordPath(transport, name), { force: true });
}

export function readAttached(transport: AttachTransport, name: string): AttachedListing | undefined {
  const path = recordPath(transport, name);
  if (!existsSync(path)) return undefined;
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as AttachedRecord;
    return { ...r, alive: processAlive(r.pid) };
  } catch {
    return undefined; // a torn or foreign file is not a record
  }
}

/** Every record, ublk and VDUSE, sorted by transport then name. */
export function listAttached(): AttachedListing[] {
  const dir = attachDir();
  if (!existsSync(dir)) return [];
  const out: AttachedListing[] = [];
  for (const f of readdirSync(dir)) {
    const m = /^(vduse|ublk)-(.+)\.json$/.exec(f);
    if (!m) continue;
    const r = readAttached(m[1] as AttachTransport, m[2]);
    if (r) out.push(r);
  }
  return out.sort(
    (a, b) => a.transport.localeCompare(b.transport) || a.name.localeCompare(b.name, 'en', { numeric: true }),
  );
}

export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
