// A backend that fails: the request completes with IOERR, the server logs why (the operation, the
// range, the errno) and stays up. The log is rate-limited per queue and second; the failures it kept
// out are still counted in a line of their own, even when the burst simply ends or the server stops
// right after it. The failing backend is a file truncated under the running server (reads past the
// new end come back short, which the file backend reports as EIO).
import { truncateSync, writeFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { VIRTIO_BLK_S, VIRTIO_BLK_T } from '../../../src/lib/proto/virtio-blk.js';
import type { BlkSession } from '../../helpers/virtq-driver.js';
import { Harness, sleep, within } from './hostile-helpers.js';

const { IOERR } = VIRTIO_BLK_S;
const BURST = 60; // more than the 20 failures a queue logs per second
const PAST = (2 << 20) / 512; // a sector past the truncated end
const logged = /backend read at offset \d+ length 4096 failed/g;
const notLogged = /(\d+) more request failures not logged/g;

/** Failures accounted for in out: logged one by one, plus those counted as not logged. */
function accounted(out: string): { lines: number; counted: number } {
  const lines = out.match(logged)?.length ?? 0;
  let counted = 0;
  for (const m of out.matchAll(notLogged)) counted += Number(m[1]);
  return { lines, counted };
}

const h = new Harness('file', 1);
const t = suite('a failing backend: IOERR, a log line with the reason, rate-limited but counted');
let s: BlkSession | undefined;

t.before(async () => {
  await within(20_000, 'start stor serve', h.start());
  s = h.open({ queues: 1, queueSize: 256 });
  truncateSync(h.imagePath, 1 << 20); // the backend keeps its 4 MiB capacity; the file now ends at 1 MiB
});
t.after(async () => {
  s?.close();
  await h.stop();
});

/** Posts n failing reads at once and waits for them all; every one must fail with IOERR. */
async function burst(n: number): Promise<void> {
  const q = s!.q0;
  const pos = s!.mem.position();
  for (let i = 0; i < n; i++) q.post({ type: VIRTIO_BLK_T.IN, sector: PAST + 8 * i, inLen: 4096 });
  q.kick();
  const done = q.complete(await q.waitUsed(n, 5000));
  s!.mem.rewind(pos);
  done.forEach((c, i) => assert.is(c.status, IOERR, `read ${i} past the truncated end`));
}

t('a read the file backend fails completes with IOERR and is logged with operation, range and errno', async () => {
  const m = h.mark();
  const c = await within(10_000, 'failing read', s!.read(PAST, 4096));
  assert.is(c.status, IOERR);
  await h.waitLog(m, /queue 0: backend read at offset 2097152 length 4096 failed: Input\/output error/);
  assert.ok(h.alive());
});

t(
  `a burst of ${BURST} failures that then stops: the ones past the rate limit are counted, without more traffic`,
  async () => {
    await sleep(1100); // a fresh second: the previous case's line does not share this burst's budget
    const m = h.mark();
    await within(10_000, 'burst', burst(BURST));
    // before the fix the count waited for the next failure, which never came
    await h.waitLog(m, /more request failures not logged/, 4000);
    const deadline = Date.now() + 4000;
    let a = accounted(h.since(m));
    while (a.lines + a.counted < BURST && Date.now() < deadline) {
      await sleep(50);
      a = accounted(h.since(m));
    }
    assert.ok(a.lines > 0 && a.lines <= 2 * 20, `logged one by one: ${a.lines}`);
    assert.is(
      a.lines + a.counted,
      BURST,
      `every failure is logged or counted (${a.lines} + ${a.counted}); output:\n${h.since(m)}`,
    );
  },
);

t('the server stops right after a burst: every failure is still logged or counted before it exits', async () => {
  await sleep(1100);
  const m = h.mark();
  await within(10_000, 'burst', burst(BURST));
  // SIGTERM with the front-end still connected: the server drops it, stops the queues (which report
  // their counts) and destroys the device in one go; the events must survive that
  await h.server.stop();
  s!.close();
  s = undefined;
  // the child's last output may arrive just after its exit
  const deadline = Date.now() + 2000;
  let a = accounted(h.since(m));
  while (a.lines + a.counted < BURST && Date.now() < deadline) {
    await sleep(50);
    a = accounted(h.since(m));
  }
  assert.is(
    a.lines + a.counted,
    BURST,
    `every failure is logged or counted (${a.lines} + ${a.counted}); output:\n${h.since(m)}`,
  );
  assert.match(h.since(m), /"event":"stopped"/);
  writeFileSync(h.imagePath, h.model);
});

t.run();
