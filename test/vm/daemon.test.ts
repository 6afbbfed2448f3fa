// A Linux guest on controllers `stor daemon` created over JSON-RPC (#13 point 3), and the daemon's
// --state across a SIGKILL under that guest (#14 point 4). One QEMU, two disks: vda on a malloc
// controller attached as the harness attaches every disk, vdb on an aio (file) controller whose
// chardev has reconnect=1. The guest writes and verifies a pattern on each; then, on vdb, it keeps
// writing and reading back 256 KiB chunks while the host SIGKILLs the daemon and starts it again with
// the same --state, until it reads the marker the host writes into the image after the restart (so the
// guest's I/O demonstrably spans the kill); no I/O may fail, every chunk must read back, the pattern written before
// the kill must still be there, and the host's image file must hold it.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpdkClient } from '../../src/lib/rpc/spdk-client.js';
import { startStorDaemon, type StorDaemon } from '../../tools/servers.js';
import { assertGuestOk, consoleTail, liveGuests, runGuest } from './harness.js';

const MiB = 2 ** 20;
/** Where the host writes its marker: past the guest's pattern (0-4 MiB) and chunks (4-16 MiB). */
const MARKER_OFFSET = 30 * MiB;

const SCRIPT = String.raw`set -euo pipefail
step() { printf '== [%ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
for d in vda vdb; do [ -b /dev/$d ] || fail "no /dev/$d"; done
[ "$(cat /sys/block/vda/size)" = "$VDA_SECTORS" ] || fail "vda has $(cat /sys/block/vda/size) sectors, want $VDA_SECTORS"
[ "$(cat /sys/block/vdb/size)" = "$VDB_SECTORS" ] || fail "vdb has $(cat /sys/block/vdb/size) sectors, want $VDB_SECTORS"
step pattern on vda, the malloc controller
head -c 4M /dev/urandom > /tmp/a
dd if=/tmp/a of=/dev/vda bs=1M oflag=direct status=none
cmp <(dd if=/dev/vda bs=1M count=4 iflag=direct status=none) /tmp/a || fail "vda: the pattern does not read back"
step pattern on vdb, the aio controller
dd if="$STOR_VM_SHARE/pattern" of=/dev/vdb bs=1M oflag=direct status=none
cmp <(dd if=/dev/vdb bs=1M count=4 iflag=direct status=none) "$STOR_VM_SHARE/pattern" || fail "vdb: the pattern does not read back"
echo "== KILL-NOW"
# chunks after the first 4 MiB, each written and read back, until the host's marker (written into the
# image once the new daemon is ready, read here through the restored controller) and five more chunks
i=0; maxdt=0; after=-1
while [ $after -lt 5 ]; do
  off=$(( 16 + i % 48 ))
  t0=$(now_ms)
  head -c 256K /dev/urandom > /tmp/c
  dd if=/tmp/c of=/dev/vdb bs=256K seek=$off oflag=direct status=none || fail "chunk $i: write failed"
  cmp <(dd if=/dev/vdb bs=256K skip=$off count=1 iflag=direct status=none) /tmp/c || fail "chunk $i: reads back different"
  dt=$(( $(now_ms) - t0 )); [ $dt -gt $maxdt ] && maxdt=$dt
  i=$(( i + 1 ))
  if [ $after -lt 0 ]; then
    dd if=/dev/vdb bs=512 skip=$MARKER_SECTOR count=1 iflag=direct status=none | grep -q RESTARTED && after=0
  else
    after=$(( after + 1 ))
  fi
done
echo "== LOOP-DONE chunks=$i longest_ms=$maxdt"
step the pattern written before the kill is intact
cmp <(dd if=/dev/vdb bs=1M count=4 iflag=direct status=none) "$STOR_VM_SHARE/pattern" || fail "vdb: the pattern changed across the restart"
echo PASS
`;

const t = suite('vm: a guest on stor daemon’s controllers, across SIGKILL + restart with --state');

t(
  'dd verify on a malloc and an aio controller; the aio one (reconnect=1) survives a daemon SIGKILL + --state restart',
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stor-vm-dmn-'));
    const socketDir = join(dir, 'v');
    mkdirSync(socketDir);
    const rpcSocket = join(dir, 'rpc.sock');
    const state = join(dir, 'state.json');
    const img = join(dir, 'disk.img');
    writeFileSync(img, Buffer.alloc(32 * MiB));
    const pattern = randomBytes(4 * MiB);
    let daemon: StorDaemon | undefined;
    try {
      daemon = await startStorDaemon({ rpcSocket, socketDir, state });
      const rpc = await SpdkClient.connect(rpcSocket);
      try {
        await rpc.bdevMallocCreate({ name: 'Ram0', num_blocks: (16 * MiB) / 512, block_size: 512 });
        await rpc.bdevAioCreate({ name: 'Disk0', filename: img, block_size: 512 });
        await rpc.vhostCreateBlkController({ ctrlr: 'ram', dev_name: 'Ram0' });
        await rpc.vhostCreateBlkController({ ctrlr: 'disk', dev_name: 'Disk0' });
      } finally {
        rpc.close();
      }

      let seen = '';
      let killedAt = 0;
      let restartedAt = 0;
      let restart: Promise<void> | undefined;
      const onConsole = (text: string): void => {
        seen += text;
        if (restart || !seen.includes('== KILL-NOW')) return;
        const old = daemon!;
        restart = (async () => {
          const exited = new Promise((r) => old.proc.once('exit', r));
          old.proc.kill('SIGKILL');
          await exited;
          killedAt = seen.length;
          daemon = await startStorDaemon({ rpcSocket, socketDir, state });
          restartedAt = seen.length;
          const fd = openSync(img, 'r+');
          try {
            writeSync(fd, Buffer.from('RESTARTED'), 0, 9, MARKER_OFFSET);
          } finally {
            closeSync(fd);
          }
        })();
      };
      const r = await runGuest({
        script: SCRIPT,
        vhostUserBlk: [{ socket: join(socketDir, 'ram') }],
        extraQemuArgs: [
          '-chardev',
          `socket,id=rc0,path=${join(socketDir, 'disk')},reconnect=1`,
          '-device',
          'vhost-user-blk-pci,chardev=rc0,num-queues=1',
        ],
        env: {
          MARKER_SECTOR: String(MARKER_OFFSET / 512),
          VDA_SECTORS: String((16 * MiB) / 512),
          VDB_SECTORS: String((32 * MiB) / 512),
        },
        files: { pattern },
        memoryMiB: 256,
        timeoutMs: 120_000,
        onConsole,
      });
      try {
        await restart;
        assertGuestOk(r, 'dd verify across a daemon restart');
        assert.ok(restart, 'the guest reached the kill point');
        const done = r.console.indexOf('== LOOP-DONE');
        assert.ok(
          killedAt > 0 && restartedAt > 0 && restartedAt <= done,
          `the daemon was killed and back before the guest's loop ended:\n${consoleTail(r, 30)}`,
        );
        assert.equal(daemon!.ready.bdevs, ['Ram0', 'Disk0'], 'the restarted daemon restored both bdevs');
        assert.ok(daemon!.proc.exitCode === null, `the daemon is still running:\n${daemon!.output()}`);
        const head = Buffer.alloc(pattern.length);
        const fd = openSync(img, 'r');
        try {
          readSync(fd, head, 0, head.length, 0);
        } finally {
          closeSync(fd);
        }
        assert.ok(head.equals(pattern), 'the host image holds the pattern the guest wrote');
      } finally {
        r.cleanup();
      }
    } finally {
      await daemon?.stop(5000);
      rmSync(dir, { recursive: true, force: true });
    }
    assert.is(liveGuests(), 0, 'no QEMU left running');
  },
);

t.run();
