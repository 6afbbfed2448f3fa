// Typed views of a spec for the commands and the client: `Target` is what a client command opens,
// a backend is what `stor serve` serves. Parsing and formatting are spec.ts's (one parser, one
// formatter); this file only checks and converts property values:
//   vhost-user:/run/x.sock        a vhost-user-blk socket (client side)
//   file:/img[,create=SIZE][,direct=on][,readonly=on]   a raw image (or block device) through io_uring
//   /dev/vdb, disk.img, sub/x.img a bare path: a block device or file (a socket path means vhost-user)
//   null:1G                       reads return zeros, writes are dropped
//   mem:1G                        a sparse in-memory disk (memfd)
//   rbd:POOL/IMAGE[,conf=PATH][,id=USER][,keyring=PATH][,create=SIZE][,snapshot=NAME]   a Ceph RBD image
import { usageError } from './errors.js';
import { parsePositiveSize } from './size.js';
import {
  BACKEND_FORMS,
  BACKEND_KIND,
  FAULT_KEYS,
  TARGET_FORMS,
  TARGET_KIND,
  formatSpec,
  parseSpec,
  type Spec,
  type SpecKind,
} from './spec.js';

export { BACKEND_FORMS, TARGET_FORMS };

/** Fault-injection properties (spec.ts FAULT_KEYS), checked by the native filter when the backend opens. */
export interface FaultOptions {
  faults?: Record<string, string>;
}

export type Target = (
  | { kind: 'vhost-user'; path: string }
  | {
      kind: 'file';
      path: string;
      create?: number;
      direct: boolean;
      readonly: boolean;
      ringSize?: number;
      locking?: 'on' | 'off' | 'auto';
    }
  | { kind: 'null'; size: number; /** false: reads leave buffers untouched (SPDK's null bdev) */ readZeroes?: false }
  | { kind: 'mem'; size: number }
  | {
      kind: 'rbd';
      /** POOL/IMAGE or POOL/NAMESPACE/IMAGE */
      image: string;
      conf?: string;
      id?: string;
      keyring?: string;
      create?: number;
      snapshot?: string;
      readonly: boolean;
      connectTimeout?: number;
    }
) &
  FaultOptions;

/** POOL/IMAGE or POOL/NAMESPACE/IMAGE: no empty part, no '@' (a snapshot is snapshot=NAME). */
const RBD_IMAGE = /^[^/@]+(\/[^/@]+)?\/[^/@]+$/;

/** The fault-injection properties of a spec, if any. */
function faultsOf(spec: Spec): FaultOptions {
  const f = Object.entries(spec.props).filter(([k]) => FAULT_KEYS.includes(k));
  return f.length ? { faults: Object.fromEntries(f) } : {};
}

/** Checks a parsed spec's values and turns it into a Target. */
export function targetFromSpec(spec: Spec, what = 'target', kind: SpecKind = TARGET_KIND): Target {
  const t = plainTargetFromSpec(spec, what, kind);
  return { ...t, ...faultsOf(spec) };
}

function parseOnOff(what: string, key: string, v: string): boolean {
  if (v === 'on' || v === 'true' || v === '1' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === '0' || v === 'no') return false;
  throw usageError(what, `${key}=${v}: expected on or off`);
}

function plainTargetFromSpec(spec: Spec, what: string, kind: SpecKind): Target {
  const p = spec.props;
  switch (spec.driver) {
    case 'vhost-user':
      return { kind: 'vhost-user', path: p.path };
    case 'null':
    case 'mem': {
      const size = parsePositiveSize(p.size, what);
      if (size % 512) throw usageError(what, `${spec.driver}:${p.size} is not a multiple of 512 bytes`, kind.forms);
      if (
        spec.driver === 'null' &&
        p['read-zeroes'] !== undefined &&
        !parseOnOff(what, 'read-zeroes', p['read-zeroes'])
      )
        return { kind: 'null', size, readZeroes: false };
      return { kind: spec.driver, size };
    }
    case 'file': {
      const t: Extract<Target, { kind: 'file' }> = { kind: 'file', path: p.path, direct: false, readonly: false };
      if (p.create !== undefined) {
        if (p.create === 'on') throw usageError(what, 'create needs a size (create=SIZE)', kind.forms);
        t.create = parsePositiveSize(p.create, `${what} create=`);
        if (t.create % 512) throw usageError(what, `create=${p.create} is not a multiple of 512 bytes`, kind.forms);
      }
      if (p.direct !== undefined) t.direct = parseOnOff(what, 'direct', p.direct);
      for (const key of ['readonly', 'ro']) if (p[key] !== undefined) t.readonly = parseOnOff(what, key, p[key]);
      if (p['ring-size'] !== undefined) {
        if (!/^\d+$/.test(p['ring-size']))
          throw usageError(what, `ring-size needs a number of entries (ring-size=N)`, kind.forms);
        t.ringSize = Number(p['ring-size']);
      }
      if (p.locking !== undefined) {
        const l = p.locking === 'auto' ? 'auto' : parseOnOff(what, 'locking', p.locking) ? 'on' : 'off';
        t.locking = l;
      }
      return t;
    }
    case 'rbd': {
      if (!RBD_IMAGE.test(p.image))
        throw usageError(
          what,
          `rbd:${p.image}: expected POOL/IMAGE or POOL/NAMESPACE/IMAGE (a snapshot is snapshot=NAME)`,
          kind.forms,
        );
      const t: Extract<Target, { kind: 'rbd' }> = { kind: 'rbd', image: p.image, readonly: false };
      for (const key of ['conf', 'id', 'keyring', 'snapshot'] as const) {
        if (p[key] === undefined) continue;
        if (p[key] === '' || p[key] === 'on') throw usageError(what, `${key} needs a value (${key}=...)`, kind.forms);
        t[key] = p[key];
      }
      if (t.id?.startsWith('client.'))
        throw usageError(what, `id=${t.id}: the user name without 'client.' (e.g. id=admin)`, kind.forms);
      if (p.create !== undefined) {
        if (p.create === 'on') throw usageError(what, 'create needs a size (create=SIZE)', kind.forms);
        t.create = parsePositiveSize(p.create, `${what} create=`);
        if (t.create % 512) throw usageError(what, `create=${p.create} is not a multiple of 512 bytes`, kind.forms);
      }
      for (const key of ['readonly', 'ro']) if (p[key] !== undefined) t.readonly = parseOnOff(what, key, p[key]);
      if (p['connect-timeout'] !== undefined) {
        const v = p['connect-timeout'];
        if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 3600)
          throw usageError(what, `connect-timeout=${v}: expected 1..3600 seconds`, kind.forms);
        t.connectTimeout = Number(v);
      }
      if (t.create !== undefined && (t.readonly || t.snapshot !== undefined))
        throw usageError(what, 'create= cannot be combined with readonly or snapshot', kind.forms);
      return t;
    }
    default:
      throw usageError(what, `'${spec.driver}:' is not a ${kind.noun}`, kind.forms);
  }
}

/** The spec of a Target (the inverse of targetFromSpec). */
export function targetToSpec(t: Target): Spec {
  const s = plainTargetToSpec(t);
  return { driver: s.driver, props: { ...s.props, ...(t.faults ?? {}) } };
}

function plainTargetToSpec(t: Target): Spec {
  switch (t.kind) {
    case 'vhost-user':
      return { driver: 'vhost-user', props: { path: t.path } };
    case 'null':
      return {
        driver: 'null',
        props: { size: String(t.size), ...(t.readZeroes === false ? { 'read-zeroes': 'off' } : {}) },
      };
    case 'mem':
      return { driver: t.kind, props: { size: String(t.size) } };
    case 'file': {
      const props: Record<string, string> = { path: t.path };
      // every value given is passed on, even one the driver will refuse (ring-size=0 must reach it)
      if (t.create !== undefined) props.create = String(t.create);
      if (t.direct) props.direct = 'on';
      if (t.readonly) props.readonly = 'on';
      if (t.ringSize !== undefined) props['ring-size'] = String(t.ringSize);
      if (t.locking !== undefined) props.locking = t.locking;
      return { driver: 'file', props };
    }
    case 'rbd':
      return rbdSpec(t);
  }
}

/** An rbd Target's spec: the image, then the properties it sets, in the documented order. */
export function rbdSpec(t: Extract<Target, { kind: 'rbd' }>): Spec {
  const props: Record<string, string> = { image: t.image };
  if (t.conf !== undefined) props.conf = t.conf;
  if (t.id !== undefined) props.id = t.id;
  if (t.keyring !== undefined) props.keyring = t.keyring;
  if (t.create) props.create = String(t.create);
  if (t.snapshot !== undefined) props.snapshot = t.snapshot;
  if (t.readonly) props.readonly = 'on';
  if (t.connectTimeout !== undefined) props['connect-timeout'] = String(t.connectTimeout);
  return { driver: 'rbd', props };
}

/** A backend stor can serve: null, mem, file or rbd (a bare path is a file; a socket is not a backend). */
export function parseBackend(text: string, what = '--backend'): Exclude<Target, { kind: 'vhost-user' }> {
  const spec = parseSpec(text, what, BACKEND_KIND);
  if (spec.driver === 'vhost-user') throw usageError(what, `'${text}' is not a backend`, BACKEND_FORMS);
  return targetFromSpec(spec, what, BACKEND_KIND) as Exclude<Target, { kind: 'vhost-user' }>;
}

/** Anything a client command can open. */
export function parseTarget(text: string, what = 'target'): Target {
  return targetFromSpec(parseSpec(text, what, TARGET_KIND), what, TARGET_KIND);
}

export function formatTarget(t: Target): string {
  return formatSpec(targetToSpec(t));
}
