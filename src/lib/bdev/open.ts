// Opens a backend in the native data plane through the C registry ({driver, props} → handle), with
// errors a user can act on. The driver parses and checks its own properties; a bad one is a usage
// error (exit 2) naming it. Every property of the opened backend comes from C (bdevProperties).
import { native, type BackendHandle, type BackendInfo, type BdevDriverInfo, type BdevProperties } from '../native.js';
import { StorError, usageError } from '../core/errors.js';
import { targetToSpec as specOfTarget, type Target } from '../core/target.js';

export type BackendTarget = Exclude<Target, { kind: 'vhost-user' }>;
/**
 * A backend spec as the C registry takes it: "file:/img,direct=on" is
 * {driver: 'file', props: {path: '/img', direct: 'on'}}.
 */
export interface BackendSpec {
  driver: string;
  props: Record<string, string>;
}

/** Target → {driver, props}: the one conversion (core/target.ts), with the caller's overrides. */
export function targetToSpec(t: BackendTarget, opts: { readonly?: boolean; direct?: boolean } = {}): BackendSpec {
  const spec = specOfTarget(t);
  const props = { ...spec.props };
  if (t.kind === 'file' && opts.direct !== undefined) {
    if (opts.direct) props.direct = 'on';
    else delete props.direct;
  }
  if (opts.readonly) props.readonly = 'on';
  return { driver: spec.driver, props };
}

export interface OpenedBackend {
  handle: BackendHandle;
  info: BackendInfo;
  properties: BdevProperties;
}

/** Opens a backend; `what` names the flag or argument it came from in error messages. */
export function openBackend(
  t: BackendTarget | BackendSpec,
  opts: { readonly?: boolean; direct?: boolean; what?: string } = {},
): OpenedBackend {
  const spec =
    'driver' in t
      ? { driver: t.driver, props: { ...t.props, ...(opts.readonly ? { readonly: 'on' } : {}) } }
      : targetToSpec(t, opts);
  const n = native();
  let handle: BackendHandle;
  try {
    handle = n.bdevOpen(spec.driver, spec.props);
  } catch (e) {
    const err = e as Error & { errno?: number; property?: string };
    if (err.errno === 22 && (err.property !== undefined || /is not a backend driver/.test(err.message))) {
      // "file: create=abc: not a size (accepted: ...)": the accepted forms become the hint
      const m = /^(.*?) \(accepted: (.*)\)$/.exec(err.message);
      throw usageError(opts.what ?? 'backend', m ? m[1] : err.message, m ? m[2] : undefined);
    }
    const hint =
      spec.driver === 'rbd'
        ? rbdHint(err.errno)
        : spec.driver !== 'file'
          ? undefined
          : err.errno === 2
            ? 'the file does not exist: add ,create=SIZE to create it'
            : err.errno === 16
              ? "stop the other user first, or add ,locking=off to open it anyway (as with QEMU's file driver)"
              : undefined;
    throw new StorError(`cannot open backend: ${err.message}`, { errno: err.errno, hint });
  }
  return { handle, info: n.backendInfo(handle), properties: n.bdevProperties(handle) };
}

/** What to do about an rbd open error (the C message already says what happened). */
function rbdHint(errno: number | undefined): string | undefined {
  switch (errno) {
    case 16: // EBUSY: another client holds the exclusive lock
      return 'stop the other client first, or open the image read-only (,readonly=on)';
    case 110: // ETIMEDOUT
      return 'check that the cluster is up and that mon_host in ceph.conf (conf=) is right';
    case 1:
    case 13: // EPERM, EACCES
      return 'the key in the keyring must belong to the user named by id= (default admin)';
    default:
      return undefined;
  }
}

/** The backend drivers the C registry has, with their properties and help. */
export function backendDrivers(): BdevDriverInfo[] {
  return native().bdevDrivers();
}
