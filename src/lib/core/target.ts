// One parser for every target and backend spec a command accepts:
//   vhost-user:/run/x.sock        a vhost-user-blk socket (client side)
//   file:/img[,create=SIZE][,direct=on][,readonly=on]   a raw image (or block device) through io_uring
//   /dev/vdb, /path/img           a bare path: a block device or file (a socket path means vhost-user)
//   null:1G                       reads return zeros, writes are dropped
//   mem:1G                        a sparse in-memory disk (memfd)
import { statSync } from 'node:fs';
import { usageError } from './errors.js';
import { parsePositiveSize } from './size.js';

export type Target =
  | { kind: 'vhost-user'; path: string }
  | { kind: 'file'; path: string; create?: number; direct: boolean; readonly: boolean; ringSize?: number }
  | { kind: 'null'; size: number }
  | { kind: 'mem'; size: number };

export const BACKEND_FORMS = 'null:SIZE, mem:SIZE, file:PATH[,create=SIZE][,direct=on][,readonly=on] (e.g. mem:1G, file:/var/tmp/disk.img,create=512M)';
export const TARGET_FORMS = `vhost-user:SOCKET, ${BACKEND_FORMS}, or a path to a socket, file or block device`;

function parseOnOff(what: string, key: string, v: string | undefined): boolean {
  if (v === undefined || v === 'on' || v === 'true' || v === '1' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === '0' || v === 'no') return false;
  throw usageError(what, `${key}=${v}: expected on or off`);
}

function parseFile(what: string, spec: string, forms: string): Target {
  const [path, ...opts] = spec.split(',');
  if (!path) throw usageError(what, `'file:' needs a path`, forms);
  const t: Extract<Target, { kind: 'file' }> = { kind: 'file', path, direct: false, readonly: false };
  for (const o of opts) {
    const eq = o.indexOf('=');
    const key = eq < 0 ? o : o.slice(0, eq);
    const val = eq < 0 ? undefined : o.slice(eq + 1);
    switch (key) {
      case 'create':
        if (val === undefined) throw usageError(what, 'create needs a size (create=SIZE)', forms);
        t.create = parsePositiveSize(val, `${what} create=`);
        if (t.create % 512) throw usageError(what, `create=${val} is not a multiple of 512 bytes`, forms);
        break;
      case 'direct': t.direct = parseOnOff(what, key, val); break;
      case 'readonly': case 'ro': t.readonly = parseOnOff(what, key, val); break;
      case 'ring-size':
        if (val === undefined || !/^\d+$/.test(val)) throw usageError(what, `ring-size needs a number of entries (ring-size=N)`, forms);
        t.ringSize = Number(val);
        break;
      default: throw usageError(what, `unknown file option '${key}'`, forms);
    }
  }
  return t;
}

function parseSized(what: string, kind: 'null' | 'mem', rest: string, forms: string): Target {
  if (!rest) throw usageError(what, `'${kind}:' needs a size`, forms);
  const size = parsePositiveSize(rest, what);
  if (size % 512) throw usageError(what, `${kind}:${rest} is not a multiple of 512 bytes`, forms);
  return { kind, size };
}

/** A backend stor can serve: null, mem or file. */
export function parseBackend(text: string, what = '--backend'): Exclude<Target, { kind: 'vhost-user' }> {
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? '' : text.slice(0, colon);
  const rest = colon < 0 ? '' : text.slice(colon + 1);
  switch (scheme) {
    case 'null': case 'mem': return parseSized(what, scheme, rest, BACKEND_FORMS) as Exclude<Target, { kind: 'vhost-user' }>;
    case 'file': return parseFile(what, rest, BACKEND_FORMS) as Exclude<Target, { kind: 'vhost-user' }>;
    default: throw usageError(what, `'${text}' is not a backend`, BACKEND_FORMS);
  }
}

/** Anything a client command can open. */
export function parseTarget(text: string, what = 'target'): Target {
  if (text.startsWith('vhost-user:')) {
    const path = text.slice('vhost-user:'.length);
    if (!path) throw usageError(what, `'vhost-user:' needs a socket path`, TARGET_FORMS);
    return { kind: 'vhost-user', path };
  }
  if (/^(null|mem|file):/.test(text)) return parseBackend(text, what);
  if (text.startsWith('/') || text.startsWith('.')) {
    let isSocket = false;
    try { isSocket = statSync(text).isSocket(); } catch { /* not there (yet): a file */ }
    return isSocket ? { kind: 'vhost-user', path: text } : { kind: 'file', path: text, direct: false, readonly: false };
  }
  throw usageError(what, `'${text}' is not a target`, TARGET_FORMS);
}

export function formatTarget(t: Target): string {
  switch (t.kind) {
    case 'vhost-user': return `vhost-user:${t.path}`;
    case 'null': case 'mem': return `${t.kind}:${t.size}`;
    case 'file': return `file:${t.path}${t.create ? `,create=${t.create}` : ''}${t.direct ? ',direct=on' : ''}${t.readonly ? ',readonly=on' : ''}${t.ringSize ? `,ring-size=${t.ringSize}` : ''}`;
  }
}
