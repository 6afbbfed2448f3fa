// Opens a backend target (null / mem / file) in the native data plane, with errors a user can act on.
import { native, type BackendHandle, type BackendInfo } from '../native.js';
import { StorError } from '../core/errors.js';
import type { Target } from '../core/target.js';

export type BackendTarget = Exclude<Target, { kind: 'vhost-user' }>;

export function openBackend(t: BackendTarget, opts: { readonly?: boolean } = {}): { handle: BackendHandle; info: BackendInfo } {
  const n = native();
  let handle: BackendHandle;
  try {
    switch (t.kind) {
      case 'null': case 'mem': handle = n.backendOpen({ kind: t.kind, size: t.size, readonly: opts.readonly }); break;
      case 'file':
        handle = n.backendOpen({
          kind: 'file', path: t.path, create: t.create !== undefined, size: t.create ?? 0, direct: t.direct,
          readonly: opts.readonly || t.readonly,
        });
        break;
    }
  } catch (e) {
    const err = e as Error & { errno?: number };
    throw new StorError(`cannot open backend: ${err.message}`, {
      errno: err.errno,
      hint: t.kind === 'file' && err.errno === 2 ? 'the file does not exist: add ,create=SIZE to create it' : undefined,
    });
  }
  return { handle, info: n.backendInfo(handle) };
}
