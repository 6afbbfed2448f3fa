// Where SPDK's spdk_tgt and rpc.py are: built by scripts/setup-debian.sh from the vendored tarball into
// CACHE/spdk (SPDK_TGT and SPDK_RPC in the environment override, as build.sh prints them), and the
// flags every test and bench script starts spdk_tgt with (from the vendored README: no hugepages, so
// DPDK takes ordinary memory; no PCI scan).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CACHE } from './paths.js';

export const SPDK_DIR = join(CACHE, 'spdk', 'src');

/** spdk_tgt, or undefined when setup has not built it. */
export function findSpdkTgt(): string | undefined {
  const p = process.env.SPDK_TGT ?? join(SPDK_DIR, 'build', 'bin', 'spdk_tgt');
  return existsSync(p) ? p : undefined;
}

/** SPDK's scripts/rpc.py (needs only python3's standard library), or undefined. */
export function findSpdkRpc(): string | undefined {
  const p = process.env.SPDK_RPC ?? join(SPDK_DIR, 'scripts', 'rpc.py');
  return existsSync(p) ? p : undefined;
}

/** Both, or an error that says how to get them. */
export function requireSpdk(): { tgt: string; rpc: string } {
  const tgt = findSpdkTgt();
  const rpc = findSpdkRpc();
  if (!tgt || !rpc)
    throw new Error(
      `SPDK is not built (looked in ${SPDK_DIR}): run scripts/setup-debian.sh, or set SPDK_TGT and SPDK_RPC`,
    );
  return { tgt, rpc };
}

/**
 * The vendored README's memory flags: 2 GiB of ordinary memory instead of hugepages (the start-up
 * mempools take about 645 MiB; the rest holds malloc bdevs; pages are touched lazily), no PCI, and no
 * per-core lock files, so an instance of another user on the same core does not stop this one.
 */
export const SPDK_MEMORY_FLAGS = ['--no-huge', '-s', '2048', '--no-pci', '--disable-cpumask-locks'];
