/**
 * Failpoints: named places in the code where a test can make the process die, to check that a
 * crash there loses nothing (as etcd's gofail or FreeBSD's fail(9) do). Off unless the
 * environment variable COHORT_FAILPOINT names one: `NAME@STEP` SIGKILLs the process when it
 * reaches failpoint NAME at step STEP. With COHORT_FAILPOINT_ONCE=FILE only the first process
 * to get there dies (it creates FILE first), so a restarted worker, or the other workers of a
 * cohort that inherited the same environment, go on.
 *
 * `NAME@STEP:block=MS` instead blocks the process's main thread for MS milliseconds there (a
 * long synchronous computation or garbage collection: timers and the event loop stop, ZeroMQ's
 * I/O thread goes on).
 *
 * Failpoints: `checkpoint-before-state` (a member has written its weights and optimizer state
 * for the checkpoint of STEP but not yet its state.json); `coordinator-served` (the
 * coordinator has served step STEP).
 */
import { closeSync, openSync } from 'node:fs';

export type FailpointName = 'checkpoint-before-state' | 'coordinator-served';

export function failpoint(name: FailpointName, step: number): void {
  const spec = process.env.COHORT_FAILPOINT;
  const here = `${name}@${step}`;
  if (!spec || (spec !== here && !spec.startsWith(`${here}:`))) return;
  const block = /^:block=(\d+)$/.exec(spec.slice(here.length));
  const once = process.env.COHORT_FAILPOINT_ONCE;
  if (once) {
    try {
      closeSync(openSync(once, 'wx'));
    } catch {
      return; // another process got here first
    }
  }
  if (block) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(block[1]));
  else process.kill(process.pid, 'SIGKILL');
}
