// The stor library: what `import { open } from 'stor'` gives a TypeScript program.
export { open, BlockDevice, type OpenOptions, type Properties, type MemRegion, type Completion, type RequestOptions } from './client/device.js';
export { BlkioError } from './client/errors.js';
export { StorError, EXIT } from './core/errors.js';
export { parseTarget, parseBackend, type Target } from './core/target.js';
export { parseSize, formatSize } from './core/size.js';
export { VhostUserBlkServer, type VhostUserBlkServerOptions } from './export/vhost-user/server.js';
