// `stor attach --ublk`: a backend as /dev/ublkbN (issue #12).
// Placeholder until the ublk export lands: refuses with a clear runtime error.
import { StorError } from '../../core/errors.js';
import type { AttachOptions } from '../attach-options.js';

export async function attachUblk(_opts: AttachOptions): Promise<void> {
  throw new StorError('attach --ublk: the ublk export is not built yet');
}
