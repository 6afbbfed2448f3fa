// What an export's native threads report to the control plane (native/export/js_events.h: a
// (kind, queue, message) call, for lifecycle and failures, never for a successful request), and the
// log level each kind is worth. The three exports (vhost-user-blk, VDUSE, ublk) log them the same
// way; vhost-user-blk also drops its front-end on 'broken'.

/**
 * The level of an event of this kind: info and status (lifecycle) -> info; warn (odd, changes nothing)
 * and reqerr (one request failed, rate-limited in C) -> warn; error (the device or its control failed),
 * broken (a queue stopped serving) and anything else -> error.
 */
export function eventLevel(kind: string): 'info' | 'warn' | 'error' {
  if (kind === 'info' || kind === 'status') return 'info';
  if (kind === 'warn' || kind === 'reqerr') return 'warn';
  return 'error';
}
