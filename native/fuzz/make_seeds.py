#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fixtures/fuzz/<target>/: well-formed inputs that
reach deep (a ring with read, write, flush, get-id, discard, indirect and region-crossing requests;
memory-table, ring-address and inflight-buffer messages), from which libFuzzer mutates. Rerun it
after changing an input layout (native/fuzz/fuzz_*.c)."""
import os, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'fixtures', 'fuzz')

def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

# ---- virtio_blk: struct setup (8 bytes) + guest memory from gpa 0 ----
NEXT, WRITE, INDIRECT = 1, 2, 4
def ring(reqs, log2_num=3, flags=1, desc_off=0x1000, avail_off=0x2000, used_off=0x3000):
    mem = bytearray(0x8000)
    num = 1 << log2_num
    base = desc_off >> 3
    heads = []
    d = 0
    hdr_at, data_at, st_at = 0x4000, 0x5000, 0x7000
    for typ, sector, data_len, extra in reqs:
        head = d
        if extra == 'indirect':
            table = 0x6000 + 0x100 * len(heads)
            ents = [(hdr_at, 16, NEXT, 1), (data_at, data_len, WRITE | NEXT, 2), (st_at, 1, WRITE, 0)]
            for i, e in enumerate(ents):
                struct.pack_into('<QIHH', mem, table + 16 * i, *e)
            struct.pack_into('<QIHH', mem, desc_off + 16 * d, table, 16 * len(ents), INDIRECT, 0)
            d += 1
        else:
            struct.pack_into('<QIHH', mem, desc_off + 16 * d, hdr_at, 16, NEXT, d + 1)
            d += 1
            if data_len:
                flag = WRITE if typ == 0 or typ == 8 else 0
                addr = 0x7f00 if extra == 'cross' else data_at
                struct.pack_into('<QIHH', mem, desc_off + 16 * d, addr, data_len, flag | NEXT, d + 1)
                d += 1
            struct.pack_into('<QIHH', mem, desc_off + 16 * d, st_at, 1, WRITE, 0)
            d += 1
        struct.pack_into('<IIQ', mem, hdr_at, typ, 0, sector)
        if typ in (11, 13):
            struct.pack_into('<QII', mem, data_at, sector, 8, 0)
        hdr_at += 16
        st_at += 1
        heads.append(head)
        assert d <= num
    struct.pack_into('<HH', mem, avail_off, 0, (base + len(heads)) & 0xffff)
    for i, h in enumerate(heads):
        struct.pack_into('<H', mem, avail_off + 4 + 2 * ((base + i) % num), h)
    struct.pack_into('<HH', mem, used_off, 0, base)
    return struct.pack('<BBHHH', log2_num, flags, desc_off, avail_off, used_off) + bytes(mem)

write('virtio_blk', 'read-write-flush', ring([(0, 8, 4096, ''), (1, 16, 4096, ''), (4, 0, 0, '')], log2_num=4))
write('virtio_blk', 'get-id-discard', ring([(8, 0, 20, ''), (11, 0, 16, ''), (13, 0, 16, '')], log2_num=4))
write('virtio_blk', 'indirect', ring([(0, 0, 512, 'indirect'), (1, 8, 1024, 'indirect')], flags=0x09))
write('virtio_blk', 'crosses-regions', ring([(0, 0, 0x200, 'cross')], flags=0x11))
write('virtio_blk', 'out-of-range', ring([(1, (1 << 20) // 512, 512, '')], flags=0x21))
# descriptor table, avail and used rings all at gpa 0, used idx 7 ahead of the base: every completion
# (IOERR at once) moves the avail index too, so the driver never stops adding; serving must still return
write('virtio_blk', 'overlapping-rings', struct.pack('<BBHHH', 8, 0, 0, 0, 0) + bytes([0, 0xff, 7, 0, 0, 0]))
# a backend that completes some requests inline and takes two at a time (BUSY beyond: the deferred queue)
write('virtio_blk', 'busy-inline', ring([(0, 8, 4096, ''), (1, 16, 4096, ''), (4, 0, 0, ''), (0, 24, 512, '')],
                                         log2_num=4, flags=0xc1))

# ---- vhost_user: opcode + arguments ----
def add(gpa, size, uva, off):  # scaled(): low 2 bits 3 = the value itself (shifted)
    return bytes([0]) + struct.pack('<QQQQ', (gpa << 2) | 3, (size << 2) | 3, (uva << 2) | 3, (off << 2) | 3)
def rem(gpa, size):
    return bytes([1]) + struct.pack('<QQ', (gpa << 2) | 3, (size << 2) | 3)
def addr(desc, avail, used, l2):
    return bytes([2]) + struct.pack('<QQQB', (desc << 2) | 3, (avail << 2) | 3, (used << 2) | 3, l2)
def buf(gpa, length):
    return bytes([3]) + struct.pack('<QQ', (gpa << 2) | 3, (length << 2) | 3)
def inflight(l2, used_idx, region):
    return bytes([4]) + struct.pack('<BH', l2, used_idx) + region
def region(num, used_idx, last, flags):
    b = bytearray(16 + 16 * num)
    struct.pack_into('<QHHHH', b, 0, 0, 1, num, last, used_idx)
    for i, (infl, nxt, counter) in flags.items():
        struct.pack_into('<B5xHQ', b, 16 + 16 * i, infl, nxt, counter)
    return bytes(b)

write('vhost_user', 'two-regions-rings', add(0, 0x8000, 0x100000, 0) + add(0x8000, 0x8000, 0x200000, 0x8000) +
      addr(0x100000, 0x101000, 0x102000, 0x88) + buf(0x7f00, 0x200) + rem(0, 0x8000) + buf(0x7f00, 0x200))
write('vhost_user', 'overlap-and-wrap', add(0, 0x10000, 0, 0) + add(0x8000, 0x1000, 0x8000, 0) +
      add(0xfffffffffffff000 >> 2, 0x2000, 0, 0) + bytes([5]))
write('vhost_user', 'inflight-batch', inflight(0x83, 7, region(8, 5, 2, {2: (1, 4, 9), 4: (1, 8, 7), 6: (1, 0, 3)})))
write('vhost_user', 'inflight-fresh', inflight(0x84, 0, bytes(16 + 16 * 16)))
