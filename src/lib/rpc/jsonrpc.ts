// JSON-RPC 2.0 over a Unix stream socket, in SPDK's dialect, for both directions: the stream decoder
// both sides use, the error type, and the client. SPDK's wire facts shape it: a peer writes compact
// JSON (SPDK's replies end with a newline, rpc.py's requests are indented and end with none), and a
// value can arrive in pieces or several in one read, so values are cut out of the byte stream by
// their own brackets and quotes, never by lines. Every request carries an id (SPDK skips the reply to
// a successful request without one), and every wait has a deadline on the monotonic clock, so a
// wall-clock jump neither fires nor postpones a timeout.
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/** The error codes JSON-RPC 2.0 defines and SPDK uses (method failures use a negative errno instead). */
export const RPC_ERROR = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
} as const;

/** The largest request a stor server takes and the largest reply a client buffers (SPDK receives 256 KiB). */
export const DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024;

/** An error a JSON-RPC peer replied with (`code` is the peer's), or one a server sends. */
export class JsonRpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'JsonRpcError';
  }
}

/** The stream could not be decoded: not JSON, or a value larger than the bound. */
export class JsonStreamError extends Error {
  constructor(
    message: string,
    readonly kind: 'syntax' | 'too-large',
  ) {
    super(message);
    this.name = 'JsonStreamError';
  }
}

const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Where a number's scan is, by JSON's grammar: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
const enum Num {
  Minus,
  Zero,
  Int,
  Dot,
  Frac,
  E,
  ESign,
  Exp,
}
const NUM_ENDS = new Set([Num.Zero, Num.Int, Num.Frac, Num.Exp]);
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/** The next state of a number scan on byte c, or undefined when c does not continue the number. */
function numberStep(s: Num, c: number): Num | undefined {
  switch (s) {
    case Num.Minus:
      return c === 0x30 ? Num.Zero : isDigit(c) ? Num.Int : undefined;
    case Num.Zero:
    case Num.Int:
      if (s === Num.Int && isDigit(c)) return Num.Int;
      return c === 0x2e ? Num.Dot : c === 0x65 || c === 0x45 ? Num.E : undefined;
    case Num.Dot:
      return isDigit(c) ? Num.Frac : undefined;
    case Num.Frac:
      return isDigit(c) ? Num.Frac : c === 0x65 || c === 0x45 ? Num.E : undefined;
    case Num.E:
      return c === 0x2b || c === 0x2d ? Num.ESign : isDigit(c) ? Num.Exp : undefined;
    case Num.ESign:
    case Num.Exp:
      return isDigit(c) ? Num.Exp : undefined;
  }
}

const LITERALS: Record<number, string> = { 0x74: 'true', 0x66: 'false', 0x6e: 'null' };

/**
 * Cuts JSON values out of a byte stream. push() takes whatever one read returned and gives back every
 * value completed by it, in order; the scan resumes where the previous read stopped, so a value that
 * arrives a byte at a time costs linear time. A top-level value may be a scalar too (SPDK's server
 * answers one with -32600 and reads on): a string or literal is complete at its last byte, a number
 * when a byte that cannot continue it arrives or, as spdk_json_parse decides, at the end of the bytes
 * received so far (so "12" and "34" in two reads are two numbers, for SPDK as here). Text JSON's
 * grammar refuses throws a JsonStreamError('syntax'), and the stream cannot be resynchronised (SPDK
 * closes the connection then, and so does stor). A value still incomplete after maxBytes throws
 * JsonStreamError('too-large').
 */
export class JsonStreamDecoder {
  private buf: Buffer = Buffer.alloc(0);
  /** Where the scan continues, and its state there. */
  private pos = 0;
  private start = -1;
  /** What the value being scanned is: a container (object/array), a string, a number or a literal. */
  private kind: 'container' | 'string' | 'number' | 'literal' = 'container';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private num = Num.Int;
  private literal = '';

  constructor(private readonly maxBytes = DEFAULT_MAX_VALUE_BYTES) {}

  /** Bytes received and not yet returned as a value. */
  get pending(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): unknown[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const values: unknown[] = [];
    const b = this.buf;
    let consumed = 0;
    const emit = (end: number): void => {
      const text = b.toString('utf8', this.start, end);
      try {
        values.push(JSON.parse(text));
      } catch (e) {
        throw new JsonStreamError((e as Error).message, 'syntax');
      }
      this.start = -1;
      consumed = end;
    };
    for (let i = this.pos; i < b.length; i++) {
      const c = b[i];
      if (this.start < 0) {
        if (isSpace(c)) {
          consumed = i + 1;
          continue;
        }
        this.start = i;
        if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
          this.kind = 'container';
          this.depth = 1;
        } else if (c === QUOTE) {
          this.kind = 'string';
          this.inString = true;
        } else if (c === 0x2d || isDigit(c)) {
          this.kind = 'number';
          this.num = c === 0x2d ? Num.Minus : c === 0x30 ? Num.Zero : Num.Int;
        } else if (LITERALS[c] !== undefined) {
          this.kind = 'literal';
          this.literal = LITERALS[c];
        } else throw new JsonStreamError(`expected a JSON value but found ${describeByte(c)}`, 'syntax');
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) {
          this.inString = false;
          if (this.kind === 'string') emit(i + 1);
        }
        continue;
      }
      if (this.kind === 'number') {
        const next = numberStep(this.num, c);
        if (next !== undefined) {
          this.num = next;
          continue;
        }
        if (!NUM_ENDS.has(this.num))
          throw new JsonStreamError(`a number cannot continue with ${describeByte(c)}`, 'syntax');
        // this byte is not part of the number: the number is done, and the byte starts what follows
        emit(i);
        i--;
        continue;
      }
      if (this.kind === 'literal') {
        if (c !== this.literal.charCodeAt(i - this.start))
          throw new JsonStreamError(`expected ${this.literal} but found ${describeByte(c)}`, 'syntax');
        if (i - this.start + 1 === this.literal.length) emit(i + 1);
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (c === OPEN_OBJECT || c === OPEN_ARRAY) this.depth++;
      else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
        if (--this.depth === 0) emit(i + 1);
      }
    }
    // as spdk_json_parse: a number that could go on is taken as complete at the end of what was received
    if (this.start >= 0 && this.kind === 'number' && NUM_ENDS.has(this.num)) emit(b.length);
    // keep only the unfinished value (or nothing); the scan state refers to the kept bytes
    this.buf = consumed >= b.length ? Buffer.alloc(0) : b.subarray(consumed);
    this.pos = b.length - consumed;
    if (this.start >= 0) this.start -= consumed;
    if (this.buf.length > this.maxBytes)
      throw new JsonStreamError(`a value larger than ${this.maxBytes} bytes`, 'too-large');
    return values;
  }
}

function describeByte(c: number): string {
  return c >= 0x20 && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, '0')}`;
}

/** Milliseconds on the monotonic clock. */
export function monotonicMs(): number {
  return performance.now();
}

/** A point in monotonic time after which a wait gives up. */
export class Deadline {
  private readonly at: number;
  constructor(readonly ms: number) {
    this.at = monotonicMs() + ms;
  }
  remaining(): number {
    return Math.max(0, this.at - monotonicMs());
  }
  expired(): boolean {
    return this.remaining() <= 0;
  }
}

export interface JsonRpcClientOptions {
  /** Per call (connecting included): no reply within this many ms fails the call. Default 10 s. */
  timeoutMs?: number;
  maxReplyBytes?: number;
}

export type RpcParams = Record<string, unknown> | unknown[];

interface Pending {
  method: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Why a call failed without a reply: the peer is absent, went away, or was too slow. */
export class RpcTransportError extends Error {
  constructor(
    message: string,
    readonly kind: 'connect' | 'closed' | 'timeout' | 'protocol',
  ) {
    super(message);
    this.name = 'RpcTransportError';
  }
}

function connectError(socket: string, e: NodeJS.ErrnoException): RpcTransportError {
  const why =
    e.code === 'ENOENT'
      ? 'no such socket'
      : e.code === 'ECONNREFUSED'
        ? 'nothing is listening there'
        : e.code === 'EACCES'
          ? 'permission denied'
          : e.code === 'ENOTSOCK'
            ? 'not a socket'
            : e.message;
  return new RpcTransportError(`cannot connect to ${socket}: ${why}`, 'connect');
}

/**
 * One connection to a JSON-RPC server (spdk_tgt, stor daemon). Calls may overlap; replies are matched
 * to calls by id. A reply that carries an error rejects with JsonRpcError; a dropped connection,
 * undecodable reply or missed deadline rejects with RpcTransportError.
 */
export class JsonRpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly decoder: JsonStreamDecoder;
  private closedReason: RpcTransportError | undefined;

  private constructor(
    readonly socketPath: string,
    private readonly sock: Socket,
    private readonly timeoutMs: number,
    maxReplyBytes: number,
  ) {
    this.decoder = new JsonStreamDecoder(maxReplyBytes);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (e) => this.fail(new RpcTransportError(`${socketPath}: ${e.message}`, 'closed')));
    sock.on('close', () =>
      this.fail(new RpcTransportError(`${socketPath} closed the connection before replying`, 'closed')),
    );
  }

  /** Connects within the timeout (a missing socket or refused connection fails at once). */
  static connect(socketPath: string, o: JsonRpcClientOptions = {}): Promise<JsonRpcClient> {
    const timeoutMs = o.timeoutMs ?? 10_000;
    const deadline = new Deadline(timeoutMs);
    return new Promise((resolve, reject) => {
      const sock = connect({ path: socketPath });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new RpcTransportError(`cannot connect to ${socketPath}: no answer within ${timeoutMs} ms`, 'timeout'));
      }, deadline.remaining());
      sock.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(connectError(socketPath, e));
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new JsonRpcClient(socketPath, sock, timeoutMs, o.maxReplyBytes ?? DEFAULT_MAX_VALUE_BYTES));
      });
    });
  }

  /** Sends one request (always with an id) and resolves to its result. */
  call<T = unknown>(method: string, params?: RpcParams, o: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedReason) return Promise.reject(this.closedReason);
    const id = this.nextId++;
    const timeoutMs = o.timeoutMs ?? this.timeoutMs;
    const deadline = new Deadline(timeoutMs);
    const request = { jsonrpc: '2.0', method, id, ...(params !== undefined ? { params } : {}) };
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new RpcTransportError(`no reply to ${method} from ${this.socketPath} within ${timeoutMs} ms`, 'timeout'),
        );
      }, deadline.remaining());
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer });
      this.sock.write(JSON.stringify(request));
    });
  }

  close(): void {
    this.fail(new RpcTransportError(`connection to ${this.socketPath} closed`, 'closed'));
  }

  private onData(chunk: Buffer): void {
    let values: unknown[];
    try {
      values = this.decoder.push(chunk);
    } catch (e) {
      this.fail(
        new RpcTransportError(`undecodable reply from ${this.socketPath}: ${(e as Error).message}`, 'protocol'),
      );
      return;
    }
    for (const v of values) this.onReply(v);
  }

  private onReply(v: unknown): void {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return; // batch replies are not ours
    const r = v as { id?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown; data?: unknown } };
    // an error with id null answers a request the server could not read: the oldest call
    const id = typeof r.id === 'number' ? r.id : r.id === null ? this.pending.keys().next().value : undefined;
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (r.error !== undefined) {
      const code = typeof r.error?.code === 'number' ? r.error.code : RPC_ERROR.INTERNAL_ERROR;
      const message = typeof r.error?.message === 'string' ? r.error.message : JSON.stringify(r.error);
      p.reject(new JsonRpcError(code, message, r.error?.data));
    } else p.resolve(r.result);
  }

  private fail(reason: RpcTransportError): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(
        reason.kind === 'closed'
          ? new RpcTransportError(`${reason.message} (waiting for ${p.method})`, 'closed')
          : reason,
      );
    }
    this.sock.destroy();
  }
}
