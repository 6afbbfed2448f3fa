// blkio-copy moves a random file into each server's device and back out again, through libblkio's
// virtio-blk-vhost-user driver. The bytes must round-trip exactly, and on file backends they must
// be in the image file at the offsets they were written to, with nothing else touched.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { describe, ok, runPeer } from './blkio.js';
import { label, matrix, peer, withTarget, type Target, type TargetSpec } from './matrix.js';

const copy = suite('peers: blkio-copy');

const SIZE = 8 * 1024 * 1024;
// blkio-copy moves 128 KiB blocks from offset 0; writing less than the whole device leaves a tail
// that must keep its old content. 5 MiB + 128 KiB is a whole number of blocks.
const DATA = 5 * 1024 * 1024 + 128 * 1024;
// File images start filled with this byte so "untouched" differs from "zeroed".
const FILL = 0x5a;

/** Index of the first byte where a and b differ, or -1. */
function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i += 4096) {
    const end = Math.min(n, i + 4096);
    if (a.subarray(i, end).equals(b.subarray(i, end))) continue;
    for (let j = i; j < end; j++) if (a[j] !== b[j]) return j;
  }
  return a.length === b.length ? -1 : n;
}

function assertSame(actual: Buffer, expected: Buffer, what: string): void {
  const d = firstDiff(actual, expected);
  assert.ok(
    d === -1,
    `${what}: first difference at byte ${d} (length ${actual.length} vs ${expected.length}; ` +
      `got 0x${actual[d]?.toString(16)}, want 0x${expected[d]?.toString(16)})`,
  );
}

/** The device's expected content after DATA bytes of `data` were written at offset 0. */
function expectedDevice(t: Target, data: Buffer): Buffer {
  if (t.backend === 'null') return Buffer.alloc(SIZE); // writes are discarded, reads return zeroes
  const dev = Buffer.alloc(SIZE, t.fill);
  data.copy(dev, 0);
  return dev;
}

async function roundTrip(spec: TargetSpec, direct: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stor-peer-copy-'));
  try {
    const data = randomBytes(DATA);
    const input = join(dir, 'in.bin');
    const output = join(dir, 'out.bin');
    writeFileSync(input, data);
    const code = await withTarget(spec, { size: SIZE, image: FILL, direct }, async (t) => {
      const w = await peer(t, () =>
        runPeer(
          'blkio-copy',
          [`--input-file=${input}`, '--output-blkio=virtio-blk-vhost-user', `path=${t.socket}`],
          30_000,
        ),
      );
      assert.ok(ok(w), describe(w));

      if (t.imagePath) {
        // The file backend must have put block n of the input at byte n*128K of the image.
        const img = readFileSync(t.imagePath);
        assert.is(img.length, SIZE, 'image size unchanged');
        assertSame(img.subarray(0, DATA), data, 'image file head vs written data');
        assertSame(img.subarray(DATA), Buffer.alloc(SIZE - DATA, FILL), 'image file tail (never written)');
      }

      // blkio-copy opens its output file O_WRONLY without O_CREAT: it must exist.
      writeFileSync(output, Buffer.alloc(0));
      const r = await peer(t, () =>
        runPeer(
          'blkio-copy',
          ['--input-blkio=virtio-blk-vhost-user', `path=${t.socket}`, `--output-file=${output}`],
          30_000,
        ),
      );
      assert.ok(ok(r), describe(r));
      const back = readFileSync(output);
      assert.is(back.length, SIZE, 'read back the whole capacity');
      assertSame(back, expectedDevice(t, data), `${t.label} device content read back`);
    });
    assert.is(code, 0, 'server exit code after SIGTERM');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const spec of matrix()) {
  const what =
    spec.backend === 'null'
      ? 'writes are accepted and reads return zeroes'
      : spec.backend === 'file'
        ? 'bytes round-trip and sit at the right offsets of the image file'
        : 'bytes round-trip';
  copy(`${label(spec)}: file -> socket -> file, ${what}`, () => roundTrip(spec, false));
}

// O_DIRECT takes a different I/O path (aligned buffers, no page cache): prove it once per server.
for (const server of ['stor', 'qsd'] as const) {
  const spec: TargetSpec = { server, backend: 'file', queues: 1 };
  copy(`${label(spec)} direct=on: bytes round-trip and sit at the right offsets of the image file`, () =>
    roundTrip(spec, true),
  );
}

copy.run();
