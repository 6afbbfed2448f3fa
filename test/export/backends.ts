// The backends an export is tested over, each with a model: a Buffer holding what every byte of the
// backend must be. A file image starts as random bytes (so a stray write anywhere shows) and is
// compared on disk; mem and null are read back through the export. One fixture serves one export
// cell; how a given server is told about it (stor's spec, qemu-storage-daemon's blockdev) is the
// launcher's business (tools/servers.ts), fed by launcherSpec().
import { randomBytes } from 'node:crypto';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import type { BackendSpec } from '../helpers/servers.js';

export type BackendKind = 'null' | 'mem' | 'file' | 'file-direct';

export const BACKEND_KINDS: readonly BackendKind[] = ['null', 'mem', 'file', 'file-direct'];

/** Where file-direct images live: /tmp may be tmpfs (no O_DIRECT); /var/tmp is on a disk. */
const DIRECT_DIR = '/var/tmp';

/** Why a backend cannot be tested on this machine, or undefined if it can. */
export function backendUnavailable(kind: BackendKind): string | undefined {
  if (kind !== 'file-direct') return undefined;
  const probe = join(DIRECT_DIR, `stor-odirect-probe-${process.pid}`);
  try {
    closeSync(openSync(probe, constants.O_CREAT | constants.O_RDWR | constants.O_DIRECT));
    return undefined;
  } catch (e) {
    return `${DIRECT_DIR} does not take O_DIRECT (${(e as NodeJS.ErrnoException).code})`;
  } finally {
    try {
      unlinkSync(probe);
    } catch {
      /* never created */
    }
  }
}

/** Index of the first differing byte, or -1. */
export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

export class BackendFixture {
  /** What every byte of the backend must be. */
  readonly model: Buffer;
  /** The image (file kinds, and mem served by qemu-storage-daemon as a tmpfs file). */
  image?: string;
  private dir?: string;

  /**
   * @param onTmpfs mem served by a server without a memory backend (qemu-storage-daemon): a file
   *   in /dev/shm stands in for it.
   */
  constructor(
    readonly kind: BackendKind,
    readonly size: number,
    readonly onTmpfs = false,
  ) {
    this.model = kind === 'file' || kind === 'file-direct' ? randomBytes(size) : Buffer.alloc(size);
    const base =
      kind === 'file-direct'
        ? DIRECT_DIR
        : kind === 'mem'
          ? onTmpfs
            ? '/dev/shm'
            : undefined
          : kind === 'file'
            ? tmpdir()
            : undefined;
    if (base) {
      this.dir = mkdtempSync(join(base, `stor-conf-${kind}-`));
      this.image = join(this.dir, 'disk.img');
      writeFileSync(this.image, this.model);
    }
  }

  /** null drops writes and reads zeros: nothing written ever reads back. */
  get persists(): boolean {
    return this.kind !== 'null';
  }

  /** What the launcher starts a server on. */
  launcherSpec(o: { qsdDiscard?: boolean } = {}): BackendSpec {
    if (this.image)
      return { kind: 'file', path: this.image, direct: this.kind === 'file-direct', discard: o.qsdDiscard };
    return { kind: this.kind as 'null' | 'mem', size: this.size };
  }

  /** A new server over a backend that lives in its process (stor's mem) starts from zeros. */
  serverRestarted(): void {
    if (this.kind === 'mem' && !this.image) this.model.fill(0);
  }

  /** Records a write the export acknowledged (null keeps nothing). */
  wrote(offset: number, data: Buffer): void {
    if (this.persists) data.copy(this.model, offset);
  }
  zeroed(offset: number, length: number): void {
    this.model.fill(0, offset, offset + length);
  }

  /** The whole backend equals the model: the image on disk, or what readAll() returns. */
  async assertMatches(readAll: () => Promise<Buffer>): Promise<void> {
    const actual = this.image ? await this.readImage() : await readAll();
    assert.is(actual.length, this.size, 'backend size');
    const d = firstDifference(actual, this.model);
    if (d >= 0) {
      assert.unreachable(
        `backend differs from the model first at byte ${d} (sector ${Math.floor(d / 512)}): ` +
          `0x${actual[d]?.toString(16)} instead of 0x${this.model[d]?.toString(16)}`,
      );
    }
  }

  /** The image as it is now (a fixture whose image lives elsewhere, in the test guest, fetches it). */
  protected async readImage(): Promise<Buffer> {
    return readFileSync(this.image!);
  }

  cleanup(): void {
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
