// `stor rpc`: one JSON-RPC call to spdk_tgt or `stor daemon`, the way rpc.py makes one, for scripts and
// CI. Parameters come as NAME=VALUE words (a VALUE that parses as JSON is sent as that JSON value,
// anything else as a string) and/or one --params document; the result is printed as JSON (indented on a
// terminal, one line otherwise). save_config and load_config are built from other calls on the client
// side, as rpc.py does, so they work against both servers.
import { Args, Flags } from '@oclif/core';
import { readFileSync } from 'node:fs';
import { StorCommand } from '../cli/command.js';
import { parseTimeout } from '../cli/client-flags.js';
import { StorError, usageError } from '../lib/core/errors.js';
import { Deadline, JsonRpcError, RpcTransportError, type RpcParams } from '../lib/rpc/jsonrpc.js';
import { SPDK_DEFAULT_SOCKET, SpdkClient, type SpdkConfig } from '../lib/rpc/spdk-client.js';

const METHOD = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** NAME=VALUE → [name, value]; VALUE is JSON when it parses as JSON, a string otherwise. */
export function parseParamWord(word: string): [string, unknown] {
  const eq = word.indexOf('=');
  const name = eq < 0 ? word : word.slice(0, eq);
  if (eq < 0 || !PARAM_NAME.test(name))
    throw usageError(
      `parameter '${word}'`,
      eq < 0 ? 'not NAME=VALUE' : `'${name}' is not a parameter name`,
      'NAME=VALUE, e.g. name=Malloc0 num_blocks=8192 readonly=true (values that parse as JSON are sent as JSON)',
    );
  const text = word.slice(eq + 1);
  try {
    return [name, JSON.parse(text)];
  } catch {
    return [name, text];
  }
}

export default class Rpc extends StorCommand {
  static override summary = 'Call a JSON-RPC method of spdk_tgt or stor daemon';
  static override description = `Sends one request (SPDK's JSON-RPC dialect) to the server's Unix socket and prints the result as JSON.
Parameters: NAME=VALUE words (VALUE is sent as JSON when it parses as JSON: numbers, true/false, null, objects, arrays; otherwise as a string), or --params with a JSON object or array (NAME=VALUE words are merged into an object).
save_config prints the live configuration (framework_get_subsystems + framework_get_config, as rpc.py builds it); load_config replays one (--params or --params @FILE).
A JSON-RPC error exits 1 with the server's message and code.`;
  static override examples = [
    '<%= config.bin %> rpc spdk_get_version',
    '<%= config.bin %> rpc -s /var/tmp/spdk.sock bdev_malloc_create name=Malloc0 num_blocks=32768 block_size=512',
    '<%= config.bin %> rpc vhost_create_blk_controller ctrlr=vhost.0 dev_name=Malloc0',
    `<%= config.bin %> rpc bdev_get_bdevs --params '{"name":"Malloc0"}'`,
    '<%= config.bin %> rpc save_config > config.json',
  ];
  static override strict = false;
  static override args = {
    method: Args.string({
      description: 'the method, e.g. bdev_get_bdevs (rpc_get_methods lists them)',
      required: true,
    }),
  };
  static override flags = {
    socket: Flags.string({ char: 's', description: 'the server’s RPC socket', default: SPDK_DEFAULT_SOCKET }),
    params: Flags.string({ description: 'parameters as one JSON object or array, or @FILE to read them from a file' }),
    timeout: Flags.string({
      description: 'give up when no reply came within this long (connecting included): a duration, or milliseconds',
      default: '30s',
    }),
  };

  async run(): Promise<void> {
    const { args, argv, flags } = await this.parse(Rpc);
    const method = args.method;
    if (!METHOD.test(method))
      throw usageError('METHOD', `'${method}' is not a method name`, 'letters, digits and _, e.g. bdev_get_bdevs');
    const words = (argv as string[]).slice(1);
    const params = this.buildParams(flags.params, words);
    const timeoutMs = parseTimeout(flags.timeout);
    const deadline = new Deadline(timeoutMs);

    let client: SpdkClient | undefined;
    let result: unknown;
    try {
      client = await SpdkClient.connect(flags.socket, { timeoutMs });
      const o = { timeoutMs: Math.max(1, deadline.remaining()) };
      if (method === 'save_config' && params === undefined) result = await client.saveConfig();
      else if (method === 'load_config') result = await this.loadConfig(client, params, deadline);
      else result = await client.call(method, params, o);
    } catch (e) {
      if (e instanceof JsonRpcError)
        throw new StorError(`${method}: ${e.message} (code ${e.code})`, {
          details: { rpcError: { code: e.code, message: e.message } },
        });
      if (e instanceof RpcTransportError)
        throw new StorError(`${method}: ${e.message}`, {
          hint: e.kind === 'connect' ? `is spdk_tgt or stor daemon listening there? -s SOCKET names it` : undefined,
        });
      throw e;
    } finally {
      client?.close();
    }
    const pretty = process.stdout.isTTY && !this.jsonEnabled();
    process.stdout.write(JSON.stringify(result ?? null, null, pretty ? 2 : undefined) + '\n');
  }

  private buildParams(paramsFlag: string | undefined, words: string[]): RpcParams | undefined {
    let params: RpcParams | undefined;
    if (paramsFlag !== undefined) {
      let text = paramsFlag;
      if (text.startsWith('@')) {
        try {
          text = readFileSync(text.slice(1), 'utf8');
        } catch (e) {
          throw usageError(
            '--params',
            `cannot read ${text.slice(1)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
          );
        }
      }
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch (e) {
        throw usageError(
          '--params',
          `not JSON (${(e as Error).message})`,
          'a JSON object or array, e.g. \'{"name":"Malloc0"}\'',
        );
      }
      if (typeof v !== 'object' || v === null)
        throw usageError('--params', `${text.trim().slice(0, 40)} is not an object or array`, 'a JSON object or array');
      params = v as RpcParams;
    }
    if (words.length) {
      if (Array.isArray(params))
        throw usageError(
          'NAME=VALUE',
          'cannot be merged into a --params array',
          '--params with an object, or only NAME=VALUE words',
        );
      const obj: Record<string, unknown> = { ...(params ?? {}) };
      for (const w of words) {
        const [name, value] = parseParamWord(w);
        obj[name] = value;
      }
      params = obj;
    }
    return params;
  }

  /** rpc.py's load_config: every call of every subsystem, in order. */
  private async loadConfig(client: SpdkClient, params: RpcParams | undefined, deadline: Deadline): Promise<boolean> {
    const config = params as SpdkConfig | undefined;
    if (!config || Array.isArray(config) || !Array.isArray(config.subsystems))
      throw usageError('load_config', 'needs the configuration save_config printed', '--params @config.json');
    for (const s of config.subsystems)
      for (const c of s.config ?? [])
        await client.call(c.method, c.params, { timeoutMs: Math.max(1, deadline.remaining()) });
    return true;
  }
}
