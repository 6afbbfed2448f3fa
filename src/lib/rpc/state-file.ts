// `stor daemon --state FILE`: the daemon's configuration kept on disk, so a daemon killed in any way
// (SIGKILL, a crash, a reboot) comes back with every bdev and controller it had. The file is a
// save_config document (what `rpc.py save_config` prints), not DeviceTable.toJSON(): that form keeps
// what SPDK clients see and the table does not — each bdev's create method (malloc vs null vs aio),
// its uuid and block size — it is replayed by the same loadConfig path as --config, and rpc.py
// load_config (or a later --config) reads it as it is. It is written whole on every change: a temporary
// file in the same directory, fsync, rename over the old one, fsync of the directory, so after a crash
// the file is the old state or the new one, never a mix or an empty file. Reading refuses anything
// that is not such a document: a daemon must never start empty because its state could not be read.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { StorError } from '../core/errors.js';
import type { SpdkConfig } from './spdk-client.js';

/**
 * The saved configuration, or undefined when the file does not exist yet (a first start). An
 * unreadable file, or one that is not a save_config document, throws a StorError (exit 1).
 */
export function readStateFile(path: string): SpdkConfig | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new StorError(`--state ${path}: cannot read it: ${code ?? (e as Error).message}`, {
      hint: 'fix its permissions, or move it away to start with no devices',
    });
  }
  const corrupt = (why: string): StorError =>
    new StorError(`--state ${path}: not a stor state file (${why})`, {
      hint: 'restore it from a save_config copy, or move it away to start with no devices',
    });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw corrupt((e as Error).message);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw corrupt('not a JSON object');
  const subsystems = (doc as { subsystems?: unknown }).subsystems;
  if (!Array.isArray(subsystems)) throw corrupt('no "subsystems" array');
  for (const s of subsystems) {
    const config = (s as { config?: unknown } | null)?.config;
    if (typeof s !== 'object' || s === null || (config !== undefined && config !== null && !Array.isArray(config)))
      throw corrupt('a subsystem without a "config" array');
  }
  return doc as SpdkConfig;
}

/** Replaces the file with this configuration atomically and durably (tmp + fsync + rename + fsync dir). */
export function writeStateFile(path: string, config: SpdkConfig): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const text = JSON.stringify(config, null, 2) + '\n';
  try {
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* not created, or renamed already */
    }
    throw new StorError(
      `--state ${path}: cannot write it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}
