// What `stor attach` hands to a kernel-disk export (VDUSE or ublk): the parsed flags, the log sink
// and the output mode. The command stays oclif-only; each export runs its own foreground lifecycle
// (create, ready line, signals, teardown) and resolves when the disk has been removed.
import type { CompletionMode } from '../core/completion.js';

export type AttachLogLevel = 'info' | 'warn' | 'error';

export interface AttachOptions {
  /** Backend spec text as given (--backend). */
  backend: string;
  /** VDUSE device name (--name); undefined: the export picks one. */
  name?: string;
  /** ublk device id (--id); undefined: the kernel picks one. */
  id?: number;
  queues: number;
  /** VDUSE: virtqueue size; ublk: queue depth. */
  queueSize: number;
  readonly: boolean;
  blockSize: 512 | 4096;
  completion: CompletionMode;
  serial: string;
  /** ublk --recover / VDUSE --reconnect: attach a new server to a disk whose server died. */
  recover: boolean;
  json: boolean;
  log(level: AttachLogLevel, message: string): void;
  /** Prints the ready line (JSON on --json, a human summary otherwise). */
  ready(info: Record<string, unknown>): void;
  /** Prints the final line after teardown. */
  stopped(info: Record<string, unknown>): void;
}
