// The device table (src/lib/export/table.ts) in-process: named backends and exports, a client
// served through an export, JSON that lists both, a backend in use that cannot be removed, bad
// names and specs refused, and closeAll() stopping everything and removing the socket.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceTable } from '../../src/lib/export/table.js';
import { runBounded } from '../helpers/run.js';
import { STOR_BIN } from '../helpers/paths.js';
import { StorError } from '../../src/lib/core/errors.js';

const t = suite('device table');
const dir = mkdtempSync(join(tmpdir(), 'stor-table-'));
t.after(() => rmSync(dir, { recursive: true, force: true }));

const exportOpts = (socket: string) => ({ socket, queues: 2, queueSize: 256, blockSize: 512 as const, readonly: false, serial: 'tbl', mode: 'notify' as const });

t('a backend and a vhost-user-blk export serve a client; toJSON lists both; closeAll stops them', async () => {
  const logs: string[] = [];
  const table = new DeviceTable((level, m) => logs.push(`${level} ${m}`));
  const socket = join(dir, 'a.sock');
  const b = table.addBackend('ram', 'mem:4M');
  assert.is(b.spec, 'mem:4194304');
  assert.is(b.info.capacity, 4 << 20);
  table.addVhostUserBlkExport('vu', 'ram', exportOpts(socket));
  assert.ok(existsSync(socket), 'listening when addVhostUserBlkExport returns');
  // the client runs in another process: its control-plane handshake blocks, and the export's runs on this event loop
  const w = await runBounded(process.execPath, [STOR_BIN, 'write', `vhost-user:${socket}`, '--offset', '8192', '--pattern', '0x3c', '--length', '4096'], 20_000);
  assert.is(w.code, 0, w.stderr);
  const out = join(dir, 'back.bin');
  const r = await runBounded(process.execPath, [STOR_BIN, 'read', `vhost-user:${socket}`, '--offset', '8192', '--length', '4096', '--output', out], 20_000);
  assert.is(r.code, 0, r.stderr);
  assert.ok(readFileSync(out).equals(Buffer.alloc(4096, 0x3c)), 'read back what was written through the export');
  const json = JSON.parse(JSON.stringify(table));
  assert.equal(json.backends, [{ name: 'ram', spec: 'mem:4194304', driver: 'mem', capacity: 4 << 20, readonly: false }]);
  assert.is(json.exports.length, 1);
  assert.equal({ ...json.exports[0], connections: undefined },
    { name: 'vu', type: 'vhost-user-blk', backend: 'ram', socket, queues: 2, queueSize: 256, blockSize: 512, readonly: false, serial: 'tbl', mode: 'notify', connections: undefined });
  assert.is(json.exports[0].connections, 2, 'two front-ends served, one after the other');
  assert.ok(table.stats('vu').reduce((a, q) => a + q.writes, 0) >= 1, 'the export counted the write');
  assert.throws(() => table.removeBackend('ram'), (e: Error) => e instanceof StorError && /in use by export vu/.test(e.message));
  await table.closeAll();
  assert.not.ok(existsSync(socket), 'socket removed');
  assert.equal(table.toJSON(), { backends: [], exports: [] });
});

t('names are unique and well-formed; specs are parsed by the one spec parser', () => {
  const table = new DeviceTable();
  table.addBackend('n0', { driver: 'null', props: { size: '1M' } });
  assert.throws(() => table.addBackend('n0', 'null:1M'), /exists already/);
  assert.throws(() => table.addBackend('bad name', 'null:1M'), /not a name/);
  assert.throws(() => table.addBackend('x', 'disk:1G', { what: '--backend' }), /--backend: 'disk:1G' is not a backend/);
  assert.throws(() => table.addBackend('y', 'vhost-user:/x.sock'), /not a backend/);
  assert.throws(() => table.addVhostUserBlkExport('e', 'nope', exportOpts(join(dir, 'b.sock'))), /no backend named nope/);
  table.addBackend('odd', 'null:1536');
  assert.throws(() => table.addVhostUserBlkExport('e', 'odd', { ...exportOpts(join(dir, 'b.sock')), blockSize: 4096 }), /capacity 1536 is not a multiple of 4096/);
  assert.not.ok(existsSync(join(dir, 'b.sock')), 'no socket for a refused export');
  table.removeBackend('n0');
  table.removeBackend('odd');
  assert.equal(table.listBackends(), []);
});

t.run();
