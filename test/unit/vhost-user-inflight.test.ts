// The session's half of inflight tracking (INFLIGHT_SHMFD): GET_INFLIGHT_FD and SET_INFLIGHT_FD are
// served only once the protocol feature is negotiated; GET replies with the buffer's size and offset
// in QEMU's 24-byte layout and sends the device's fd with the reply (not closing it: the device keeps
// it); SET hands the front-end's fd to the device; bad requests drop the front-end and give the fd back.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VhostUserSession, type SessionDevice } from '../../src/lib/export/vhost-user/session.js';
import {
  F_PROTOCOL_FEATURES,
  HEADER_SIZE,
  ProtocolFeature,
  Req,
  VERSION,
  decodeHeader,
  decodeInflight,
  encodeInflight,
  encodeU64,
} from '../../src/lib/proto/vhost-user.js';
import { bit } from '../../src/lib/proto/virtio-blk.js';

function make(protocol: bigint) {
  const calls: string[] = [];
  const noop = () => {};
  const device: SessionDevice = {
    reset: noop,
    setFeatures: noop,
    setMemTable: noop,
    addMemRegion: noop,
    removeMemRegion: () => true,
    setVring: noop,
    setVringFd: noop,
    startQueue: noop,
    stopQueue: () => 0,
    getInflight: (nq, qs) => {
      calls.push(`get ${nq} ${qs}`);
      return { fd: 77, mmapSize: 4096 * nq, mmapOffset: 0 };
    },
    setInflight: (b) => calls.push(`set fd ${b.fd} ${b.mmapSize}@${b.mmapOffset} ${b.numQueues}x${b.queueSize}`),
  };
  const s = new VhostUserSession(
    {
      queues: 2,
      queueSize: 256,
      features: bit(F_PROTOCOL_FEATURES),
      protocolFeatures: protocol,
      configSpace: Buffer.alloc(60),
      maxMemSlots: 8,
    },
    device,
  );
  const send = (request: number, payload: Buffer, fds: number[] = []) =>
    s.handle({ header: { request, flags: VERSION, size: payload.length }, payload, fds });
  return { s, calls, send };
}

const desc = (numQueues: number, queueSize: number) =>
  encodeInflight({ mmapSize: 0, mmapOffset: 0, numQueues, queueSize });

test('GET_INFLIGHT_FD: the device makes the buffer, the reply carries its size and its fd', () => {
  const { calls, send } = make(bit(ProtocolFeature.INFLIGHT_SHMFD));
  assert.is(send(Req.SET_PROTOCOL_FEATURES, encodeU64(bit(ProtocolFeature.INFLIGHT_SHMFD))).drop, undefined);
  const out = send(Req.GET_INFLIGHT_FD, desc(2, 128));
  assert.is(out.drop, undefined);
  assert.equal(calls, ['get 2 128']);
  assert.is(out.replies.length, 1);
  const h = decodeHeader(out.replies[0]!);
  assert.is(h.request, Req.GET_INFLIGHT_FD);
  assert.is(h.size, 24, "QEMU insists on its struct's 24 bytes");
  assert.equal(decodeInflight('reply', out.replies[0]!.subarray(HEADER_SIZE)), {
    mmapSize: 8192,
    mmapOffset: 0,
    numQueues: 2,
    queueSize: 128,
  });
  assert.equal(out.replyFds, [77]);
  assert.equal(out.closeFds, [], "the device's fd is sent, not closed");
});

test('SET_INFLIGHT_FD hands the fd to the device', () => {
  const { calls, send } = make(bit(ProtocolFeature.INFLIGHT_SHMFD));
  send(Req.SET_PROTOCOL_FEATURES, encodeU64(bit(ProtocolFeature.INFLIGHT_SHMFD)));
  const out = send(
    Req.SET_INFLIGHT_FD,
    encodeInflight({ mmapSize: 8192, mmapOffset: 0, numQueues: 1, queueSize: 256 }),
    [41],
  );
  assert.is(out.drop, undefined);
  assert.equal(calls, ['set fd 41 8192@0 1x256']);
  assert.equal(out.closeFds, []);
});

test('without the protocol feature, or for more queues than the device has, the front-end is dropped and fds given back', () => {
  const off = make(bit(ProtocolFeature.REPLY_ACK));
  const g = off.send(Req.GET_INFLIGHT_FD, desc(1, 128));
  assert.match(g.drop ?? '', /without the INFLIGHT_SHMFD protocol feature/);
  const s = off.send(Req.SET_INFLIGHT_FD, desc(1, 128), [9]);
  assert.match(s.drop ?? '', /without the INFLIGHT_SHMFD/);
  assert.equal(s.closeFds, [9]);
  assert.equal(off.calls, []);
  const on = make(bit(ProtocolFeature.INFLIGHT_SHMFD));
  on.send(Req.SET_PROTOCOL_FEATURES, encodeU64(bit(ProtocolFeature.INFLIGHT_SHMFD)));
  const many = on.send(Req.SET_INFLIGHT_FD, desc(3, 128), [10]);
  assert.match(many.drop ?? '', /3 queues; the device has 2/);
  assert.equal(many.closeFds, [10]);
  assert.match(on.send(Req.GET_INFLIGHT_FD, Buffer.alloc(8)).drop ?? '', /payload is 8 bytes/);
});

test.run();
