// Nothing lost across restarts: a Linux guest whose vhost-user-blk chardev reconnects (reconnect=1)
// runs fio randwrite with crc32c verification on the raw disk while `stor serve` is killed with
// SIGKILL three times and started again on the same socket. The backend is a file behind the fault
// filter's delay with jitter, so requests complete out of order and some are always in flight when
// the server dies. QEMU rewinds the ring to the used index on reconnect; a request completed ahead
// of an older one would be replayed and the older one never seen again (the guest hangs) — unless
// the new server resubmits exactly what was in flight, from the inflight buffer QEMU kept
// (INFLIGHT_SHMFD). The test asserts fio finishes clean and that the restarted servers did resubmit.
// With STOR_VHOST_USER_INFLIGHT=off in the environment the servers do not offer the feature and this
// test fails (the guest's I/O hangs): that is how it is known to bite.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { consoleTail, liveGuests, runGuest } from './harness.js';
import { startStor, type RunningServer, type ServerOptions } from '../helpers/servers.js';

const SIZE = 256 * 2 ** 20;
const KILLS = 3;

// fio is bounded by `timeout`, so a hung request fails the script instead of the harness's watchdog.
const SCRIPT = String.raw`set -uo pipefail
fail() { echo "FAIL: $*"; exit 1; }
[ "$(cat /sys/block/vda/size)" = "$EXPECT_SECTORS" ] || fail "wrong capacity"
timeout -k 10 200 fio --name=rw --filename=/dev/vda --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
  --iodepth=16 --size=96M --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never \
  --output="$STOR_VM_RESULTS/fio.txt" &
pid=$!
# the host starts killing once fio's writes are reaching the disk (fio takes a while to start under TCG)
w0=$(awk '{print $5}' /sys/block/vda/stat)
for i in $(seq 1 600); do
  sleep 0.1
  [ $(( $(awk '{print $5}' /sys/block/vda/stat) - w0 )) -gt 500 ] && break
done
echo STOR-FIO-START
wait $pid
rc=$?
echo STOR-FIO-END rc=$rc
cat "$STOR_VM_RESULTS/fio.txt"
[ $rc = 0 ] || fail "fio exited $rc"
grep -q 'err= 0' "$STOR_VM_RESULTS/fio.txt" || fail "fio reported an error"
echo PASS
`;

const t = suite('vm: inflight tracking across SIGKILLed stor serve (reconnect=1, out-of-order backend)');

t('fio randwrite --verify survives 3 SIGKILLs of stor serve over a jittery file backend', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stor-inflight-'));
  const socket = join(dir, 'vub.sock');
  const image = join(dir, 'disk.img');
  const opts = (create: boolean): ServerOptions => ({
    socket,
    backend: {
      kind: 'file',
      path: image,
      ...(create ? { create: SIZE } : {}),
      faults: { 'delay-us': '300', 'delay-jitter-us': '3000' },
    },
    extraArgs: ['--queue-size', '128'],
  });
  const servers: RunningServer[] = [await startStor(opts(true))];
  let kills = 0;
  let stopped = false;
  const killer = async (): Promise<void> => {
    for (let i = 0; i < KILLS && !stopped; i++) {
      await new Promise((r) => setTimeout(r, i === 0 ? 500 : 3000));
      const s = servers.at(-1)!;
      s.proc.kill('SIGKILL');
      await new Promise((r) => s.proc.once('exit', r));
      kills++;
      servers.push(await startStor(opts(false)));
    }
  };
  let killing: Promise<void> | undefined;
  let seen = '';
  try {
    const guest = await runGuest({
      script: SCRIPT,
      vhostUserBlk: [{ socket, reconnect: 1 }],
      env: { EXPECT_SECTORS: String(SIZE / 512) },
      memoryMiB: 512,
      timeoutMs: 300_000,
      onConsole: (text) => {
        seen += text; // a marker may arrive split over two pieces
        if (seen.includes('STOR-FIO-START') && !killing) killing = killer();
      },
    });
    stopped = true;
    await killing;
    try {
      const logs = servers.map((s, i) => `--- server ${i} ---\n${s.output()}`).join('\n');
      assert.ok(
        guest.status === 0,
        `guest ${guest.timedOut ? 'timed out' : `exited ${guest.status}`}; console:\n${consoleTail(guest, 60)}\n${logs}`,
      );
      assert.is(
        kills,
        KILLS,
        `stor serve was killed ${KILLS} times while fio ran; console:\n${consoleTail(guest, 40)}`,
      );
      const resubmitted = servers.slice(1).filter((s) => /resubmitting \d+ requests/.test(s.output())).length;
      assert.ok(resubmitted >= 1, `at least one restarted server resubmitted in-flight requests:\n${logs}`);
      const counts = servers.map((s) => [...s.output().matchAll(/resubmitting (\d+) requests/g)].map((m) => m[1]));
      console.log(`  ${kills} SIGKILLs survived; requests resubmitted per restart: ${JSON.stringify(counts.slice(1))}`);
    } finally {
      guest.cleanup();
    }
  } finally {
    stopped = true;
    await killing?.catch(() => {});
    for (const s of servers) await s.stop(2000);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.is(liveGuests(), 0, 'no QEMU left running');
});

t.run();
