// A bench or copy job runs on a worker thread while JavaScript goes on. A caller that keeps only
// the promise (`await benchRun(...).promise`) drops the progress function at once; the job's memory
// must outlive the thread anyway. Collecting garbage hard while jobs run proves it: before the fix
// the collector freed the job under the running thread (a segfault in CI).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../../src/lib/native.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const t = suite('native jobs outlive a dropped progress function');

/** Collect garbage every millisecond until `p` settles, then return its value. */
async function collectingUntil<T>(p: Promise<T>): Promise<T> {
  let settled = false;
  const timer = setInterval(() => {
    if (!settled) gc();
  }, 1);
  try {
    return await p;
  } finally {
    settled = true;
    clearInterval(timer);
  }
}

t('bench: only the promise kept, the collector running throughout', async () => {
  const n = native();
  const be = n.bdevOpen('mem', { size: '4M' });
  for (let round = 0; round < 5; round++) {
    const r = await collectingUntil(
      n.benchRun(be, { rw: 'randrw', bs: 4096, iodepth: 8, threads: 2, runtimeMs: 150, wait: 'notify', verify: true })
        .promise,
    );
    assert.is(r.threads.length, 2);
    for (const th of r.threads) {
      assert.is(th.errors, 0);
      assert.is(th.verifyFailures, 0);
      assert.ok(th.readIos + th.writeIos > 0, 'the thread did I/O');
    }
  }
});

t('copy: only the promise kept, the collector running throughout', async () => {
  const n = native();
  for (let round = 0; round < 5; round++) {
    const src = n.bdevOpen('mem', { size: '16M' });
    const dst = n.bdevOpen('mem', { size: '16M' });
    const r = await collectingUntil(
      n.copyRun(src, dst, { length: 16 << 20, chunk: 64 << 10, queues: 2, iodepth: 4, verify: true, zeroDetect: false })
        .promise,
    );
    assert.is(r.bytesCopied, 16 << 20);
    assert.is(r.mismatchedChunks, 0);
  }
});

t.run();
