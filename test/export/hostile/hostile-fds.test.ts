// Notification fds that are not eventfds (a memfd is always readable, a pipe can fill up) would
// make a queue thread spin or block: the server refuses them and drops that front-end.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { native } from '../../../src/lib/native.js';
import { Harness, within, type BackendKind } from './hostile-helpers.js';

for (const backend of ['mem', 'file'] as BackendKind[]) {
  const t = suite(`notification fds must be eventfds (${backend} backend)`);
  const h = new Harness(backend);
  t.before(async () => {
    await h.start();
  });
  t.after(async () => {
    await h.stop();
  });

  for (const kind of ['kick', 'call'] as const) {
    t(`a memfd as the ${kind} fd is refused with a logged reason; the next front-end is served`, async () => {
      const m = h.mark();
      const s = h.open();
      const fd = native().memfdCreate(`not-an-eventfd-${kind}`, 4096);
      try {
        if (kind === 'kick') s.fe.setVringKick(0, fd);
        else s.fe.setVringCall(0, fd);
      } catch {
        /* the back-end may drop us before it acks: that is the point */
      } finally {
        native().close(fd);
      }
      await within(5000, 'refusal', h.waitLog(m, new RegExp(`${kind} fd is not an eventfd`)));
      await h.waitDisconnected(m);
      s.close();
      await h.proveHealthy();
    });
  }

  t('no queue thread is left spinning after the refusals', async () => {
    // CPU ticks of the server's threads over 500 ms of idleness: a spinning thread would use ~50.
    const ticks = (): number => cpuTicks(h.server.pid);
    const a = ticks();
    await new Promise((r) => setTimeout(r, 500));
    const b = ticks();
    assert.ok(b - a < 15, `server used ${b - a} CPU ticks in 500 ms while idle`);
  });

  t.run();
}

/** utime + stime of the whole process, in clock ticks. */
function cpuTicks(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}
