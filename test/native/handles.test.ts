// N-API handles are tagged with their kind (napi_type_tag_object): a handle of one kind passed where
// another is expected throws a TypeError instead of being reinterpreted as the wrong C struct.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native, type BackendHandle, type BlkDeviceHandle, type ClientQueueHandle } from '../../src/lib/native.js';

const t = suite('native handles are type-tagged');

function throwsTypeError(fn: () => unknown, what: RegExp): void {
  try { fn(); assert.unreachable('accepted a handle of the wrong kind'); }
  catch (e) {
    assert.instance(e, TypeError, (e as Error).message);
    assert.match((e as Error).message, what);
  }
}

t('a client queue handle where a backend is expected, and the other way round', () => {
  const n = native();
  const be = n.bdevOpen('null', { size: '1M' });
  const q = n.clientQueueOpen(be, 4);
  try {
    throwsTypeError(() => n.bdevProperties(q as unknown as BackendHandle), /expected a backend handle/);
    throwsTypeError(() => n.backendFlush(q as unknown as BackendHandle), /expected a backend handle/);
    throwsTypeError(() => n.clientQueueOpen(q as unknown as BackendHandle, 4), /expected a backend handle/);
    throwsTypeError(() => n.clientReap(be as unknown as ClientQueueHandle), /expected a client queue handle/);
    throwsTypeError(() => n.clientQueueClose(be as unknown as ClientQueueHandle), /expected a client queue handle/);
    // the right kinds still work
    assert.is(n.bdevProperties(be).capacity, 1 << 20);
    assert.is(n.clientInfo(q).free, 4);
  } finally { n.clientQueueClose(q); }
});

t('a device handle is neither a backend nor a queue; a backend is not a device', () => {
  const n = native();
  const be = n.bdevOpen('mem', { size: '1M' });
  const dev = n.blkDeviceCreate(be, { queues: 1, blockSize: 512, readonly: false, serial: 'x', mode: 'notify', maxDiscardSectors: 8, maxWriteZeroesSectors: 8 }, () => {});
  try {
    throwsTypeError(() => n.backendInfo(dev as unknown as BackendHandle), /expected a backend handle/);
    throwsTypeError(() => n.clientSubmit(dev as unknown as ClientQueueHandle, 0, 0, 512, null, 1), /expected a client queue handle/);
    throwsTypeError(() => n.blkDeviceStats(be as unknown as BlkDeviceHandle), /expected a vhost-user-blk device handle/);
    assert.is(n.blkDeviceStats(dev).length, 1);
  } finally { n.blkDeviceDestroy(dev); }
});

t('values that are not handles at all: a Buffer, an object, a number', () => {
  const n = native();
  for (const v of [Buffer.alloc(8), {}, 42]) throwsTypeError(() => n.bdevProperties(v as unknown as BackendHandle), /expected a backend handle/);
});

t.run();
