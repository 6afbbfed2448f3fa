// A JSON-RPC 2.0 server on a Unix socket that behaves on the wire as SPDK's does (lib/jsonrpc), so SPDK's
// rpc.py and `stor rpc` drive it alike: values are decoded from the byte stream (a request may come in
// pieces, several per read, indented or not); each reply is compact JSON plus a newline; a request
// without an id (or with id null) is executed and only an error is answered (with id null); a batch
// array is answered with one array of the replies that are not skipped, or nothing; an empty batch or a
// request that is not {jsonrpc?:"2.0", method:string, params?:object|array|null, id?:string|number|null}
// is -32600 (a top-level scalar too: answered, and the connection reads on, as spdk_tgt does); an
// unknown method -32601. What cannot be decoded (not JSON, or larger than the bound) is
// answered once and closes that connection only — the stream has no resynchronisation point. Methods run
// one at a time across all connections, in arrival order (as SPDK's single RPC thread does), so two
// clients never interleave inside one table change.
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { StorError } from '../core/errors.js';
import { DEFAULT_MAX_VALUE_BYTES, JsonRpcError, JsonStreamDecoder, JsonStreamError, RPC_ERROR } from './jsonrpc.js';

/** A method: gets the request's params (undefined when absent or null), returns the result. */
export type RpcHandler = (params: Record<string, unknown> | unknown[] | undefined) => unknown;

export type RpcLogger = (level: 'info' | 'warn' | 'error', message: string) => void;

export interface JsonRpcServerOptions {
  socketPath: string;
  /** Looked up on every request, so methods may come and go. */
  methods: ReadonlyMap<string, RpcHandler>;
  /** Bytes one request may take before the connection is refused (default 4 MiB). */
  maxRequestBytes?: number;
  /** Connections served at once; more are closed at accept (SPDK serves 64). */
  maxConnections?: number;
  log?: RpcLogger;
}

type Id = string | number | null;
interface Reply {
  jsonrpc: '2.0';
  id: Id;
  result?: unknown;
  error?: { code: number; message: string };
}

const MESSAGES: Record<number, string> = {
  [RPC_ERROR.PARSE_ERROR]: 'Parse error',
  [RPC_ERROR.INVALID_REQUEST]: 'Invalid request',
  [RPC_ERROR.METHOD_NOT_FOUND]: 'Method not found',
  [RPC_ERROR.INVALID_PARAMS]: 'Invalid parameters',
  [RPC_ERROR.INTERNAL_ERROR]: 'Internal error',
};

function errorReply(id: Id, code: number, message = MESSAGES[code] ?? 'Error'): Reply {
  return { jsonrpc: '2.0', id, error: { code, message } };
}

/** Is something answering on this Unix socket? (A leftover file from a killed server is not.) */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export class JsonRpcServer {
  private server: Server | undefined;
  private readonly conns = new Set<Socket>();
  /** The tail of the one queue every method call waits in. */
  private queue: Promise<void> = Promise.resolve();
  private readonly maxRequestBytes: number;
  private readonly maxConnections: number;
  private readonly log: RpcLogger;
  private nextConn = 1;

  constructor(private readonly o: JsonRpcServerOptions) {
    this.maxRequestBytes = o.maxRequestBytes ?? DEFAULT_MAX_VALUE_BYTES;
    this.maxConnections = o.maxConnections ?? 64;
    this.log = o.log ?? (() => {});
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Binds the socket (replacing a stale file, refusing a live server's) and starts accepting. */
  async listen(): Promise<void> {
    const path = this.o.socketPath;
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket())
        throw new StorError(`${path} exists and is not a socket`, { hint: 'choose another --rpc-socket path' });
      if (await socketIsLive(path))
        throw new StorError(`${path} is in use by another server`, {
          hint: 'stop it, or choose another --rpc-socket path',
        });
      unlinkSync(path);
    }
    const server = createServer((sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new StorError(`cannot listen on ${path}: ${e.message}`, { cause: e })));
      server.listen(path, () => resolve());
    });
    server.on('error', (e) => this.log('error', `rpc socket: ${e.message}`));
    this.server = server;
  }

  /** Stops accepting, drops every connection, waits for the running method, removes the socket. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await this.queue;
    try {
      unlinkSync(this.o.socketPath);
    } catch {
      /* already gone */
    }
  }

  private accept(sock: Socket): void {
    const tag = `rpc connection ${this.nextConn++}`;
    if (this.conns.size >= this.maxConnections) {
      this.log('warn', `${tag}: refused, ${this.maxConnections} connections are open already`);
      sock.destroy();
      return;
    }
    this.conns.add(sock);
    const decoder = new JsonStreamDecoder(this.maxRequestBytes);
    let open = true;
    const drop = (why: string, reply?: Reply): void => {
      if (!open) return;
      open = false;
      this.log('warn', `${tag}: closed: ${why}`);
      if (reply) sock.end(JSON.stringify(reply) + '\n');
      else sock.destroy();
      // a peer that never reads must not keep the socket half-open for ever
      setTimeout(() => sock.destroy(), 1000).unref();
    };
    const send = (r: unknown): void => {
      if (open && !sock.destroyed) sock.write(JSON.stringify(r) + '\n');
    };
    sock.on('data', (chunk: Buffer) => {
      if (!open) return;
      let values: unknown[];
      try {
        values = decoder.push(chunk);
      } catch (e) {
        const err = e as JsonStreamError;
        if (err.kind === 'too-large')
          drop(
            `request larger than ${this.maxRequestBytes} bytes`,
            errorReply(null, RPC_ERROR.INVALID_REQUEST, `Invalid request: larger than ${this.maxRequestBytes} bytes`),
          );
        else drop(`parse error: ${err.message}`, errorReply(null, RPC_ERROR.PARSE_ERROR));
        return;
      }
      for (const v of values) this.enqueue(() => this.handleValue(v, send));
    });
    sock.on('error', (e) => this.log('warn', `${tag}: ${e.message}`));
    sock.on('close', () => {
      open = false;
      this.conns.delete(sock);
    });
  }

  private enqueue(job: () => Promise<void>): void {
    this.queue = this.queue.then(job).catch((e: unknown) => this.log('error', `rpc: ${(e as Error).message}`));
  }

  private async handleValue(v: unknown, send: (r: unknown) => void): Promise<void> {
    if (!Array.isArray(v)) {
      const r = await this.handleRequest(v);
      if (r) send(r);
      return;
    }
    if (v.length === 0) {
      send(errorReply(null, RPC_ERROR.INVALID_REQUEST));
      return;
    }
    const replies: Reply[] = [];
    for (const item of v) {
      const r = await this.handleRequest(item);
      if (r) replies.push(r);
    }
    if (replies.length) send(replies);
  }

  /** One request → its reply, or undefined when the reply is skipped (no id, success). */
  private async handleRequest(v: unknown): Promise<Reply | undefined> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return errorReply(null, RPC_ERROR.INVALID_REQUEST);
    const req = v as Record<string, unknown>;
    const known = new Set(['jsonrpc', 'method', 'params', 'id']);
    if (Object.keys(req).some((k) => !known.has(k))) return errorReply(null, RPC_ERROR.INVALID_REQUEST);
    if ('jsonrpc' in req && req.jsonrpc !== '2.0') return errorReply(null, RPC_ERROR.INVALID_REQUEST);
    if (typeof req.method !== 'string') return errorReply(null, RPC_ERROR.INVALID_REQUEST);
    let id: Id = null;
    if ('id' in req) {
      if (typeof req.id !== 'string' && typeof req.id !== 'number' && req.id !== null)
        return errorReply(null, RPC_ERROR.INVALID_REQUEST);
      id = req.id;
    }
    let params: Record<string, unknown> | unknown[] | undefined;
    if (req.params !== undefined && req.params !== null) {
      if (typeof req.params !== 'object') return errorReply(id, RPC_ERROR.INVALID_REQUEST);
      params = req.params as Record<string, unknown> | unknown[];
    }
    const handler = this.o.methods.get(req.method);
    if (!handler) return errorReply(id, RPC_ERROR.METHOD_NOT_FOUND);
    let result: unknown;
    try {
      result = await handler(params);
    } catch (e) {
      if (e instanceof JsonRpcError) return errorReply(id, e.code, e.message);
      this.log('error', `${req.method}: ${(e as Error).message}`);
      return errorReply(id, RPC_ERROR.INTERNAL_ERROR, `Internal error: ${(e as Error).message}`);
    }
    // SPDK skips the reply to a request without an id (or with id null) that succeeded
    if (id === null) return undefined;
    return { jsonrpc: '2.0', id, result: result === undefined ? true : result };
  }
}
