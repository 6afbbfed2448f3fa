// The base every stor command extends: --json through oclif, and one error policy —
// `stor: <what failed>: <why>` plus a hint line, exit 2 for usage, 1 for runtime, 3 for a
// verification mismatch, never a stack trace for a user mistake.
import { Command, Errors } from '@oclif/core';
import { EXIT, StorError } from '../lib/core/errors.js';
import { translateParseError } from './parse-errors.js';

export abstract class StorCommand extends Command {
  static override enableJsonFlag = true;

  protected override async catch(
    err: Error & { exitCode?: number; oclif?: { exit?: number }; parse?: unknown },
  ): Promise<void> {
    let code: number = EXIT.RUNTIME;
    let message = err.message ?? String(err);
    let hint: string | undefined;
    let details: Record<string, unknown> | undefined;
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') {
      // the reader of our output went away (`| head -c 10`): end quietly, as cat does (128 + SIGPIPE)
      process.exitCode = 141;
      return;
    }
    if (err instanceof StorError) {
      code = err.exitCode;
      hint = err.hint;
      details = err.details;
    } else if (err instanceof Errors.ExitError) {
      process.exitCode = err.oclif.exit;
      return;
    } else if (err.parse !== undefined || (err instanceof Errors.CLIError && err.oclif?.exit === 2)) {
      // oclif's flag/argument errors, in stor's own format
      code = EXIT.USAGE;
      const ctor = this.ctor as unknown as { flags?: Record<string, object>; args?: Record<string, object> };
      ({ message, hint } = translateParseError(err, this.id ?? '', ctor.flags ?? {}, ctor.args ?? {}));
    }
    process.exitCode = code;
    if (this.jsonEnabled()) {
      process.stdout.write(
        JSON.stringify({
          error: { code, message, ...(hint ? { hint } : {}) },
          ...(details ? { result: details } : {}),
        }) + '\n',
      );
    } else {
      process.stderr.write(`stor: ${message}\n${hint ? `  ${hint}\n` : ''}`);
      if (process.env.STOR_DEBUG && err.stack) process.stderr.write(err.stack + '\n');
    }
  }
}
