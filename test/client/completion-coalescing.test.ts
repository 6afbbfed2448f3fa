// The vhost-user client coalesces completion calls while completions come densely: a sleep may ask
// the server for its call only after up to a quarter of the in-flight requests have completed
// (native/bdev/vhost_user.c, vq_coalesce_target). Its risks are a call that never comes (a hang) and
// completions left waiting when they are sparse. Against qemu-storage-daemon (null-co), with and
// without a 1 ms latency per request, at queue depths where coalescing is allowed: every run ends,
// every request completes, and with sparse completions the throughput and the tail stay what a
// queue of that depth gives (IOPS at least 0.7 x depth / latency, p99 under 3 x the latency).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runBench, type BenchOptions } from '../../src/lib/index.js';
import { startQsd, cleanupSocket, type RunningServer } from '../helpers/servers.js';

const t = suite('client: completion coalescing against qemu-storage-daemon (notify)');
const LATENCY_NS = 1_000_000;
const servers: RunningServer[] = [];

t.after(async () => {
  for (const s of servers) {
    await s.stop();
    cleanupSocket(s.socket);
  }
});

function options(socket: string, iodepth: number, rw: BenchOptions['rw'] = 'randread'): BenchOptions {
  return {
    target: `vhost-user:${socket}`,
    rw,
    rwmixread: 50,
    bs: 4096,
    iodepth,
    queues: 1,
    runtimeMs: 1000,
    rampMs: 0,
    modes: ['notify'],
    verify: false,
    direct: false,
    spinUs: 0,
    seed: 1,
  };
}

t('dense completions (null-co, no latency): QD 5, 13, 32 and 64 runs end with every request done', async () => {
  const qsd = await startQsd({ backend: { kind: 'null', size: 64 << 20 } });
  servers.push(qsd);
  for (const qd of [5, 13, 32, 64]) {
    const r = await runBench(options(qsd.socket, qd, 'randrw'));
    const m = r.results[0];
    assert.is(m.errors, 0, `QD${qd}: errors`);
    assert.ok(m.total.ios > 1000, `QD${qd}: ${m.total.ios} requests in 1 s`);
  }
});

t('sparse completions (null-co, 1 ms each): QD 8 and 32 keep depth / latency and a tail under 3 ms', async () => {
  const qsd = await startQsd({ backend: { kind: 'null', size: 64 << 20, latencyNs: LATENCY_NS } });
  servers.push(qsd);
  for (const qd of [8, 32]) {
    const r = await runBench(options(qsd.socket, qd));
    const m = r.results[0];
    const ideal = qd / (LATENCY_NS / 1e9);
    assert.is(m.errors, 0, `QD${qd}: errors`);
    assert.ok(
      m.total.iops >= 0.7 * ideal,
      `QD${qd}: ${m.total.iops.toFixed(0)} IOPS, a ${qd}-deep queue of 1 ms requests gives ${ideal}`,
    );
    const p99 = m.latency.percentiles['99.000000'];
    assert.ok(p99 < 3 * LATENCY_NS, `QD${qd}: p99 ${(p99 / 1e6).toFixed(2)} ms`);
  }
});

t.run();
