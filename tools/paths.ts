// Locations every test needs. Tests run compiled from dist/test/**, so the repo root is found
// by walking up to the directory that holds package.json.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(start: string): string {
  let dir = start;
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${start}`);
    dir = up;
  }
  return dir;
}

export const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));
/** The stor CLI entry point, run as `node STOR_BIN ...`. */
export const STOR_BIN = join(ROOT, 'bin', 'run.js');
/** Cache of peer programs and VM images built by scripts/setup-debian.sh. */
export const CACHE = process.env.STOR_CACHE ?? join(ROOT, '.cache');
/** libblkio's example programs (blkio-info, blkio-copy, blkio-bench), built by the setup script. */
export const PEER_BIN = join(CACHE, 'peers', 'bin');
export const FIXTURES = join(ROOT, 'fixtures');
/**
 * The project's shared peers directory (vendored SPDK, the Ceph cluster scripts): STOR_SHARED, else
 * ../shared beside the repository, else the link scripts/setup-debian.sh leaves in the cache (a clone
 * elsewhere, e.g. CI's, finds it there).
 */
export const SHARED =
  process.env.STOR_SHARED ??
  (existsSync(join(ROOT, '..', 'shared')) ? join(ROOT, '..', 'shared') : join(CACHE, 'shared'));
