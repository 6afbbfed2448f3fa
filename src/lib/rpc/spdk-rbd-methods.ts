// SPDK's rbd bdev methods for `stor daemon`, on stor's rbd: backend (native/bdev/rbd.c):
// bdev_rbd_register_cluster / _unregister_cluster / _get_clusters_info, bdev_rbd_create and
// bdev_rbd_delete, with SPDK 26.05's parameters, results and error codes (module/bdev/rbd/bdev_rbd_rpc.c).
// SPDK reports most rbd failures as -1 (EPERM, "Operation not permitted"): so does stor, with the
// reason after the text. A bdev made on a registered cluster opens rbd:POOL/IMAGE with the cluster's
// conf=, id= and keyring=, so every bdev of one cluster shares one librados connection (the native
// side shares one per (conf, id, keyring)); a bdev made with its own user_id/config gets its own, as
// in SPDK. A `config`/`config_param` map (rados_conf_set pairs in SPDK) becomes a private ceph.conf
// that stor writes (mode 0600, removed with its cluster or bdev and at exit): the pairs in a
// [client.ID] section, which wins over the same keys elsewhere in the file, after the config_file's
// (or, for a cluster without config_file, librados' default file's) own text.
// Differences from SPDK, said here and in the README: register_cluster checks its files but does not
// connect (the connection is made by the first bdev_rbd_create, which reports an unreachable
// cluster); core_mask is recorded, not applied; bdev_rbd_resize is not offered (the table has no
// resize); save_config writes cluster_name into bdev_rbd_create (SPDK's leaves it out, so its own
// configuration cannot bring a cluster bdev back).
import { randomUUID } from 'node:crypto';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../core/spec.js';
import type { SpdkConfigCall } from './spdk-client.js';
import {
  DECODE_FAILED,
  decode,
  E,
  errnoError,
  type BdevRecord,
  type Field,
  type SpdkBdevHost,
  type SpdkBdevModule,
} from './spdk-methods.js';

const CREATE = 'bdev_rbd_create';

interface Cluster {
  name: string;
  userId?: string;
  configParam?: Record<string, string>;
  configFile?: string;
  keyFile?: string;
  coreMask?: string;
  /** the ceph.conf its bdevs open with: config_file, a generated one, or none (librados' search) */
  conf?: string;
  generated: boolean;
  /** bdevs made on it */
  users: Set<string>;
}

interface RbdBdev {
  pool: string;
  image: string;
  userId?: string;
  config?: Record<string, string>;
  cluster?: string;
  readonly: boolean;
  generatedConf?: string;
}

const REGISTER_FIELDS: Record<string, Field> = {
  name: { kind: 'string', required: true },
  user_id: { kind: 'string' },
  config_param: { kind: 'strmap' },
  config_file: { kind: 'string' },
  key_file: { kind: 'string' },
  core_mask: { kind: 'string' },
};
const CREATE_FIELDS: Record<string, Field> = {
  name: { kind: 'string' },
  user_id: { kind: 'string' },
  pool_name: { kind: 'string', required: true },
  rbd_name: { kind: 'string', required: true },
  block_size: { kind: 'uint', required: true },
  config: { kind: 'strmap' },
  cluster_name: { kind: 'string' },
  uuid: { kind: 'uuid' },
  read_only: { kind: 'boolean' },
};
const NAME_ONLY: Record<string, Field> = { name: { kind: 'string', required: true } };

/** SPDK's -1 for a failed rbd call, with stor's reason after the text. */
const failed = (why: string): ReturnType<typeof errnoError> => errnoError(E.EPERM, why);

/** Where generated ceph.conf files go: one private directory per process, removed at exit. */
let confDir: string | undefined;
function writeConf(name: string, text: string): string {
  if (!confDir) {
    const dir = mkdtempSync(join(tmpdir(), 'stor-rbd-conf-'));
    confDir = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  const path = join(confDir, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-${randomUUID().slice(0, 8)}.conf`);
  // it may hold a key: only this user reads it
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

/** The [client.ID] section holding a rados_conf_set map; undefined and the reason when a pair cannot be one. */
function confSection(map: Record<string, string>, userId: string | undefined): { text?: string; bad?: string } {
  const lines = [`[client.${userId ?? 'admin'}]`];
  for (const [k, v] of Object.entries(map)) {
    if (!/^[A-Za-z0-9_ .-]+$/.test(k)) return { bad: `config key '${k}' is not a Ceph option name` };
    if (/[\r\n]/.test(v)) return { bad: `config value of '${k}' has a line break` };
    lines.push(`${k} = ${v}`);
  }
  return { text: lines.join('\n') + '\n' };
}

/** librados' default ceph.conf ($CEPH_CONF, then /etc/ceph/ceph.conf), read for a cluster with only config_param. */
function defaultConfText(): string {
  for (const p of [process.env.CEPH_CONF, '/etc/ceph/ceph.conf'])
    if (p && existsSync(p))
      try {
        return readFileSync(p, 'utf8');
      } catch {
        /* an unreadable default is skipped, as librados does */
      }
  return '';
}

function checkReadable(what: string, path: string): void {
  try {
    accessSync(path, constants.R_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw failed(`${what} ${path}: ${code === 'ENOENT' ? 'No such file or directory' : code}`);
  }
}

function checkUserId(userId: unknown): void {
  if (userId !== undefined && (userId === '' || String(userId).startsWith('client.')))
    throw failed(`user_id '${String(userId)}': the Ceph user without 'client.' (e.g. admin)`);
}

export function rbdBdevModule(host: SpdkBdevHost): SpdkBdevModule {
  const clusters = new Map<string, Cluster>();
  const rbdBdevs = new Map<string, RbdBdev>();
  // SPDK names an unnamed bdev Ceph<N>, N counting the bdevs made
  let count = 0;

  const clusterJson = (c: Cluster): Record<string, unknown> => ({
    ...(c.userId !== undefined ? { user_id: c.userId } : {}),
    ...(c.configParam ? { config_param: c.configParam } : {}),
    ...(c.configFile !== undefined ? { config_file: c.configFile } : {}),
    ...(c.keyFile !== undefined ? { key_file: c.keyFile } : {}),
  });

  const registerCluster = (p: unknown): string => {
    const q = decode(p, REGISTER_FIELDS, DECODE_FAILED);
    const name = q.name as string;
    if (clusters.has(name)) throw failed(`cluster ${name} exists already`);
    checkUserId(q.user_id);
    const configFile = q.config_file as string | undefined;
    const keyFile = q.key_file as string | undefined;
    if (configFile !== undefined) checkReadable('config_file', configFile);
    if (keyFile !== undefined) checkReadable('key_file', keyFile);
    const coreMask = q.core_mask as string | undefined;
    if (coreMask !== undefined && !/^(0x)?[0-9a-f]+$|^\[[0-9,\s-]+\]$/i.test(coreMask))
      throw failed(`core_mask '${coreMask}': a hex mask (0x3) or a core list ([0-1])`);
    const configParam = (q.config_param as Record<string, string> | null | undefined) ?? undefined;
    const userId = q.user_id as string | undefined;
    let conf = configFile;
    let generated = false;
    if (configParam && Object.keys(configParam).length) {
      const sec = confSection(configParam, userId);
      if (!sec.text) throw failed(sec.bad!);
      const base = configFile !== undefined ? readFileSync(configFile, 'utf8') : defaultConfText();
      conf = writeConf(`cluster-${name}`, `${base}\n${sec.text}`);
      generated = true;
    }
    clusters.set(name, {
      name,
      userId,
      configParam: configParam ?? undefined,
      configFile,
      keyFile,
      coreMask,
      conf,
      generated,
      users: new Set(),
    });
    if (coreMask !== undefined)
      host.log('info', `bdev_rbd_register_cluster: ${name}: core_mask ${coreMask} not applied`);
    host.log('info', `bdev_rbd_register_cluster: ${name}${conf ? ` (conf ${conf})` : ''}`);
    host.changed();
    return name;
  };

  const unregisterCluster = (p: unknown): boolean => {
    const q = decode(p, NAME_ONLY, DECODE_FAILED);
    const c = clusters.get(q.name as string);
    if (!c) throw failed(`no cluster ${q.name as string}`);
    if (c.users.size) throw failed(`cluster ${c.name} is used by bdev ${[...c.users].join(', ')}`);
    if (c.generated && c.conf) rmSync(c.conf, { force: true });
    clusters.delete(c.name);
    host.log('info', `bdev_rbd_unregister_cluster: ${c.name}`);
    host.changed();
    return true;
  };

  const getClustersInfo = (p: unknown): unknown => {
    const q = p === undefined ? {} : decode(p, { name: { kind: 'string' } }, DECODE_FAILED);
    const one = (c: Cluster): Record<string, unknown> => ({
      cluster_name: c.name,
      ...clusterJson(c),
      ...(c.coreMask !== undefined ? { core_mask: c.coreMask } : {}),
    });
    if (!clusters.size) throw errnoError(E.ENOENT);
    if (q.name !== undefined) {
      const c = clusters.get(q.name as string);
      if (!c) throw errnoError(E.ENOENT);
      return one(c);
    }
    return [...clusters.values()].map(one);
  };

  const create = (p: unknown): string => {
    const q = decode(p, CREATE_FIELDS, DECODE_FAILED);
    const blockSize = q.block_size as number;
    if (blockSize === 0) throw errnoError(E.EINVAL);
    if (blockSize !== 512 && blockSize !== 4096)
      throw errnoError(E.EINVAL, `block_size ${blockSize}: stor serves 512 or 4096`);
    const pool = q.pool_name as string;
    const image = q.rbd_name as string;
    for (const [what, v] of [
      ['pool_name', pool],
      ['rbd_name', image],
    ])
      if (!v || /[/@,]/.test(v)) throw failed(`${what} '${v}': a name without '/', '@' or ','`);
    const name = (q.name as string | undefined) ?? `Ceph${count}`;
    if (host.bdev(name)) throw errnoError(E.EEXIST);
    const readonly = Boolean(q.read_only);
    const props: Record<string, string> = { image: `${pool}/${image}` };
    const b: RbdBdev = { pool, image, readonly };
    const clusterName = q.cluster_name as string | undefined;
    if (clusterName !== undefined) {
      // SPDK ignores user_id and config when a cluster is named
      const c = clusters.get(clusterName);
      if (!c) throw failed(`no cluster ${clusterName} (bdev_rbd_register_cluster makes one)`);
      if (c.conf) props.conf = c.conf;
      if (c.userId !== undefined) props.id = c.userId;
      if (c.keyFile !== undefined) props.keyring = c.keyFile;
      b.cluster = clusterName;
    } else {
      checkUserId(q.user_id);
      b.userId = q.user_id as string | undefined;
      if (b.userId !== undefined) props.id = b.userId;
      const config = q.config as Record<string, string> | null | undefined;
      if (config) {
        // SPDK: with a config map, no ceph.conf is read, only the pairs are set
        b.config = config;
        const sec = confSection(config, b.userId);
        if (!sec.text) throw failed(sec.bad!);
        b.generatedConf = writeConf(`bdev-${name}`, sec.text);
        props.conf = b.generatedConf;
      }
    }
    if (readonly) props.readonly = 'on';
    const spec: Spec = { driver: 'rbd', props };
    let record: BdevRecord;
    try {
      record = host.addBdev(
        {
          name,
          method: CREATE,
          blockSize,
          uuid: (q.uuid as string | undefined) ?? randomUUID(),
          ...(readonly ? { readonly: true } : {}),
          module: {
            productName: 'Ceph Rbd Disk',
            driverSpecific: () => ({ rbd: driverSpecific(b) }),
            configParams: () => configParams(record, b),
          },
        },
        spec,
      );
    } catch (e) {
      if (b.generatedConf) rmSync(b.generatedConf, { force: true });
      // SPDK's open failures are all -1; stor's reason (pool or image missing, auth, lock) follows
      const err = e as { code?: number; message?: string };
      if (err.code !== undefined && err.code !== -E.EEXIST && err.code !== -E.EINVAL)
        throw failed(String(err.message).replace(/^[^:]*: /, ''));
      throw e;
    }
    count++;
    rbdBdevs.set(name, b);
    if (b.cluster) clusters.get(b.cluster)!.users.add(name);
    host.changed();
    return name;
  };

  const driverSpecific = (b: RbdBdev): Record<string, unknown> => {
    const c = b.cluster ? clusters.get(b.cluster) : undefined;
    return {
      pool_name: b.pool,
      rbd_name: b.image,
      ...(c
        ? clusterJson(c)
        : { ...(b.userId !== undefined ? { user_id: b.userId } : {}), ...(b.config ? { config: b.config } : {}) }),
    };
  };

  const configParams = (r: BdevRecord, b: RbdBdev): Record<string, unknown> => ({
    name: r.name,
    pool_name: b.pool,
    rbd_name: b.image,
    block_size: r.blockSize,
    ...(b.userId !== undefined ? { user_id: b.userId } : {}),
    ...(b.config ? { config: b.config } : {}),
    uuid: r.uuid,
    // SPDK's save_config leaves these two out: without cluster_name a cluster's bdev comes back on
    // a connection of its own, made from the default ceph.conf
    ...(b.cluster !== undefined ? { cluster_name: b.cluster } : {}),
    ...(b.readonly ? { read_only: true } : {}),
  });

  const remove = (p: unknown): boolean => {
    const q = decode(p, NAME_ONLY, DECODE_FAILED);
    const name = q.name as string;
    host.removeBdev(name, CREATE);
    const b = rbdBdevs.get(name);
    rbdBdevs.delete(name);
    if (b?.cluster) clusters.get(b.cluster)?.users.delete(name);
    if (b?.generatedConf) rmSync(b.generatedConf, { force: true });
    host.changed();
    return true;
  };

  const configPrelude = (): SpdkConfigCall[] =>
    [...clusters.values()].map((c) => ({
      method: 'bdev_rbd_register_cluster',
      params: { name: c.name, ...clusterJson(c), ...(c.coreMask !== undefined ? { core_mask: c.coreMask } : {}) },
    }));

  return {
    methods: [
      ['bdev_rbd_register_cluster', registerCluster],
      ['bdev_rbd_unregister_cluster', unregisterCluster],
      ['bdev_rbd_get_clusters_info', getClustersInfo],
      [CREATE, create],
      ['bdev_rbd_delete', remove],
    ],
    configPrelude,
  };
}
