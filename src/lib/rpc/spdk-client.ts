// A typed client for the SPDK JSON-RPC methods storage scripts use most — bdevs, vhost-blk controllers,
// ublk disks, the version and method list, and save_config — over JsonRpcClient. It talks to spdk_tgt
// and to `stor daemon` alike (the daemon serves the same names, parameters and result shapes).
// Parameter names are SPDK's own (snake_case), so a call reads like the rpc.py line it replaces;
// anything not typed here goes through call().
import { JsonRpcClient, type JsonRpcClientOptions, type RpcParams } from './jsonrpc.js';

/** SPDK's default RPC socket (spdk_tgt -r, rpc.py -s). */
export const SPDK_DEFAULT_SOCKET = '/var/tmp/spdk.sock';

export interface SpdkVersion {
  version: string;
  fields: { major: number; minor: number; patch: number; suffix: string; commit?: string };
}

export interface SpdkBdev {
  name: string;
  aliases: string[];
  product_name: string;
  block_size: number;
  num_blocks: number;
  uuid?: string;
  claimed: boolean;
  zoned: boolean;
  supported_io_types: Record<string, boolean>;
  driver_specific: Record<string, unknown>;
  [key: string]: unknown;
}

export interface SpdkVhostController {
  ctrlr: string;
  cpumask: string;
  delay_base_us: number;
  iops_threshold: number;
  socket: string;
  sessions?: unknown[];
  backend_specific: { block?: { readonly: boolean; bdev: string; transport?: string } } & Record<string, unknown>;
  [key: string]: unknown;
}

/** One `{method, params}` entry of a saved configuration. */
export interface SpdkConfigCall {
  method: string;
  params?: Record<string, unknown>;
}

/** What `save_config` writes and `load_config` (and `stor daemon --config`) reads. */
export interface SpdkConfig {
  subsystems: Array<{ subsystem: string; config: SpdkConfigCall[] | null }>;
}

export interface BdevMallocCreate {
  name?: string;
  num_blocks: number;
  block_size: number;
  uuid?: string;
}
export interface BdevNullCreate {
  name: string;
  num_blocks: number;
  block_size: number;
  uuid?: string;
}
export interface BdevFileCreate {
  name: string;
  filename: string;
  block_size?: number;
  readonly?: boolean;
  uuid?: string;
}
export interface VhostCreateBlkController {
  ctrlr: string;
  dev_name: string;
  readonly?: boolean;
  cpumask?: string;
  packed_ring?: boolean;
}
export interface UblkStartDisk {
  bdev_name: string;
  ublk_id: number;
  num_queues?: number;
  queue_depth?: number;
}

export class SpdkClient {
  private constructor(readonly rpc: JsonRpcClient) {}

  static async connect(socketPath = SPDK_DEFAULT_SOCKET, o: JsonRpcClientOptions = {}): Promise<SpdkClient> {
    return new SpdkClient(await JsonRpcClient.connect(socketPath, o));
  }

  /** Any method, by name. */
  call<T = unknown>(method: string, params?: RpcParams, o: { timeoutMs?: number } = {}): Promise<T> {
    return this.rpc.call<T>(method, params, o);
  }

  close(): void {
    this.rpc.close();
  }

  spdkGetVersion(): Promise<SpdkVersion> {
    return this.call('spdk_get_version');
  }
  rpcGetMethods(p: { current?: boolean; include_aliases?: boolean } = {}): Promise<string[]> {
    return this.call('rpc_get_methods', p);
  }

  bdevGetBdevs(p: { name?: string; timeout?: number } = {}): Promise<SpdkBdev[]> {
    return this.call('bdev_get_bdevs', Object.keys(p).length ? p : undefined);
  }
  bdevMallocCreate(p: BdevMallocCreate): Promise<string> {
    return this.call('bdev_malloc_create', { ...p });
  }
  bdevMallocDelete(name: string): Promise<boolean> {
    return this.call('bdev_malloc_delete', { name });
  }
  bdevNullCreate(p: BdevNullCreate): Promise<string> {
    return this.call('bdev_null_create', { ...p });
  }
  bdevNullDelete(name: string): Promise<boolean> {
    return this.call('bdev_null_delete', { name });
  }
  bdevAioCreate(p: BdevFileCreate): Promise<string> {
    return this.call('bdev_aio_create', { ...p });
  }
  bdevAioDelete(name: string): Promise<boolean> {
    return this.call('bdev_aio_delete', { name });
  }

  vhostCreateBlkController(p: VhostCreateBlkController): Promise<boolean> {
    return this.call('vhost_create_blk_controller', { ...p });
  }
  vhostGetControllers(name?: string): Promise<SpdkVhostController[]> {
    return this.call('vhost_get_controllers', name === undefined ? undefined : { name });
  }
  vhostDeleteController(ctrlr: string): Promise<boolean> {
    return this.call('vhost_delete_controller', { ctrlr });
  }

  ublkCreateTarget(p: { cpumask?: string } = {}): Promise<boolean> {
    return this.call('ublk_create_target', Object.keys(p).length ? p : undefined);
  }
  ublkDestroyTarget(): Promise<boolean> {
    return this.call('ublk_destroy_target');
  }
  ublkStartDisk(p: UblkStartDisk): Promise<number> {
    return this.call('ublk_start_disk', { ...p });
  }
  ublkStopDisk(ublkId: number): Promise<boolean> {
    return this.call('ublk_stop_disk', { ublk_id: ublkId });
  }
  ublkGetDisks(ublkId?: number): Promise<Array<Record<string, unknown>>> {
    return this.call('ublk_get_disks', ublkId === undefined ? undefined : { ublk_id: ublkId });
  }
  ublkRecoverDisk(p: { bdev_name: string; ublk_id: number }): Promise<number> {
    return this.call('ublk_recover_disk', { ...p });
  }
  /** stor daemon's own (SPDK has no VDUSE target): a bdev as a VDUSE virtio-blk disk; the result is the name. */
  vduseCreateBlkDevice(p: {
    name: string;
    bdev_name: string;
    num_queues?: number;
    queue_size?: number;
    readonly?: boolean;
    serial?: string;
  }): Promise<string> {
    return this.call('vduse_create_blk_device', { ...p });
  }
  vduseDeleteBlkDevice(name: string): Promise<boolean> {
    return this.call('vduse_delete_blk_device', { name });
  }
  vduseGetDevices(name?: string): Promise<Array<Record<string, unknown>>> {
    return this.call('vduse_get_devices', name === undefined ? undefined : { name });
  }

  /**
   * The live configuration, as rpc.py's save_config builds it: every subsystem from
   * framework_get_subsystems with its framework_get_config calls.
   */
  async saveConfig(): Promise<SpdkConfig> {
    const subsystems = await this.call<Array<{ subsystem: string }>>('framework_get_subsystems');
    const config: SpdkConfig = { subsystems: [] };
    for (const s of subsystems)
      config.subsystems.push({
        subsystem: s.subsystem,
        config: await this.call<SpdkConfigCall[] | null>('framework_get_config', { name: s.subsystem }),
      });
    return config;
  }
}
