// `stor attach --vduse`: a backend as a kernel virtio-blk disk through VDUSE (issue #11).
// Placeholder until the VDUSE export lands: refuses with a clear runtime error.
import { StorError } from '../../core/errors.js';
import type { AttachOptions } from '../attach-options.js';

export async function attachVduse(_opts: AttachOptions): Promise<void> {
  throw new StorError('attach --vduse: the VDUSE export is not built yet');
}
