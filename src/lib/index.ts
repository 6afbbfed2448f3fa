// The stor library: what `import { open } from 'stor'` gives a TypeScript program. Layers, top to
// bottom: engines (copy, bench) and exports (device table, vhost-user-blk server) over the client
// (open a target) and backends (open a bdev), over the one addon loader; specs, sizes and errors
// from core. Commands use nothing else.
// open a target (client)
export {
  open,
  BlockDevice,
  type OpenOptions,
  type Properties,
  type MemRegion,
  type Completion,
  type RequestOptions,
} from './client/device.js';
export { BlkioError } from './client/errors.js';
// specs, sizes, durations, errors
export { StorError, EXIT, usageError, type ExitCode } from './core/errors.js';
export { parseSpec, formatSpec, SPEC_DRIVERS, type Spec } from './core/spec.js';
export {
  parseTarget,
  parseBackend,
  formatTarget,
  targetFromSpec,
  targetToSpec,
  BACKEND_FORMS,
  TARGET_FORMS,
  type Target,
} from './core/target.js';
export { parseSize, parsePositiveSize, formatSize } from './core/size.js';
export { parseDuration } from './core/duration.js';
// open a backend (bdev)
export { openBackend, type BackendTarget } from './bdev/open.js';
export type { BackendHandle, BackendInfo, CompletionMode, QueueStats } from './native.js';
// start an export: the device table, or one vhost-user-blk server by hand
export {
  DeviceTable,
  type BackendEntry,
  type ExportEntry,
  type DeviceTableJson,
  type VhostUserBlkExportOptions,
} from './export/table.js';
export {
  VhostUserBlkServer,
  type VhostUserBlkServerOptions,
  type LogLevel,
  type Logger,
} from './export/vhost-user/server.js';
export { VhostUserSession, type SessionDevice, type SessionConfig } from './export/vhost-user/session.js';
export {
  UblkDisk,
  assertUblkAvailable,
  ublkDeviceInfo,
  type UblkDiskOptions,
  type UblkLogger,
} from './export/ublk/disk.js';
// engines
export { runCopy, type CopyOptions, type CopyJob, type CopyProgress, type CopyResult } from './engine/copy.js';
export {
  runBench,
  type BenchOptions,
  type BenchReport,
  type ModeResult,
  type Mode,
  type Rw,
  type Refill,
} from './engine/bench/run.js';
export { startEmbeddedServer, type EmbeddedServer, type EmbeddedServerOptions } from './engine/bench/embedded.js';
export { renderTable, toJson } from './engine/bench/report.js';
export { renderHtml } from './engine/bench/html.js';
