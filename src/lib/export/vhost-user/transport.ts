// The vhost-user transport: a listening Unix socket (a stale socket file is replaced, a live one
// is refused), accepted connections, and message framing — a 12-byte header, then its payload, with
// the SCM_RIGHTS fds that came along. It knows nothing of what messages mean: whole messages go to
// a callback, replies come back as bytes. Reads never run past a message's end, so fds stay with
// the message they were sent with.
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { native, type FdWatch } from '../../native.js';
import { StorError } from '../../core/errors.js';
import { HEADER_SIZE, decodeHeader, type Header } from '../../proto/vhost-user.js';
import type { Message } from './session.js';

/** A listening socket; onAccept gets each new connection's fd and owns it. */
export class VhostUserListener {
  private fd = -1;
  private watch?: FdWatch;

  constructor(readonly path: string) {}

  /** Binds (replacing a stale socket file, refusing a live one) and starts calling onAccept. */
  listen(onAccept: (fd: number) => void, onError: (message: string) => void): void {
    const n = native();
    const path = this.path;
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket())
        throw new StorError(`${path} exists and is not a socket`, { hint: 'choose another --socket path' });
      let live = false;
      try {
        const fd = n.unixConnect(path);
        n.close(fd);
        live = true;
      } catch {
        /* stale: nobody listens */
      }
      if (live)
        throw new StorError(`${path} is in use by another server`, {
          hint: 'stop it, or choose another --socket path',
        });
      unlinkSync(path);
    }
    try {
      this.fd = n.unixListen(path, 16);
    } catch (e) {
      throw new StorError(`cannot listen on ${path}: ${(e as Error).message}`, { cause: e });
    }
    this.watch = n.watchFd(this.fd, true, false, () => {
      for (;;) {
        let fd: number;
        try {
          fd = n.accept(this.fd);
        } catch (e) {
          onError(`accept: ${(e as Error).message}`);
          return;
        }
        if (fd < 0) return;
        onAccept(fd);
      }
    });
  }

  stopAccepting(): void {
    this.watch?.stop();
    this.watch = undefined;
  }

  /** Stops accepting and removes the socket file. */
  close(): void {
    this.stopAccepting();
    if (this.fd >= 0) {
      native().close(this.fd);
      this.fd = -1;
    }
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

/** One accepted connection: framed messages in, raw replies out; drop() ends it exactly once. */
export class VhostUserConnection {
  private watch?: FdWatch;
  private header = Buffer.alloc(0);
  private hdr?: Header;
  private payload = Buffer.alloc(0);
  private fds: number[] = [];
  private ended = false;

  constructor(
    readonly fd: number,
    private onMessage: (m: Message) => void,
    private onEnd: (reason: string) => void,
  ) {
    this.watch = native().watchFd(fd, true, false, (status) => {
      if (status < 0) {
        this.drop(`socket error ${status}`);
        return;
      }
      this.poll();
    });
  }

  get isEnded(): boolean {
    return this.ended;
  }

  drop(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.watch?.stop();
    const n = native();
    for (const f of this.fds) n.close(f);
    this.fds = [];
    n.close(this.fd);
    this.onEnd(reason);
  }

  /** Processes whatever the front-end has sent so far (including an EOF). */
  poll(): void {
    const n = native();
    while (!this.ended) {
      const want = this.hdr ? this.hdr.size - this.payload.length : HEADER_SIZE - this.header.length;
      let r;
      try {
        r = want > 0 ? n.recvmsg(this.fd, want) : { data: Buffer.alloc(0), fds: [], truncated: false };
      } catch (e) {
        this.drop(`receive failed: ${(e as Error).message}`);
        return;
      }
      if (r === null) return;
      if (want > 0 && r.data.length === 0) {
        this.drop(this.hdr || this.header.length ? 'closed in the middle of a message' : 'closed by the front-end');
        return;
      }
      if (r.truncated) {
        for (const f of r.fds) n.close(f);
        this.drop('too many file descriptors in one message');
        return;
      }
      this.fds.push(...r.fds);
      if (!this.hdr) {
        this.header = Buffer.concat([this.header, r.data]);
        if (this.header.length < HEADER_SIZE) continue;
        try {
          this.hdr = decodeHeader(this.header);
        } catch (e) {
          this.drop(`bad message: ${(e as Error).message}`);
          return;
        }
        this.payload = Buffer.alloc(0);
        if (this.hdr.size > 0) continue;
      } else {
        this.payload = Buffer.concat([this.payload, r.data]);
        if (this.payload.length < this.hdr.size) continue;
      }
      const header = this.hdr,
        payload = this.payload,
        fds = this.fds;
      this.hdr = undefined;
      this.header = Buffer.alloc(0);
      this.payload = Buffer.alloc(0);
      this.fds = [];
      this.onMessage({ header, payload, fds });
    }
  }

  /** Sends one reply (with fds, which stay ours); a front-end that does not take a whole tiny reply is dropped. */
  send(buf: Buffer, fds?: number[]): void {
    if (this.ended) return;
    let sent;
    try {
      sent = fds?.length ? native().sendmsg(this.fd, buf, fds) : native().sendmsg(this.fd, buf);
    } catch (e) {
      this.drop(`send failed: ${(e as Error).message}`);
      return;
    }
    if (sent !== buf.length) this.drop('front-end is not reading replies');
  }

  /** Closes fds a message brought that nobody took. */
  static closeFds(fds: number[]): void {
    const n = native();
    for (const f of fds) n.close(f);
  }
}
