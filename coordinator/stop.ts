/**
 * A graceful stop (SIGTERM or SIGINT to `cohort train` or `cohort coordinator`): the rules,
 * without sockets (tested in test/graceful-stop-parts.test.ts), and the signal handling of the
 * commands.
 *
 * The first signal asks for a stop: the coordinator picks the step barrier after the step in
 * flight, tells every worker (`stop`), the members save their part of the global checkpoint
 * there, the coordinator writes its manifest, shuts the workers down and the process exits
 * with EXIT_STOPPED. Bound: one step, the checkpoint's write and the shutdown (the coordinator
 * gives up after `deadlineMs`: the run fails with STOP_FAILED, exit 2, and the last complete
 * checkpoint stays as it was). A second signal stops at once: no checkpoint, the local workers
 * are killed, exit 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
 */
import { constants } from 'node:os';

/**
 * The exit code of a run stopped gracefully: EX_TEMPFAIL (sysexits.h, "try again later"): not a
 * success (a Kubernetes Job or a scheduler must not count the run as done), resumable with
 * `--resume` from the checkpoint the stop wrote. The Slurm script requeues on it.
 */
export const EXIT_STOPPED = 75;

/** The exit code of a process stopped at once by `signal`: 128 + its number, as a shell reports a process killed by it. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 15);
}

/** What the coordinator does when a stop is asked for. */
export type StopDecision =
  /** A stop is already under way: nothing more (a second signal is the launcher's: it stops at once). */
  | { action: 'ignore' }
  /** Nothing was trained since the run (re)started: nothing new to save, the run ends now. */
  | { action: 'end-now' }
  /** Tell the workers to checkpoint at `step` (the next step to run after the checkpoint). */
  | { action: 'checkpoint-at'; step: number };

export class GracefulStop {
  /** The stop under way: which signal asked, the barrier, and when (ms). */
  requested: { signal: string; step: number; at: number } | undefined;
  /** Set once the barrier's checkpoint is complete. */
  checkpointed = false;

  constructor(private readonly deadlineMs: number) {}

  /**
   * The step barrier after the step in flight: members train in lockstep with the teaching
   * signals, so none can be past step `highestServed` + 1 (a member served step s may have
   * started s + 1); each trains to the barrier and checkpoints there. Never before `startStep` + 1.
   */
  static barrier(highestServed: number, startStep: number): number {
    return Math.max(highestServed + 2, startStep + 1);
  }

  /** A stop is asked for by `signal`, with `highestServed` the highest step any member was served (-1: none) since the run started at `startStep`. */
  request(signal: string, highestServed: number, startStep: number, now: number): StopDecision {
    if (this.requested) return { action: 'ignore' };
    if (highestServed < startStep) {
      this.requested = { signal, step: startStep, at: now };
      return { action: 'end-now' };
    }
    const step = GracefulStop.barrier(highestServed, startStep);
    this.requested = { signal, step, at: now };
    return { action: 'checkpoint-at', step };
  }

  /** A checkpoint is complete: returns whether it is the stop's (the run then ends). */
  completed(step: number): boolean {
    if (this.requested && step === this.requested.step) this.checkpointed = true;
    return this.checkpointed;
  }

  /** Whether the stop has taken longer than its deadline. */
  overdue(now: number): boolean {
    return !!this.requested && !this.checkpointed && now - this.requested.at > this.deadlineMs;
  }
}

/**
 * Handles SIGTERM and SIGINT for a command: the first calls `first` (a graceful stop), any later
 * one `second` (stop at once). Returns the function that removes the handlers.
 */
export function onStopSignals(
  handlers: { first: (signal: NodeJS.Signals) => void; second: (signal: NodeJS.Signals) => void },
  signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'],
): () => void {
  let count = 0;
  const handle = (signal: NodeJS.Signals) => (count++ === 0 ? handlers.first(signal) : handlers.second(signal));
  for (const s of signals) process.on(s, handle);
  return () => {
    for (const s of signals) process.off(s, handle);
  };
}
