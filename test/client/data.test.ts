// Bytes through a vhost-user-blk socket must land exactly where they were sent in the image file a
// server exports, and nowhere else: stor write and stor copy in, checked on disk after the command
// returns; blkio-copy (libblkio) in, stor read out. Against stor serve and qemu-storage-daemon.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { describe as describePeer, ok as peerOk, runPeer } from '../peers/blkio.js';
import { assertOk, assertSame, json, readRange, SERVERS, stor, tempDir, withServer } from './helpers.js';

const data = suite('client: data through the socket, checked in the image file');

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
// Every byte of the image starts as FILL, so "untouched" differs from "zeroed".
const FILL = 0x5a;
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** The whole image must be FILL except [off, off+bytes.length), which must be `bytes`. */
function assertImage(image: string, off: number, bytes: Buffer, what: string): void {
  const img = readFileSync(image);
  assert.is(img.length, SIZE, `${what}: image size changed`);
  assertSame(img.subarray(off, off + bytes.length), bytes, `${what}: the written range in the image`);
  assertSame(img.subarray(0, off), Buffer.alloc(off, FILL), `${what}: bytes before the range (must be untouched)`);
  assertSame(
    img.subarray(off + bytes.length),
    Buffer.alloc(SIZE - off - bytes.length, FILL),
    `${what}: bytes after the range (must be untouched)`,
  );
}

for (const server of SERVERS) {
  // More than one 4 MiB command chunk, so with --queues 2 both virtqueues carry data; odd sector counts.
  data(
    `${server}/file q2: stor write --input (5 MiB + 1.5 KiB of random bytes at offset 1 MiB + 1.5 KiB, 2 queues) is in the image byte for byte when the command returns, nothing around it changes; --pattern writes its byte`,
    async () => {
      const dir = tempDir('write');
      try {
        await withServer(server, { backend: 'file', size: SIZE, fill: FILL, queues: 2 }, async (s) => {
          const bytes = randomBytes(5 * MiB + 1536);
          const input = join(dir, 'in.bin');
          writeFileSync(input, bytes);
          const off = MiB + 1536;
          const r = await stor([
            'write',
            `vhost-user:${s.socket}`,
            '--offset',
            String(off),
            '--input',
            input,
            '--queues',
            '2',
            '--json',
          ]);
          assertOk(r);
          const j = json(r);
          assert.is(j['length'], bytes.length, 'reported length');
          assert.is(j['offset'], off, 'reported offset');
          assert.is(j['sha256'], sha256(bytes), 'reported sha256 is that of the input');
          assertImage(s.image!, off, bytes, 'after stor write --input');

          // A repeated byte over a range that overlaps the end of the data just written.
          const pOff = off + bytes.length - 4096;
          const pr = await stor([
            'write',
            `vhost-user:${s.socket}`,
            '--offset',
            String(pOff),
            '--pattern',
            '0xc3',
            '--length',
            '64k',
            '--json',
          ]);
          assertOk(pr);
          const expect = Buffer.concat([bytes.subarray(0, bytes.length - 4096), Buffer.alloc(65536, 0xc3)]);
          assertImage(s.image!, off, expect, 'after stor write --pattern 0xc3 --length 64k');
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  data(
    `${server}/file q2: stor copy FILE vhost-user:SOCK --dst-offset 3 MiB + 512 puts the file (random, with an all-zero MiB in it) at that offset of the image, zeros as zeros, nothing around it changes`,
    async () => {
      const dir = tempDir('copyin');
      try {
        await withServer(server, { backend: 'file', size: SIZE, fill: FILL, queues: 2 }, async (s) => {
          // 1 MiB random, 1 MiB zeros (a whole copy chunk: sent as write-zeroes), 2.5 MiB random.
          const bytes = Buffer.concat([randomBytes(MiB), Buffer.alloc(MiB), randomBytes(2 * MiB + 512 * 1024)]);
          const input = join(dir, 'src.bin');
          writeFileSync(input, bytes);
          const off = 3 * MiB + 512;
          const r = await stor([
            'copy',
            input,
            `vhost-user:${s.socket}`,
            '--dst-offset',
            String(off),
            '--queues',
            '2',
            '--iodepth',
            '4',
            '--json',
          ]);
          assertOk(r);
          const j = json(r);
          assert.is(j['length'], bytes.length, 'reported length');
          assertImage(s.image!, off, bytes, 'after stor copy FILE -> socket');
          assert.is(statSync(input).size, bytes.length, 'the source file is unchanged in size');
          assertSame(readFileSync(input), bytes, 'the source file is unchanged');
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  data(
    `${server}/file q2: what blkio-copy (libblkio) wrote reads back identical through stor read (at 0 and at an unaligned-to-chunk offset, 1 and 2 queues), the unwritten tail reads as the image's old bytes`,
    async () => {
      const dir = tempDir('blkiocopy');
      try {
        await withServer(server, { backend: 'file', size: SIZE, fill: FILL, queues: 2 }, async (s) => {
          // blkio-copy moves 128 KiB blocks from offset 0 of the device.
          const bytes = randomBytes(6 * MiB + 128 * 1024);
          const input = join(dir, 'in.bin');
          writeFileSync(input, bytes);
          const w = await runPeer(
            'blkio-copy',
            [`--input-file=${input}`, '--output-blkio=virtio-blk-vhost-user', `path=${s.socket}`],
            30_000,
          );
          assert.ok(peerOk(w), describePeer(w));

          const out = join(dir, 'out.bin');
          const r = await stor([
            'read',
            `vhost-user:${s.socket}`,
            '--offset',
            '0',
            '--length',
            String(bytes.length),
            '--output',
            out,
            '--json',
          ]);
          assertOk(r);
          assertSame(readFileSync(out), bytes, 'stor read of what blkio-copy wrote');
          assert.is(json(r)['sha256'], sha256(bytes), 'reported sha256');

          // A range starting inside the data and running 1 MiB past its end, over 2 queues.
          const off = 4 * MiB + 7 * 512;
          const len = bytes.length - off + MiB;
          const out2 = join(dir, 'out2.bin');
          const r2 = await stor([
            'read',
            `vhost-user:${s.socket}`,
            '--offset',
            String(off),
            '--length',
            String(len),
            '--output',
            out2,
            '--queues',
            '2',
          ]);
          assertOk(r2);
          assertSame(
            readFileSync(out2),
            Buffer.concat([bytes.subarray(off), Buffer.alloc(MiB, FILL)]),
            'stor read across the end of the written data',
          );
          // And the image agrees with both.
          assertSame(readRange(s.image!, 0, bytes.length), bytes, 'image file head');
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
}

data.run();
