// The one Ceph cluster every file in test/rbd uses (one start of about 15 s instead of one per file):
// started by the first file that asks, stopped and removed by tools/ceph.ts at process exit (or on a
// signal), like a shell trap would. A dead client's watch, and so its claim on an image's exclusive
// lock, expires after 10 s instead of 30.
import { startCephCluster, type CephCluster } from '../../tools/ceph.js';

let cluster: Promise<CephCluster> | undefined;

export function suiteCluster(): Promise<CephCluster> {
  cluster ??= startCephCluster({ CEPH_EXTRA_CONF: 'osd_client_watch_timeout = 10' });
  return cluster;
}
