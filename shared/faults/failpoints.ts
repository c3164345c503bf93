/**
 * Failpoints: named places in the code where a test can make the process die, to check that a
 * crash there loses nothing (as etcd's gofail or FreeBSD's fail(9) do). Off unless the
 * environment variable COHORT_FAILPOINT names one: `NAME@STEP` SIGKILLs the process when it
 * reaches failpoint NAME at step STEP. With COHORT_FAILPOINT_ONCE=FILE only the first process
 * to get there dies (it creates FILE first), so a restarted worker, or the other workers of a
 * cohort that inherited the same environment, go on.
 *
 * Failpoints: `checkpoint-before-state` (a member has written its weights and optimizer state
 * for the checkpoint of STEP but not yet its state.json).
 */
import { closeSync, openSync } from 'node:fs';

export type FailpointName = 'checkpoint-before-state';

export function failpoint(name: FailpointName, step: number): void {
  const spec = process.env.COHORT_FAILPOINT;
  if (!spec || spec !== `${name}@${step}`) return;
  const once = process.env.COHORT_FAILPOINT_ONCE;
  if (once) {
    try {
      closeSync(openSync(once, 'wx'));
    } catch {
      return; // another process got here first
    }
  }
  process.kill(process.pid, 'SIGKILL');
}
