// Which storage a target names, to tell when two targets are the same image however they are
// spelled (file:IMG, ./IMG, a symlink, a hard link, two nodes of one block device, one socket): a
// file or socket is its st_dev + st_ino, a block device its st_rdev. null: and mem: targets are a new
// device at each open, and a path that does not exist yet is a new file: neither is anything else.
import { statSync } from 'node:fs';
import type { Target } from '../core/target.js';

export function storageIdentity(t: Target): string | undefined {
  if (t.kind === 'null' || t.kind === 'mem') return undefined;
  try {
    const st = statSync(t.path);
    return st.isBlockDevice() ? `block:${st.rdev}` : `${st.isSocket() ? 'socket' : 'file'}:${st.dev}:${st.ino}`;
  } catch { return undefined; }
}

/** True when a and b are the same image and [aOffset, aOffset+length) meets [bOffset, bOffset+length). */
export function overlappingRanges(a: Target, aOffset: number, b: Target, bOffset: number, length: number): boolean {
  if (length <= 0) return false;
  const id = storageIdentity(a);
  return id !== undefined && id === storageIdentity(b) && aOffset < bOffset + length && bOffset < aOffset + length;
}
