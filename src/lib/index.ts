// The stor library: what `import { open } from 'stor'` gives a TypeScript program.
export { open, BlockDevice, type OpenOptions, type Properties, type MemRegion, type Completion, type RequestOptions } from './blkio/device.js';
export { BlkioError } from './blkio/errors.js';
export { StorError, EXIT } from './errors.js';
export { parseTarget, parseBackend, type Target } from './target.js';
export { parseSize, formatSize } from './size.js';
export { VhostUserBlkServer, type VhostUserBlkServerOptions } from './vhost-user/server.js';
