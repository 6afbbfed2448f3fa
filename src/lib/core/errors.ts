// One error type for everything stor reports to a user. The exit code is part of the CLI's
// contract (scripts depend on it): 0 ok, 1 runtime failure, 2 usage, 3 verification mismatch.
export const EXIT = { OK: 0, RUNTIME: 1, USAGE: 2, MISMATCH: 3 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class StorError extends Error {
  readonly exitCode: ExitCode;
  readonly hint?: string;
  /** errno or virtio status when the failure came from a syscall or a device. */
  readonly errno?: number;
  /** What the command produced before failing (e.g. a verify report): goes into --json output. */
  readonly details?: Record<string, unknown>;
  constructor(
    message: string,
    opts: {
      exitCode?: ExitCode;
      hint?: string;
      errno?: number;
      cause?: unknown;
      details?: Record<string, unknown>;
    } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StorError';
    this.exitCode = opts.exitCode ?? EXIT.RUNTIME;
    this.hint = opts.hint;
    this.errno = opts.errno;
    this.details = opts.details;
  }
}

/** A bad flag or argument value: exit 2, one line naming it and the accepted forms. */
export function usageError(what: string, why: string, accepted?: string): StorError {
  return new StorError(`${what}: ${why}`, {
    exitCode: EXIT.USAGE,
    hint: accepted ? `accepted: ${accepted}` : undefined,
  });
}
