import { StorError, type ExitCode } from '../core/errors.js';

const ERRNO_TEXT: Record<number, string> = {
  5: 'I/O error (the device answered VIRTIO_BLK_S_IOERR)',
  95: 'not supported by the device (VIRTIO_BLK_S_UNSUPP)',
  107: 'the server closed the connection',
  22: 'invalid argument',
  16: 'queue full',
  7: 'request too large for a bounce buffer',
  14: 'bad address',
};

/** A failed request: carries the operation, the range and the errno / virtio status. */
export class BlkioError extends StorError {
  readonly op: string;
  readonly offset: number;
  readonly length: number;
  constructor(op: string, offset: number, length: number, errno: number, detail?: string, exitCode?: ExitCode) {
    super(`${op} at offset ${offset} length ${length} failed: ${detail ?? ERRNO_TEXT[errno] ?? `errno ${errno}`}`, {
      errno,
      exitCode,
    });
    this.name = 'BlkioError';
    this.op = op;
    this.offset = offset;
    this.length = length;
  }
  /** The virtio-blk status this errno stands for (1 IOERR, 2 UNSUPP), when it came from the device. */
  get virtioStatus(): number | undefined {
    return this.errno === 5 ? 1 : this.errno === 95 ? 2 : undefined;
  }
}
