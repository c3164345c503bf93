/**
 * The recovery policy's decisions for a lost worker: `fail` stops the run; `restart` rolls the
 * cohort back to the last complete checkpoint in a new generation (older messages are then
 * ignored); `elastic` goes on without the worker until it is back. A loss counts as a restart
 * when the worker's process died, hung (silent) or became unreachable; past `maxRestarts` the
 * run gives up. A worker that rejoins from the same process (it lost contact with the
 * coordinator: a stall of the coordinator or of the network) is not a restart, and the rejoins of
 * one incident are one rollback (judgeRejoin); so are the silences of one incident
 * (judgeSilence): a cut between the coordinator and every worker rolls back once.
 */
import type { RunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';

export type RecoveryPolicy = RunConfig['recovery']['policy'];

export type LossDecision = { action: 'fail'; error: CohortError } | { action: 'rollback'; generation: number } | { action: 'continue-without' };

export class Recovery {
  /** Workers lost (and to be replaced) so far. */
  restarts = 0;
  /** Bumped by each rollback; messages of an older generation are stale. */
  generation = 0;
  /** The step the cohort was at when the last rollback was decided, and how many rollbacks in a row came before the cohort got past the one before. */
  private lastRollbackAt = -1;
  private rollbacksWithoutProgress = 0;

  constructor(private readonly policy: { policy: RecoveryPolicy; maxRestarts: number }) {}

  /**
   * What to do about worker `name`, lost at `when` for `reason`; `counts`: whether it uses a
   * restart (its process died or hung); `step`: the step the cohort is at. Rollbacks that use
   * no restart (rejoins from the same process) are bounded too: more than maxRestarts of them in
   * a row, each before the cohort got past the step of the one before, and the run gives up
   * (NO_PROGRESS), as a coordinator stalled again at the same step would otherwise roll back
   * without end.
   */
  decide(name: string, reason: string, when: string, counts = true, step = Infinity): LossDecision {
    if (this.policy.policy === 'fail')
      return { action: 'fail', error: new CohortError(`worker ${name} lost at ${when}: ${reason} (recovery policy 'fail')`, { code: 'WORKER_LOST' }) };
    if (counts) this.restarts++;
    if (this.restarts > this.policy.maxRestarts) {
      return {
        action: 'fail',
        error: new CohortError(`worker ${name} lost at ${when}: ${reason}; giving up after ${this.policy.maxRestarts} restart(s)`, { code: 'RESTARTS_EXHAUSTED' }),
      };
    }
    if (this.policy.policy === 'elastic') return { action: 'continue-without' };
    this.rollbacksWithoutProgress = step <= this.lastRollbackAt ? this.rollbacksWithoutProgress + 1 : 0;
    this.lastRollbackAt = step;
    if (this.rollbacksWithoutProgress > this.policy.maxRestarts) {
      return {
        action: 'fail',
        error: new CohortError(
          `worker ${name} lost at ${when}: ${reason}; the cohort rolled back ${this.rollbacksWithoutProgress + 1} times in a row without getting past step ${step}: giving up`,
          { code: 'NO_PROGRESS' },
        ),
      };
    }
    this.generation++;
    return { action: 'rollback', generation: this.generation };
  }

  /** Whether a message of `generation` was sent before the last rollback. */
  isStale(generation: number | undefined): boolean {
    return (generation ?? 0) < this.generation;
  }

  get maxRestarts(): number {
    return this.policy.maxRestarts;
  }
}

/**
 * A worker joined again from the same process (it heard nothing from the coordinator for
 * livenessMs). If it has sent nothing since the last rollback (`caughtUp` false), the incident
 * that made it rejoin already rolled the cohort back: it is welcomed at that rollback's step,
 * with no new rollback (and if it was already welcomed there, it is only answered again). Else
 * this is a new incident: one rollback (not a restart).
 */
export function judgeRejoin(caughtUp: boolean, generation: number, welcomedSinceRollback = false): 'welcome-again' | 'same-incident' | 'new-incident' {
  if (caughtUp || generation === 0) return 'new-incident';
  // Already welcomed at that rollback's step: a join it sent during the stall, read late.
  return welcomedSinceRollback ? 'welcome-again' : 'same-incident';
}

/**
 * A worker judged silent (or unreachable) under the `restart` policy. If the cohort has rolled
 * back (`generation` > 0) and the worker has sent nothing of the new generation and was not
 * admitted since (`caughtUp` and `admittedSinceRollback` false), it has been out of reach since
 * before that rollback: it belongs to the incident that caused it (a cut between the coordinator
 * and several workers, or several workers that stopped together), which already rolled the
 * cohort back and used its restart. Else this is a new incident.
 */
export function judgeSilence(caughtUp: boolean, generation: number, admittedSinceRollback: boolean): 'same-incident' | 'new-incident' {
  return generation > 0 && !caughtUp && !admittedSinceRollback ? 'same-incident' : 'new-incident';
}

/**
 * A worker judged silent under the `elastic` policy (which has no generations): if its silence
 * began (`now - silentMs`) before the last loss was decided (`lastDecisionAt`), it was already
 * out of reach then: the same incident, no restart.
 */
export function judgeElasticSilence(now: number, silentMs: number, lastDecisionAt: number): 'same-incident' | 'new-incident' {
  return now - silentMs < lastDecisionAt ? 'same-incident' : 'new-incident';
}
