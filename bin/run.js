#!/usr/bin/env node
import { execute } from '@oclif/core';
// The reader of standard output went away (`stor info --json | head -c 1`): end quietly with 128 +
// SIGPIPE, as cat does, instead of an unhandled 'error' event and a stack trace.
process.stdout.on('error', (e) => { if (e.code === 'EPIPE') process.exit(141); throw e; });
await execute({ dir: import.meta.url });
