// The rbd backend against a real one-node Ceph cluster, the one test/rbd's files share (cluster.ts:
// tools/ceph.ts runs the shared start-ceph.sh in a temp directory, stopped and removed like a trap, at
// exit or on a signal): the image's properties; stor copy file → rbd → file with --verify, byte-identical, with
// zero detection (write-zeroes over old data) and a tail that is not a multiple of the object size;
// stor serve --backend rbd: with the client library on two queues, the exclusive lock refusing a second
// writer, and a killed server's lock refused while its watch lasts and broken after; every bad input
// (unreachable monitors with a short timeout, missing pool, image, snapshot, keyring, a wrong key, an
// unknown user, bad specs) as one line and its exit code; an OSD stopped with SIGSTOP during verified
// I/O and resumed: requests wait and complete, none fails, nothing is lost; and a QEMU guest putting
// ext4 and fio's verified writes on the served image, and a second guest on a new server reading them back.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { open } from '../../src/lib/index.js';
import type { CephCluster } from '../../tools/ceph.js';
import { assertOk, describeRun, json, stor, type CliResult } from '../client/helpers.js';
import { cleanupSocket, startStor, type RunningServer } from '../helpers/servers.js';
import { assertGuestOk, liveGuests, runGuest } from '../vm/harness.js';
import { blkioBench, describe as describePeer } from '../peers/blkio.js';
import { suiteCluster } from './cluster.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB; // rbd's default object size

const t = suite('rbd: backend against a one-node Ceph cluster');
let cluster: CephCluster;
let work: string;

/** rbd:rbd/IMAGE on the suite's cluster, with extra properties. */
const rbd = (image: string, extra = ''): string => `rbd:rbd/${image},conf=${cluster.conf}${extra}`;

t.before(async () => {
  // the files of test/rbd share one cluster (see cluster.ts: it is stopped at exit)
  cluster = await suiteCluster();
  // inside the cluster's directory, which the cluster's trap removes even when after() never runs
  work = join(cluster.dir, 'work');
  mkdirSync(work);
});

t.after(() => {
  rmSync(work, { recursive: true, force: true });
});

/** Runs fn with stor serve on rbd/test; the server must stop cleanly with no failed request. */
async function withServe(queues: number, fn: (s: RunningServer) => Promise<void>, cephArgs?: string): Promise<void> {
  // CEPH_ARGS (read by librados at connect, as by every Ceph client) reaches the server's environment
  const saved = process.env.CEPH_ARGS;
  if (cephArgs !== undefined) process.env.CEPH_ARGS = cephArgs;
  let server: RunningServer;
  try {
    server = await startStor({
      backend: { kind: 'rbd', image: 'rbd/test', conf: cluster.conf },
      queues,
      mode: 'notify',
      startTimeoutMs: 30_000,
    });
  } finally {
    if (saved === undefined) delete process.env.CEPH_ARGS;
    else process.env.CEPH_ARGS = saved;
  }
  try {
    await fn(server);
  } finally {
    const code = await server.stop(30_000);
    cleanupSocket(server.socket);
    assert.is(code, 0, `stor serve exited ${code}:\n${server.output()}`);
  }
  const stopped = server
    .output()
    .split('\n')
    .find((l) => l.includes('"event":"stopped"'));
  assert.ok(stopped, `a stopped line:\n${server.output()}`);
  const st = JSON.parse(stopped) as { requests: number; errors: number };
  assert.ok(st.requests > 0 && st.errors === 0, `served ${st.requests} requests, ${st.errors} failed`);
}

t('info: size, object size as optimal-io-size, discard and write-zeroes come from the image', async () => {
  const r = await stor(['info', rbd('test'), '--json']);
  assertOk(r);
  const p = json(r);
  assert.is(p.driver, 'rbd');
  assert.is(p.capacity, 256 * MiB);
  assert.is(p['optimal-io-size'], OBJECT);
  assert.is(p['can-discard'], true);
  assert.is(p['can-write-zeroes'], true);
  assert.is(p['read-only'], false);
  // without conf=, librados' own search: $CEPH_CONF
  const env = await stor(['info', 'rbd:rbd/test', '--json'], 20_000, { CEPH_CONF: cluster.conf });
  assertOk(env);
  assert.is(json(env).capacity, 256 * MiB);
});

t('copy file → rbd → file --verify: byte-identical, zeros as write-zeroes over old data, odd tail', async () => {
  // 4 MiB of data, 5 MiB of zeros, then a tail of 301 KiB + 1.5 KiB: not a multiple of the object size
  const size = 9 * MiB + 301 * 1024 + 1536;
  const src = Buffer.alloc(size);
  randomBytes(4 * MiB).copy(src, 0);
  randomBytes(size - 9 * MiB).copy(src, 9 * MiB);
  const srcPath = join(work, 'src.img');
  const junkPath = join(work, 'junk.img');
  const backPath = join(work, 'back.img');
  writeFileSync(srcPath, src);
  writeFileSync(junkPath, randomBytes(size));
  // a new image (create=), filled with random bytes first, so the zeros must really be written
  assertOk(await stor(['copy', junkPath, rbd('copy', `,create=${size}`), '--verify']));
  const there = await stor(['copy', srcPath, rbd('copy'), '--verify', '--json'], 60_000);
  assertOk(there);
  const j = json(there);
  assert.is(j.verified, true, describeRun(there));
  assert.is(j.length, size);
  assert.ok(Number(j.zeroBytes) >= 4 * MiB, `zero detection: ${String(j.zeroBytes)} bytes as write-zeroes`);
  const back = await stor(['copy', rbd('copy'), `file:${backPath},create=${size}`, '--verify', '--json'], 60_000);
  assertOk(back);
  assert.is(json(back).verified, true);
  const got = readFileSync(backPath);
  assert.is(got.length, size);
  assert.ok(got.equals(src), 'the file that came back differs from the one sent');
  const info = json(await stor(['info', rbd('copy'), '--json']));
  assert.is(info.capacity, size, 'the image has the size create= gave it');

  // a snapshot opens read-only and keeps its data while the image changes
  await cluster.rbd(['snap', 'create', 'rbd/copy@s1']);
  assertOk(await stor(['write', rbd('copy'), '--offset', '0', '--length', '4096', '--pattern', '0x5a']));
  const snapOut = join(work, 'snap.bin');
  assertOk(await stor(['read', rbd('copy', ',snapshot=s1'), '--offset', '0', '--length', '4096', '-o', snapOut]));
  assert.ok(readFileSync(snapOut).equals(src.subarray(0, 4096)), 'the snapshot kept the data it was taken with');
  const nowOut = join(work, 'now.bin');
  assertOk(await stor(['read', rbd('copy'), '--offset', '0', '--length', '4096', '-o', nowOut]));
  assert.ok(readFileSync(nowOut).equals(Buffer.alloc(4096, 0x5a)), 'the image has the new data');
  const snapInfo = json(await stor(['info', rbd('copy', ',snapshot=s1'), '--json']));
  assert.is(snapInfo['read-only'], true, 'a snapshot is read-only');
});

t('serve --backend rbd: library reads, writes, write-zeroes on 2 queues; a second writer is refused', async () => {
  const chunk = 64 * 1024;
  const datas = Array.from({ length: 48 }, () => randomBytes(chunk));
  await withServe(2, async (server) => {
    const dev = await open(`vhost-user:${server.socket}`, { numQueues: 2 });
    // 48 writes in flight over both queues, spread over 12 objects
    await Promise.all(datas.map((d, i) => dev.write(i * MiB + 4096, d, { queue: i % 2 })));
    await dev.flush();
    const reads = await Promise.all(datas.map((_, i) => dev.read(i * MiB + 4096, chunk, { queue: (i + 1) % 2 })));
    reads.forEach((r, i) => assert.ok(r.equals(datas[i]), `write ${i} read back different`));
    await dev.writeZeroes(5 * MiB, 8192);
    const z = await dev.read(5 * MiB, 8192);
    assert.ok(z.equals(Buffer.alloc(8192)), 'write-zeroes left data behind');
    await dev.discard(40 * MiB, 2 * MiB);
    await dev.close();

    // the server holds the image's exclusive lock: a second writer is refused, a reader is not
    const w = await stor(['write', rbd('test'), '--offset', '0', '--length', '4096', '--pattern', '0x11']);
    assert.is(w.code, 1, describeRun(w));
    assert.match(w.stderr, /rbd: image rbd\/test is locked by another client/);
    assert.is(w.stderr.trim().split('\n').length, 2, `one line and a hint:\n${w.stderr}`);
    const i = await stor(['info', rbd('test'), '--json']);
    assertOk(i);
    assert.match(i.stderr, /note: opened read-only: rbd: image rbd\/test is locked/);
  });
  // the data is in the cluster: read it back without the server
  const out = join(work, 'after-serve.bin');
  assertOk(await stor(['read', rbd('test'), '--offset', String(3 * MiB + 4096), '--length', '65536', '-o', out]));
  assert.ok(readFileSync(out).equals(datas[3]), 'what the served image holds after the server stopped');
});

t('a server killed with SIGKILL: its lock is refused while its watch lasts, then broken', async () => {
  const server = await startStor({
    backend: { kind: 'rbd', image: 'rbd/test', conf: cluster.conf },
    startTimeoutMs: 30_000,
  });
  server.proc.kill('SIGKILL');
  await server.stop();
  cleanupSocket(server.socket);
  const write = (): Promise<CliResult> =>
    stor(['write', rbd('test'), '--offset', '0', '--length', '4096', '--pattern', '0x22'], 30_000);
  // at once: the dead holder still watches the image; refused at once, not after a wait for it
  const refused = await write();
  assert.is(refused.code, 1, describeRun(refused));
  assert.match(refused.stderr, /is locked by another client/);
  assert.ok(refused.ms < 10_000, `refused after ${refused.ms} ms`);
  // once its watch has expired, the lock of the dead client is broken and the image opens
  const t0 = Date.now();
  let r = refused;
  while (r.code !== 0 && Date.now() - t0 < 40_000) {
    await new Promise((res) => setTimeout(res, 2000));
    r = await write();
  }
  assertOk(r);
});

t('acknowledged writes survive a SIGKILL of the server right after, even after a flush (no librbd cache)', async () => {
  // its own image: the killed server's lock stays on it until its watch expires
  execFileSync('rbd', ['-c', cluster.conf, 'create', '--size', '64M', 'rbd/acked'], { timeout: 30_000 });
  const server = await startStor({
    backend: { kind: 'rbd', image: 'rbd/acked', conf: cluster.conf },
    mode: 'notify',
    startTimeoutMs: 30_000,
  });
  const blocks = Array.from({ length: 256 }, () => randomBytes(4096));
  try {
    const dev = await open(`vhost-user:${server.socket}`);
    // a guest's first flush is what switches librbd's cache (when on) from writethrough to writearound
    await dev.flush();
    await Promise.all(blocks.map((b, i) => dev.write(i * 64 * 1024, b)));
    // every write is acknowledged: kill the server before anything else can happen
    server.proc.kill('SIGKILL');
  } finally {
    await server.stop();
    cleanupSocket(server.socket);
  }
  // read back without the lock (the dead server still holds it)
  const out = join(work, 'acked.bin');
  assertOk(await stor(['read', rbd('acked', ',readonly=on'), '--length', String(256 * 64 * 1024), '-o', out], 60_000));
  const back = readFileSync(out);
  const lost = blocks.filter((b, i) => !back.subarray(i * 64 * 1024, i * 64 * 1024 + 4096).equals(b)).length;
  assert.is(lost, 0, `${lost} of 256 acknowledged writes lost`);
});

t('adaptive waiting does not spin for rbd: a queue sleeps for the kick as well as for the completion', async () => {
  // libblkio's own client at QD1: it turns a completion round into its next kick within some µs, which
  // a spinning queue catches (about one sleep per request, for the cluster's completion); a queue that
  // does not spin for a remote backend sleeps for both (about two)
  const server = await startStor({
    backend: { kind: 'rbd', image: 'rbd/test', conf: cluster.conf },
    mode: 'adaptive',
    startTimeoutMs: 30_000,
  });
  try {
    const { result, out } = await blkioBench(server.socket, {
      readwrite: 'randread',
      iodepth: 1,
      poll: false,
      runtimeS: 2,
    });
    assert.ok(out, describePeer(result));
  } finally {
    assert.is(await server.stop(30_000), 0, server.output());
    cleanupSocket(server.socket);
  }
  const stopped = JSON.parse(
    server
      .output()
      .split('\n')
      .find((l) => l.includes('"event":"stopped"'))!,
  ) as {
    queues: Array<{ requests: number; wakeups: number }>;
  };
  const q = stopped.queues[0]!;
  assert.ok(q.requests > 100, `${q.requests} requests`);
  assert.ok(q.wakeups / q.requests >= 1.5, `${q.wakeups} wake-ups for ${q.requests} requests: the queue spun`);
});

t('bad inputs: one line each, exit 1 for the cluster, exit 2 for the spec, never a hang', async () => {
  const dead = join(work, 'dead.conf');
  writeFileSync(dead, readFileSync(cluster.conf, 'utf8').replace(/^mon_host = .*$/m, 'mon_host = [v2:127.0.0.1:9]'));
  const badKey = join(work, 'bad.keyring');
  writeFileSync(badKey, '[client.admin]\n\tkey = AQCtM2xnAAAAABAAmtJ2gBxtxo4qNAHQJpY3Hw==\n');
  const cases: Array<[string, number, RegExp]> = [
    [`rbd:rbd/test,conf=${dead},connect-timeout=2`, 1, /cannot reach the cluster: no monitor .* answered within 2 s/],
    [`rbd:nopool/test,conf=${cluster.conf}`, 1, /rbd: pool 'nopool' does not exist/],
    [rbd('nope'), 1, /rbd: image rbd\/nope does not exist/],
    [rbd('test', ',snapshot=nosuch'), 1, /rbd: image rbd\/test has no snapshot 'nosuch'/],
    [rbd('test', `,keyring=${badKey}`), 1, /authentication as client.admin failed/],
    [rbd('test', `,keyring=${join(work, 'missing.keyring')}`), 1, /keyring=.*missing.keyring: No such file/],
    [rbd('test', ',id=nobody'), 1, /authentication as client.nobody failed/],
    [`rbd:rbd/test,conf=${join(work, 'missing.conf')}`, 1, /rbd: conf=.*missing.conf: No such file/],
    ['rbd:rbd', 2, /expected POOL\/IMAGE/],
    ['rbd:', 2, /needs POOL\/IMAGE/],
    [rbd('test', ',bogus=1'), 2, /unknown rbd option 'bogus'/],
    [rbd('test', ',connect-timeout=0'), 2, /connect-timeout=0: expected 1..3600 seconds/],
    [rbd('test', ',id=client.admin'), 2, /without 'client.'/],
  ];
  for (const [target, code, msg] of cases) {
    const r = await stor(['info', target], 30_000);
    assert.is(r.code, code, describeRun(r));
    assert.match(r.stderr, msg, describeRun(r));
    assert.ok(r.ms < 20_000, `took ${r.ms} ms: ${target}`);
    assert.ok(!/\n\s+at /.test(r.stderr), `a stack trace:\n${r.stderr}`);
  }
  const j = await stor(['info', rbd('nope'), '--json']);
  assert.is(j.code, 1);
  assert.match(JSON.stringify(json(j).error), /does not exist/);
});

t('an OSD stopped (SIGSTOP) during verified I/O and resumed: requests wait, none fails, nothing lost', async () => {
  // librbd's cache off: every request goes to the OSD (with it, reads and writes of a small working
  // set would be served from the client's memory while the OSD is stopped)
  await withServe(
    1,
    async (server) => {
      const dev = await open(`vhost-user:${server.socket}`);
      const bs = 64 * 1024;
      const blocks = 256;
      const model = new Map<number, Buffer>();
      const busy = new Set<number>();
      let done = 0;
      let mismatches = 0;
      let failure: unknown;
      let running = true;
      // 8 clients doing random verified writes and reads of 64 KiB blocks until told to stop
      const worker = async (): Promise<void> => {
        while (running && failure === undefined) {
          const blk = Math.floor(Math.random() * blocks);
          if (busy.has(blk)) continue;
          busy.add(blk);
          try {
            const old = model.get(blk);
            if (!old || Math.random() < 0.5) {
              const d = randomBytes(bs);
              await dev.write(blk * bs, d);
              model.set(blk, d);
            } else if (!(await dev.read(blk * bs, bs)).equals(old)) mismatches++;
            done++;
          } catch (e) {
            failure = e;
          } finally {
            busy.delete(blk);
          }
        }
      };
      const workers = Array.from({ length: 8 }, worker);
      const until = async (cond: () => boolean, ms: number, what: string): Promise<void> => {
        for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 20)))
          if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms (${done} requests done)`);
      };
      const osd = cluster.osdPid();
      let atStop = 0;
      let duringStop = 0;
      try {
        await until(() => done >= 200 || failure !== undefined, 30_000, 'I/O flowing');
        process.kill(osd, 'SIGSTOP');
        atStop = done;
        await new Promise((r) => setTimeout(r, 3000));
        duringStop = done - atStop;
      } finally {
        process.kill(osd, 'SIGCONT');
      }
      try {
        await until(() => done >= atStop + duringStop + 200 || failure !== undefined, 60_000, 'I/O resuming');
      } finally {
        running = false;
        await Promise.all(workers);
      }
      assert.is(failure, undefined, `a request failed: ${String(failure)}`);
      assert.ok(duringStop <= 8, `${duringStop} requests completed while the OSD was stopped: it was not on the path`);
      assert.is(mismatches, 0, 'reads returned what was last written');
      for (const [blk, d] of model) assert.ok((await dev.read(blk * bs, bs)).equals(d), `block ${blk} after resume`);
      await dev.close();
    },
    '--rbd_cache=false',
  );
});

t(
  'a QEMU guest on stor serve --backend rbd: ext4 + fio verify; a second guest on a new server sees the data',
  async () => {
    let sums = '';
    await withServe(1, async (server) => {
      const script = String.raw`set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }
[ "$(cat /sys/block/vda/size)" = 524288 ] || fail "capacity $(cat /sys/block/vda/size) sectors"
mkfs.ext4 -q -F /dev/vda
mkdir -p /tmp/m && mount /dev/vda /tmp/m
head -c 8M /dev/urandom > /tmp/m/blob && (cd /tmp/m && sha256sum blob > "$STOR_VM_RESULTS/sums")
fio --eta=never --name=v --filename=/tmp/m/fio.dat --size=16M --bs=4k --iodepth=16 --ioengine=libaio \
  --direct=1 --rw=randwrite --verify=crc32c --do_verify=1 --verify_fatal=1 --runtime=30 > "$STOR_VM_RESULTS/fio.txt" \
  || { cat "$STOR_VM_RESULTS/fio.txt"; fail "fio"; }
umount /tmp/m
e2fsck -fn /dev/vda
echo PASS
`;
      const g = await runGuest({
        script,
        vhostUserBlk: [{ socket: server.socket }],
        memoryMiB: 512,
        timeoutMs: 240_000,
      });
      try {
        assertGuestOk(g, 'guest on rbd');
        const fio = readFileSync(join(g.resultsDir, 'fio.txt'), 'utf8');
        assert.match(fio, /err= 0/, fio);
        sums = readFileSync(join(g.resultsDir, 'sums'), 'utf8').trim();
      } finally {
        g.cleanup();
      }
    });
    assert.match(sums, /^[0-9a-f]{64} {2}blob$/, 'the first guest recorded its file');
    // A second guest, on a new server process (a fresh librbd open: the data came back from the
    // cluster, not from a cache), finds a clean ext4 and the first guest's file byte for byte.
    await withServe(1, async (server) => {
      const g = await runGuest({
        script: String.raw`set -euo pipefail
e2fsck -fn /dev/vda
mkdir -p /tmp/m && mount -o ro /dev/vda /tmp/m
cd /tmp/m && echo '${sums}' | sha256sum -c
echo PASS
`,
        vhostUserBlk: [{ socket: server.socket }],
        memoryMiB: 512,
        timeoutMs: 180_000,
      });
      try {
        assertGuestOk(g, 'second guest on rbd');
      } finally {
        g.cleanup();
      }
    });
    assert.is(liveGuests(), 0, 'no QEMU left running');
  },
);

t.run();
