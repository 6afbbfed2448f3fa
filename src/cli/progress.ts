// A one-line progress display for long commands (copy, bench) on a terminal. It rewrites one line in
// place ("\r", the text cut to the terminal's width, erase to end of line), so it never wraps, never
// hides the cursor and installs no signal handlers. Where the width is 0 or unknown (a pty that says
// 0 columns, a serial console) or stderr is not a terminal, or with --json, it shows nothing at all:
// a spinner library that divides by the width there loops forever (issue #16).
import { writeSync } from 'node:fs';

export class ProgressLine {
  private shown = false;
  private constructor(private readonly fd: number, private readonly stream: NodeJS.WriteStream) {}

  /** A progress line on stderr, or undefined when there is nowhere sensible to draw it. */
  static start(enabled = true, stream: NodeJS.WriteStream = process.stderr): ProgressLine | undefined {
    if (!enabled || !stream.isTTY || !(ProgressLine.width(stream) > 0)) return undefined;
    return new ProgressLine(stream === process.stderr ? 2 : 1, stream);
  }

  private static width(stream: NodeJS.WriteStream): number {
    const c = stream.columns;
    return typeof c === 'number' && Number.isFinite(c) ? c : 0;
  }

  /** Replaces the line with text, cut to the terminal's current width (nothing if it became 0). */
  update(text: string): void {
    const w = ProgressLine.width(this.stream);
    if (w <= 1) { this.clear(); return; }
    const line = text.length >= w ? text.slice(0, w - 1) : text;
    this.write(`\r${line}\x1b[K`);
    this.shown = true;
  }

  /** Erases the line, leaving the cursor at its start. */
  clear(): void {
    if (!this.shown) return;
    this.write('\r\x1b[K');
    this.shown = false;
  }

  private write(s: string): void {
    // synchronous, so that the line is cleared before an interrupted command prints its last words;
    // a terminal that went away (SIGHUP, EIO) just ends the display
    try { writeSync(this.fd, s); } catch { this.shown = false; }
  }
}
