// A one-line progress display for long commands (copy, bench) on a terminal: an ora spinner whose
// text is cut to the terminal's width, so it never wraps. Where the width is 0 or unknown (a pty
// that says 0 columns, a serial console), or stderr is not a terminal, or with --json, it shows
// nothing at all: a spinner that draws into a 0-column terminal loops forever (issue #16). ora is
// started without its stdin discarder (which puts the terminal in raw mode and swallows Ctrl-C) and
// without hiding the cursor, so it installs no handlers and leaves the terminal as it found it.
import ora, { type Ora } from 'ora';

export class ProgressLine {
  private constructor(
    private readonly spinner: Ora,
    private readonly stream: NodeJS.WriteStream,
  ) {}

  /** A progress line on stderr, or undefined when there is nowhere sensible to draw it. */
  static start(enabled = true, stream: NodeJS.WriteStream = process.stderr): ProgressLine | undefined {
    if (!enabled || !stream.isTTY || !(ProgressLine.width(stream) > 2)) return undefined;
    // drawn from the first update on: a command that ends sooner leaves no trace on the terminal
    const spinner = ora({ stream, discardStdin: false, hideCursor: false, isEnabled: true, text: '' });
    return new ProgressLine(spinner, stream);
  }

  private static width(stream: NodeJS.WriteStream): number {
    const c = stream.columns;
    return typeof c === 'number' && Number.isFinite(c) ? c : 0;
  }

  /** Replaces the line's text, cut to the terminal's current width (stops if the width became 0). */
  update(text: string): void {
    const w = ProgressLine.width(this.stream);
    if (w <= 2) {
      this.clear();
      return;
    }
    // the spinner and its space take 2 columns; one more keeps the cursor off the last column
    this.spinner.text = text.length > w - 3 ? text.slice(0, w - 3) : text;
    if (!this.spinner.isSpinning) this.spinner.start();
  }

  /** Stops the spinner and erases the line, leaving the cursor at its start. */
  clear(): void {
    if (!this.spinner.isSpinning) return;
    // a terminal that went away (SIGHUP, EIO) just ends the display
    try {
      this.spinner.stop();
    } catch {
      /* nothing left to erase */
    }
  }
}
