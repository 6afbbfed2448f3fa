// VDUSE reconnect (issue #14 point 3) inside the Linux 6.12 test guest: fio randwrite with crc32c
// verification runs on a `stor attach --vduse` disk while stor is SIGKILLed twice and each time
// replaced by `stor attach --vduse --reconnect --name NAME`. The backend is a file behind the fault
// filter's delay with jitter, so requests complete out of order and some are always in flight when
// stor dies. The kernel keeps the VDUSE device, its rings and /dev/vdX when the server's fd closes; the
// new server resumes each ring from the used index plus what the dead one's inflight log says was in
// flight, resubmitting exactly those requests. Restarting at the used index alone (no log) replays
// requests completed ahead of older ones and never sees the older ones again: the ring breaks ("head N
// made available again while still in flight") or the guest's I/O hangs. STOR_VDUSE_INFLIGHT=off in
// the environment switches the log off, and this test then fails — fio hangs, or, when both kills
// happen to land while completions are in order, the check that something was resubmitted does.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertGuestOk, liveGuests, runGuest } from './harness.js';
import { STOR_BIN } from '../helpers/paths.js';

const SCRIPT = String.raw`set -uo pipefail
export STOR_RUN_DIR=/tmp/run
STOR="node $STOR_BIN"
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; dmesg | tail -30; exit 1; }
# start OUT ARGS...: stor attach --vduse --name rc0 in the background; sets APID and DEV
start() {
  local out=$1; shift
  $STOR attach --vduse --name rc0 --json "$@" >"$out" 2>"$out.err" &
  APID=$!
  for i in $(seq 1 1200); do grep -q '"ready"' "$out" && break; kill -0 $APID 2>/dev/null || break; sleep 0.1; done
  grep -q '"ready"' "$out" || { cat "$out" "$out.err"; fail "attach: no ready line"; }
  DEV=$(sed -n 's/.*"event":"ready".*"device":"\([^"]*\)".*/\1/p' "$out" | head -1)
  [ -b "$DEV" ] || fail "attach: ready names $DEV, which is not a block device"
}
writes() { awk '{print $5}' /sys/block/$(basename $DEV)/stat; }
# waits until n more writes have completed on the disk (bounded)
more_writes() {
  local w0=$(writes) t0=$SECONDS
  while [ $((SECONDS - t0)) -lt 60 ]; do sleep 0.2; [ $(( $(writes) - w0 )) -gt $1 ] && return 0; done
  tail -n 5 /tmp/a*.out.err
  kill -0 $APID 2>/dev/null && echo "stor (pid $APID) is alive" || echo "stor (pid $APID) is gone"
  echo "in flight (reads writes): $(cat /sys/block/$(basename $DEV)/inflight)"
  kill -0 $FIO 2>/dev/null && echo "fio is running" || { echo "fio has exited:"; cat $STOR_VM_RESULTS/fio.txt; }
  cat /sys/block/$(basename $DEV)/stat
  fail "fewer than $1 writes completed in 60 s"
}

step "attach over a jittery file backend"
start /tmp/a0.out --backend "file:/tmp/rc.img,create=64M,delay-us=300,delay-jitter-us=3000" --queue-size 128
FIRST=$DEV
timeout -k 10 240 fio --name=rw --filename=$DEV --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
  --iodepth=16 --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never \
  --output=$STOR_VM_RESULTS/fio.txt &
FIO=$!
for k in 1 2; do
  more_writes 300
  kill -0 $FIO 2>/dev/null || fail "fio finished before SIGKILL $k: nothing would be in flight"
  step "SIGKILL $k of stor (pid $APID) with fio's writes in flight"
  kill -KILL $APID; wait $APID 2>/dev/null
  [ -e /dev/vduse/rc0 ] || fail "the VDUSE device went with its server"
  [ -b $FIRST ] || fail "$FIRST went with its server"
  $STOR attach --list --json | grep -q '"name":"rc0".*"alive":false' || fail "--list does not show rc0 dead"
  if [ $k = 2 ]; then
    step "a backend that is not the disk's is refused"
    $STOR attach --vduse --reconnect --name rc0 --backend mem:64M >/tmp/wrong.out 2>&1; rc=$?
    cat /tmp/wrong.out
    [ $rc = 2 ] || fail "reconnect with another backend: exit $rc, want 2"
    grep -q 'is not the backend of rc0' /tmp/wrong.out || fail "no 'is not the backend of rc0'"
  fi
  step "reconnect $k"
  if [ $k = 1 ]; then start /tmp/a$k.out --reconnect
  else start /tmp/a$k.out --reconnect --backend "file:/tmp/rc.img,create=64M,delay-us=300,delay-jitter-us=3000"; fi
  [ "$DEV" = "$FIRST" ] || fail "reconnect made $DEV, not $FIRST"
  grep -h 'resumed at avail index' /tmp/a$k.out.err | head -2
done
step "fio finishes"
wait $FIO
rc=$?
cat $STOR_VM_RESULTS/fio.txt | grep -E 'err=|verify|issued' | head -5
[ $rc = 0 ] || fail "fio exited $rc (124: hung)"
grep -q 'err= 0' $STOR_VM_RESULTS/fio.txt || fail "fio reported an error"
dmesg | grep -Ei 'I/O error|blk_update_request|critical medium|virtio.*broken' && fail "block errors in dmesg"
grep -h 'resubmitting [1-9]' /tmp/a*.out.err > $STOR_VM_RESULTS/resubmitted
step "detach after reconnect removes everything"
kill -TERM $APID; wait $APID; rc=$?
[ $rc = 0 ] || { cat /tmp/a2.out.err; fail "detach after reconnect exited $rc"; }
[ ! -e $FIRST ] && [ ! -e /dev/vduse/rc0 ] && [ ! -e /sys/bus/vdpa/devices/rc0 ] || fail "the disk is left after detach"
[ ! -e /tmp/run/attach/vduse-rc0.json ] && [ ! -e /tmp/run/attach/vduse-rc0.inflight ] || fail "record or log left"
echo PASS
`;

const t = suite('vm: stor attach --vduse --reconnect across SIGKILLs (out-of-order backend)');

t('fio randwrite --verify on a VDUSE disk survives 2 SIGKILLs of stor, each followed by --reconnect', async () => {
  const env: Record<string, string> = { STOR_BIN };
  if (process.env.STOR_VDUSE_INFLIGHT) env.STOR_VDUSE_INFLIGHT = process.env.STOR_VDUSE_INFLIGHT;
  const r = await runGuest({ script: SCRIPT, env, memoryMiB: 1024, timeoutMs: 420_000 });
  try {
    assertGuestOk(r, 'vduse reconnect');
    // the kills landed with requests in flight: some reconnect resubmitted something
    const resubmitted = readFileSync(join(r.resultsDir, 'resubmitted'), 'utf8').trim();
    assert.ok(resubmitted.length > 0, 'no reconnect found a request in flight: the kills did not test anything');
  } finally {
    r.cleanup();
  }
  assert.is(liveGuests(), 0, 'no QEMU left running');
});

t.run();
