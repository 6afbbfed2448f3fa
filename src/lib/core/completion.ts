// Completion modes and the spin budget: one meaning and one default everywhere (the native queue loop,
// native/export/queue_loop.h, implements them). notify: sleep until notified; poll: spin, never sleep;
// adaptive: spin for an adapting window of at most spin-us after the last work, then sleep.
export type CompletionMode = 'notify' | 'poll' | 'adaptive';
export const COMPLETION_MODES: readonly CompletionMode[] = ['notify', 'poll', 'adaptive'];
/** The spin budget in microseconds (--spin-us): adaptive mode's longest window, a polled client's spin
 * before it yields to the event loop. Keep in step with STOR_SPIN_US_DEFAULT in queue_loop.h. */
export const SPIN_US_DEFAULT = 64;
