// The one parser and the one formatter for device specs — what `--backend`, a client TARGET, a bench
// target and the device table all take: "driver:primary[,key=value...]" → { driver, props }.
// The primary value goes under the driver's primary property (null/mem → size, file and
// vhost-user → path, rbd → image, "POOL/IMAGE"). Inside a spec, ",," stands for a literal comma (as in
// QEMU's option syntax), so any path can be written and formatSpec(parseSpec(s)) round-trips.
// A path is a path: text that does not start with "word:" is a file (or, if it names a Unix socket,
// a vhost-user socket), relative or absolute; only an unknown "scheme:" is refused. Values are kept
// as strings here: each consumer (target.ts for commands, the native registry for drivers)
// validates the properties it understands.
import { statSync } from 'node:fs';
import { usageError } from './errors.js';

export interface Spec {
  driver: string;
  props: Record<string, string>;
}

interface DriverSyntax {
  primary: string;
  keys: readonly string[];
}

/** The drivers a spec may name, the property their primary value fills, and the keys they accept. */
export const SPEC_DRIVERS: Readonly<Record<string, DriverSyntax>> = {
  null: { primary: 'size', keys: ['size', 'read-zeroes'] },
  mem: { primary: 'size', keys: ['size'] },
  file: { primary: 'path', keys: ['path', 'create', 'direct', 'readonly', 'ro', 'ring-size', 'locking'] },
  'vhost-user': { primary: 'path', keys: ['path'] },
  rbd: {
    primary: 'image',
    keys: ['image', 'conf', 'id', 'keyring', 'create', 'snapshot', 'readonly', 'ro', 'connect-timeout'],
  },
};

/**
 * Fault-injection properties (native/bdev/fault.c) that every driver accepts: a filter in front of
 * the backend that delays requests (with jitter, so they complete out of order), fails them with EIO,
 * or holds them while a file exists. Ordinary properties rather than a wrapping driver, so a faulty
 * backend is written in the same one grammar: file:/img,delay-us=200,delay-jitter-us=800.
 */
export const FAULT_KEYS: readonly string[] = [
  'delay-us',
  'delay-jitter-us',
  'error-rate',
  'error-ops',
  'error-offset',
  'error-length',
  'stall-file',
  'fault-seed',
];

export const BACKEND_FORMS =
  'null:SIZE[,read-zeroes=off], mem:SIZE, file:PATH[,create=SIZE][,direct=on][,readonly=on], ' +
  'rbd:POOL/IMAGE[,conf=PATH][,id=USER][,keyring=PATH][,create=SIZE][,snapshot=NAME][,readonly=on] ' +
  '(e.g. mem:1G, file:/var/tmp/disk.img,create=512M, rbd:rbd/disk0,conf=/etc/ceph/ceph.conf)';
export const TARGET_FORMS = `vhost-user:SOCKET, ${BACKEND_FORMS}, or a path to a socket, file or block device`;

/** What the primary value is, in "'x:' needs ..." (default: a path). */
const PRIMARY_NOUN: Readonly<Record<string, string>> = {
  null: 'a size',
  mem: 'a size',
  'vhost-user': 'a socket path',
  rbd: 'POOL/IMAGE',
};

/** What a caller calls the thing it parses, for its error messages ("'x' is not a backend"). */
export interface SpecKind {
  noun: string;
  forms: string;
}
export const TARGET_KIND: SpecKind = { noun: 'target', forms: TARGET_FORMS };
export const BACKEND_KIND: SpecKind = { noun: 'backend', forms: BACKEND_FORMS };

/** "word:" at the start — a scheme, known or not. Anything else is a path. */
const SCHEME = /^([A-Za-z][A-Za-z0-9+._-]*):/;

/** Splits at single commas; ",," is a literal comma. */
function splitFields(text: string): string[] {
  const fields: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ',' && text[i + 1] === ',') {
      cur += ',';
      i++;
      continue;
    }
    if (c === ',') {
      fields.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  fields.push(cur);
  return fields;
}

const escapeValue = (v: string): string => v.replace(/,/g, ',,');

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false; /* not there (yet): a file */
  }
}

/** Parses a spec; throws a usage StorError naming `what` (the flag or argument) on anything else. */
export function parseSpec(text: string, what: string, kind: SpecKind = TARGET_KIND): Spec {
  const m = SCHEME.exec(text);
  if (!m) {
    if (!text) throw usageError(what, `an empty ${kind.noun}`, kind.forms);
    return { driver: isSocket(text) ? 'vhost-user' : 'file', props: { path: text } };
  }
  const driver = m[1];
  const syntax = SPEC_DRIVERS[driver];
  if (!syntax) throw usageError(what, `'${text}' is not a ${kind.noun}`, kind.forms);
  const [primary, ...options] = splitFields(text.slice(m[0].length));
  if (!primary) throw usageError(what, `'${driver}:' needs ${PRIMARY_NOUN[driver] ?? 'a path'}`, kind.forms);
  const props: Record<string, string> = { [syntax.primary]: primary };
  for (const o of options) {
    const eq = o.indexOf('=');
    const key = eq < 0 ? o : o.slice(0, eq);
    // a bare key is a flag switched on: "direct" means "direct=on"
    const value = eq < 0 ? 'on' : o.slice(eq + 1);
    if (FAULT_KEYS.includes(key) && driver === 'vhost-user')
      throw usageError(
        what,
        `fault injection (${key}) applies to backends stor opens itself, not to a vhost-user server`,
        `put it on the server's --backend (stor serve --backend file:IMG,${key}=...)`,
      );
    if (!(syntax.keys.includes(key) || FAULT_KEYS.includes(key)) || key === syntax.primary)
      throw usageError(what, `unknown ${driver} option '${key}'`, kind.forms);
    if (key in props) throw usageError(what, `${key} given twice`, kind.forms);
    props[key] = value;
  }
  return { driver, props };
}

/** The text parseSpec reads back to the same spec: primary value first, the other properties in order. */
export function formatSpec(spec: Spec): string {
  const syntax = SPEC_DRIVERS[spec.driver];
  if (!syntax) throw new TypeError(`formatSpec: unknown driver '${spec.driver}'`);
  const primary = spec.props[syntax.primary];
  if (primary === undefined || primary === '')
    throw new TypeError(`formatSpec: ${spec.driver} needs ${syntax.primary}`);
  let s = `${spec.driver}:${escapeValue(primary)}`;
  for (const [k, v] of Object.entries(spec.props))
    if (k !== syntax.primary && v !== undefined) s += `,${k}=${escapeValue(v)}`;
  return s;
}
