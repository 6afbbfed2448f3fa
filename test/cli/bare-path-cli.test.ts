// A path is a path (#16): `stor info disk.img` and `stor info sub/dir/disk.img` open the file
// like `./disk.img` does; an unknown scheme (`foo:bar`) is still one usage line and exit 2.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STOR_BIN } from '../helpers/paths.js';

const cli = suite('bare relative paths as targets');
const dir = mkdtempSync(join(tmpdir(), 'stor-bare-'));
cli.after(() => rmSync(dir, { recursive: true, force: true }));

function stor(args: string[]) {
  return spawnSync(process.execPath, [STOR_BIN, ...args], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, NO_COLOR: '1' },
  });
}

cli('stor info disk.img and sub/dir/disk.img (relative, no ./) open the file', () => {
  writeFileSync(join(dir, 'disk.img'), '');
  truncateSync(join(dir, 'disk.img'), 1 << 20);
  mkdirSync(join(dir, 'sub', 'dir'), { recursive: true });
  writeFileSync(join(dir, 'sub', 'dir', 'disk.img'), '');
  truncateSync(join(dir, 'sub', 'dir', 'disk.img'), 2 << 20);
  for (const [target, capacity] of [
    ['disk.img', 1 << 20],
    ['sub/dir/disk.img', 2 << 20],
  ] as const) {
    const r = stor(['info', target, '--json']);
    assert.is(r.status, 0, `${target}: exit ${r.status}, stderr: ${r.stderr}`);
    const props = JSON.parse(r.stdout);
    assert.is(props.capacity, capacity, target);
    assert.is(props.driver, 'io_uring', target);
  }
});

cli('an unknown scheme is refused: one line, exit 2, the accepted forms', () => {
  const r = stor(['info', 'foo:bar']);
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /^stor: target: 'foo:bar' is not a target\n {2}accepted: vhost-user:SOCKET/);
});

cli.run();
