/**
 * The recovery policy's decisions for a lost worker: `fail` stops the run; `restart` rolls the
 * cohort back to the last complete checkpoint in a new generation (older messages are then
 * ignored); `elastic` goes on without the worker until it is back. Each loss counts as a
 * restart; past `maxRestarts` the run gives up.
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

  constructor(private readonly policy: { policy: RecoveryPolicy; maxRestarts: number }) {}

  /** What to do about worker `name`, lost at `when` for `reason`. */
  decide(name: string, reason: string, when: string): LossDecision {
    if (this.policy.policy === 'fail') return { action: 'fail', error: new CohortError(`worker ${name} lost at ${when}: ${reason} (recovery policy 'fail')`, { code: 'WORKER_LOST' }) };
    this.restarts++;
    if (this.restarts > this.policy.maxRestarts) {
      return { action: 'fail', error: new CohortError(`worker ${name} lost at ${when}: ${reason}; giving up after ${this.policy.maxRestarts} restart(s)`, { code: 'RESTARTS_EXHAUSTED' }) };
    }
    if (this.policy.policy === 'elastic') return { action: 'continue-without' };
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
