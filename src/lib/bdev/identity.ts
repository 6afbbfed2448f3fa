// Which storage a target names, to tell when two targets are the same image however they are
// spelled (file:IMG, ./IMG, a symlink, a hard link, two nodes of one block device, one socket): a
// file or socket is its st_dev + st_ino, a block device its st_rdev. null: and mem: targets are a new
// device at each open, and a path that does not exist yet is a new file: neither is anything else.
// An rbd image is its pool/image (and snapshot) on the cluster its conf= names.
import { statSync } from 'node:fs';
import type { Target } from '../core/target.js';
import { StorError } from '../core/errors.js';

export function storageIdentity(t: Target): string | undefined {
  if (t.kind === 'null' || t.kind === 'mem') return undefined;
  if (t.kind === 'rbd') return `rbd:${t.conf ?? ''}:${t.image}@${t.snapshot ?? ''}`;
  try {
    const st = statSync(t.path);
    return st.isBlockDevice() ? `block:${st.rdev}` : `${st.isSocket() ? 'socket' : 'file'}:${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** True when a and b are the same image and [aOffset, aOffset+length) meets [bOffset, bOffset+length). */
export function overlappingRanges(a: Target, aOffset: number, b: Target, bOffset: number, length: number): boolean {
  if (length <= 0) return false;
  const id = storageIdentity(a);
  return id !== undefined && id === storageIdentity(b) && aOffset < bOffset + length && bOffset < aOffset + length;
}

/**
 * A regular file whose size is not a whole number of 512-byte sectors would be served and copied short
 * (the block layer counts sectors, the tail would be dropped in silence). QEMU rounds such a file up and
 * reads the tail as zeros; stor refuses it and says how to make it whole. Block devices and files that
 * do not exist yet (create=) pass.
 */
export function assertWholeSectors(path: string): void {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) return;
    size = st.size;
  } catch {
    return;
  }
  if (size % 512 === 0) return;
  const up = Math.ceil(size / 512) * 512;
  throw new StorError(
    `${path}: its size (${size} bytes) is not a multiple of 512; the last ${size % 512} bytes would be lost`,
    {
      hint: `pad it to whole sectors first: truncate -s ${up} ${path}`,
    },
  );
}
