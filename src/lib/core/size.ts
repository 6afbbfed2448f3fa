// One parser for every size flag: "4096", "4k", "4K", "4KiB", "64M", "1G", "1GiB", "512MiB", "1T".
// Units are binary (k = 1024), as in qemu-img and fio's defaults; "KB"/"MB" are accepted as the
// same binary units because that is what storage people mean on a command line.
import { usageError } from './errors.js';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };
export const SIZE_FORMS =
  'a byte count or a number with k, M, G, T (binary; KiB/MiB/GiB also accepted), e.g. 4k, 64M, 1GiB';

/** Parses a size; throws a usage StorError naming `what` on anything else. */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpb]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw usageError(what, `'${text}' is not a size`, SIZE_FORMS);
  const value = Number(m[1]) * UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(value)) throw usageError(what, `'${text}' is not a whole number of bytes`, SIZE_FORMS);
  return value;
}

/** Like parseSize, but zero is refused. */
export function parsePositiveSize(text: string, what = 'size'): number {
  const v = parseSize(text, what);
  if (v <= 0) throw usageError(what, `'${text}' must be greater than zero`, SIZE_FORMS);
  return v;
}

/** 1073741824 -> "1 GiB", 1536 -> "1.5 KiB": for human output only. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes,
    i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const s = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, '');
  return `${s} ${units[i]}`;
}
