// Durations for --runtime / --ramp: a number with a unit (ms, s, m, h). A bare number is refused:
// "5" could mean seconds (fio) or milliseconds, and a benchmark that runs 1000x too long is costly.
import { usageError } from './errors.js';

export const DURATION_FORMS = 'a number with a unit: 500ms, 5s, 1.5m, 1h';
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/i.exec(text);
  if (!m) {
    const hint = /^\s*\d+(\.\d+)?\s*$/.test(text) ? `'${text}' has no unit` : `'${text}' is not a duration`;
    throw usageError(what, hint, DURATION_FORMS);
  }
  const ms = Number(m[1]) * UNIT_MS[m[2].toLowerCase()];
  if (!Number.isFinite(ms) || ms > 24 * 3_600_000) throw usageError(what, `'${text}' is out of range`, DURATION_FORMS);
  return Math.round(ms);
}
