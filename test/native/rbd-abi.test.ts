// native/bdev/rbd_api.h declares the librados/librbd functions and structs the rbd backend loads with
// dlopen, instead of including Ceph's headers (the addon must build without them). Where the headers
// are installed (scripts/setup-debian.sh installs librbd-dev and librados-dev), this compiles a unit
// that includes both and checks that every declared prototype has the headers' type and every struct
// and constant the headers' layout and value: a wrong declaration fails here, not as memory corruption.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT } from '../helpers/paths.js';

const SAME_TYPE = [
  'rados_create',
  'rados_conf_read_file',
  'rados_conf_parse_env',
  'rados_conf_set',
  'rados_conf_get',
  'rados_connect',
  'rados_shutdown',
  'rados_ioctx_create',
  'rados_ioctx_destroy',
  'rados_ioctx_set_namespace',
  'rbd_create',
  'rbd_open',
  'rbd_open_read_only',
  'rbd_close',
  'rbd_get_features',
  'rbd_snap_set',
  'rbd_flush',
  'rbd_lock_release',
  'rbd_lock_get_owners_cleanup',
  'rbd_aio_create_completion',
  'rbd_aio_get_return_value',
  'rbd_aio_release',
  'rbd_aio_readv',
  'rbd_aio_writev',
  'rbd_aio_flush',
  'rbd_aio_discard',
  'rbd_aio_write_zeroes',
];

const UNIT = `#include <rbd/librbd.h>
#include <rados/librados.h>
#include <stddef.h>
#include "bdev/rbd_api.h"
#define LAYOUT(real, ours, f) _Static_assert(offsetof(real, f) == offsetof(ours, f), #real "." #f)
_Static_assert(sizeof(rbd_image_info_t) == sizeof(stor_rbd_image_info), "rbd_image_info_t size");
LAYOUT(rbd_image_info_t, stor_rbd_image_info, size);
LAYOUT(rbd_image_info_t, stor_rbd_image_info, obj_size);
LAYOUT(rbd_image_info_t, stor_rbd_image_info, order);
LAYOUT(rbd_image_info_t, stor_rbd_image_info, parent_name);
_Static_assert(sizeof(rbd_image_watcher_t) == sizeof(stor_rbd_image_watcher), "rbd_image_watcher_t size");
LAYOUT(rbd_image_watcher_t, stor_rbd_image_watcher, addr);
_Static_assert(sizeof(rbd_lock_mode_t) == sizeof(int), "rbd_lock_mode_t is an int");
_Static_assert(RBD_LOCK_MODE_EXCLUSIVE == STOR_RBD_LOCK_MODE_EXCLUSIVE, "RBD_LOCK_MODE_EXCLUSIVE");
_Static_assert(RBD_FEATURE_EXCLUSIVE_LOCK == STOR_RBD_FEATURE_EXCLUSIVE_LOCK, "RBD_FEATURE_EXCLUSIVE_LOCK");
#define SAME(f) _Static_assert(__builtin_types_compatible_p(__typeof__(&f), __typeof__(((struct stor_rbd_api *)0)->f)), #f)
${SAME_TYPE.map((f) => `SAME(${f});`).join('\n')}
`;

const haveHeaders = existsSync('/usr/include/rbd/librbd.h') && existsSync('/usr/include/rados/librados.h');

test("rbd_api.h agrees with Ceph's librbd.h and librados.h (types, layouts, constants)", () => {
  if (!haveHeaders) {
    console.log('  (skipped: librbd-dev/librados-dev not installed; scripts/setup-debian.sh installs them)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'stor-rbd-abi-'));
  try {
    writeFileSync(join(dir, 'abi.c'), UNIT);
    try {
      execFileSync('cc', ['-std=gnu11', '-fsyntax-only', '-I', join(ROOT, 'native'), join(dir, 'abi.c')], {
        stdio: 'pipe',
        timeout: 60_000,
      });
    } catch (e) {
      assert.unreachable(`rbd_api.h disagrees with Ceph's headers:\n${String((e as { stderr?: Buffer }).stderr)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
