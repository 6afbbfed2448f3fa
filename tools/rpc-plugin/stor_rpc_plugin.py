# An rpc.py plugin for stor's own JSON-RPC methods (SPDK's rpc.py has no VDUSE commands):
#   PYTHONPATH=tools/rpc-plugin rpc.py -s SOCK --plugin stor_rpc_plugin vduse_create_blk_device NAME BDEV
# rpc.py imports this module and calls spdk_rpc_plugin_initialize with its subparsers; each command sends
# one request with SPDK-style parameter names and prints the result as rpc.py prints its own.
import json


def _print(result):
    if isinstance(result, (dict, list)):
        print(json.dumps(result, indent=2))
    elif result is not None and result is not True:
        print(result)


def spdk_rpc_plugin_initialize(subparsers):
    def vduse_create_blk_device(args):
        params = {'name': args.name, 'bdev_name': args.bdev_name}
        if args.num_queues is not None:
            params['num_queues'] = args.num_queues
        if args.queue_size is not None:
            params['queue_size'] = args.queue_size
        if args.readonly:
            params['readonly'] = True
        if args.serial is not None:
            params['serial'] = args.serial
        _print(args.client.call('vduse_create_blk_device', params))

    p = subparsers.add_parser('vduse_create_blk_device', help='Export a bdev as a VDUSE virtio-blk disk (stor)')
    p.add_argument('name', help='VDUSE device name (/dev/vduse/NAME, and the vDPA device)')
    p.add_argument('bdev_name', help='Name of the bdev to export')
    p.add_argument('-q', '--num-queues', help='Number of virtqueues. Default: 1', type=int)
    p.add_argument('-s', '--queue-size', help='Virtqueue size (a power of 2). Default: 128', type=int)
    p.add_argument('-r', '--readonly', help='Read-only disk', action='store_true')
    p.add_argument('--serial', help='Serial number (up to 20 bytes). Default: the name')
    p.set_defaults(func=vduse_create_blk_device)

    def vduse_delete_blk_device(args):
        _print(args.client.call('vduse_delete_blk_device', {'name': args.name}))

    p = subparsers.add_parser('vduse_delete_blk_device', help='Remove a VDUSE disk (stor)')
    p.add_argument('name', help='VDUSE device name')
    p.set_defaults(func=vduse_delete_blk_device)

    def vduse_get_devices(args):
        _print(args.client.call('vduse_get_devices', {'name': args.name} if args.name else None))

    p = subparsers.add_parser('vduse_get_devices', help='List VDUSE disks (stor)')
    p.add_argument('-n', '--name', help='Name of one device. Default: list all')
    p.set_defaults(func=vduse_get_devices)
