import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import {
  HALT_POLL_PARAM,
  KERNEL_DEFAULT_HALT_POLL_NS,
  describeIdle,
  hostIdle,
  sleepCostWarning,
} from '../../src/lib/engine/bench/host.js';

test('hostIdle reads this machine: CPU count, cpuidle driver, and guest halt polling when haltpoll is loaded', () => {
  const h = hostIdle();
  assert.ok(h.cpus >= 1);
  assert.type(h.cpuidleDriver, 'string');
  if (existsSync(HALT_POLL_PARAM)) assert.is(h.guestHaltPollNs, Number(readFileSync(HALT_POLL_PARAM, 'utf8').trim()));
  else assert.is(h.guestHaltPollNs, null);
});

test('a guest that halts at once is named as such, and only then warns about notify sleeps', () => {
  const halting = { cpus: 2, cpuidleDriver: 'haltpoll', guestHaltPollNs: 0 };
  assert.match(describeIdle(halting), 'guest_halt_poll_ns=0: idle vCPUs halt at once');
  assert.match(sleepCostWarning(halting)!, /VM exit/);
  const polling = { cpus: 2, cpuidleDriver: 'haltpoll', guestHaltPollNs: KERNEL_DEFAULT_HALT_POLL_NS };
  assert.match(describeIdle(polling), '(the kernel default)');
  assert.is(sleepCostWarning(polling), undefined);
  const bare = { cpus: 8, cpuidleDriver: 'intel_idle', guestHaltPollNs: null };
  assert.is(describeIdle(bare), 'cpuidle driver intel_idle');
  assert.is(sleepCostWarning(bare), undefined);
});

test.run();
