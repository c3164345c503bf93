/**
 * Global checkpoint manifests: members report their part of the checkpoint of a step; once all
 * have, the manifest that makes it complete is written (then old checkpoints pruned), off the
 * event loop and in order. A failed write fails the run. A rollback or an elastic rejoin uses
 * the newest complete checkpoint once the manifests being written are on disk. The file
 * operations are injected (`CheckpointStore`), so the rules are tested without a disk.
 */
import { asCohortError, type CohortError } from '../shared/errors.js';
import { checkpointDir, latestCheckpoint, pruneCheckpoints, writeCheckpointManifest } from '../shared/io/checkpoint.js';

export interface CheckpointStore {
  writeManifest(step: number, members: readonly string[]): Promise<void>;
  prune(): Promise<void>;
  /** The step of the newest complete checkpoint on disk. */
  latest(): number | undefined;
  dirOf(step: number): string;
}

/** The checkpoints of a run directory. */
export function diskStore(runDir: string, keep: number): CheckpointStore {
  return {
    writeManifest: (step, members) => writeCheckpointManifest(runDir, step, [...members]),
    prune: () => pruneCheckpoints(runDir, keep),
    latest: () => latestCheckpoint(runDir)?.step,
    dirOf: (step) => checkpointDir(runDir, step),
  };
}

/** Where the cohort (or a worker) starts: a step, and the checkpoint folder to restore (none: initial weights). */
export interface StartPoint {
  step: number;
  dir?: string;
}

export class Checkpoints {
  private readonly reports = new Map<number, Set<string>>();
  private writes: Promise<void> = Promise.resolve();
  /** The first failed manifest write: the run fails with it. */
  failure: CohortError | undefined;

  constructor(
    private readonly members: readonly string[],
    private readonly store: CheckpointStore,
    private readonly hooks: { onComplete?: (step: number, dir: string) => void; onFailure?: () => void } = {},
  ) {}

  /** A member saved its part of the checkpoint of `step`; returns whether that completes it (its manifest is then being written). */
  reported(name: string, step: number): boolean {
    let reported = this.reports.get(step);
    if (!reported) this.reports.set(step, (reported = new Set()));
    reported.add(name);
    if (reported.size < this.members.length) return false;
    this.reports.delete(step);
    // Off the event loop: a slow disk's fsync must not hold back the heartbeats (workers would
    // declare the coordinator lost). In order; a failure (a full disk) fails the run.
    this.writes = this.writes
      .then(async () => {
        await this.store.writeManifest(step, this.members);
        await this.store.prune();
        this.hooks.onComplete?.(step, this.store.dirOf(step));
      })
      .catch((error: unknown) => {
        this.failure ??= asCohortError(error, 'CHECKPOINT_FAILED', `checkpoint of step ${step}: `);
        this.hooks.onFailure?.();
      });
    return true;
  }

  /** Once the manifests being written are on disk. */
  settled(): Promise<void> {
    return this.writes;
  }

  /** The newest complete checkpoint, once the manifests being written are on disk (undefined: none yet). */
  async latest(): Promise<{ step: number; dir: string } | undefined> {
    await this.writes;
    const step = this.store.latest();
    return step === undefined ? undefined : { step, dir: this.store.dirOf(step) };
  }

  /** Where a rollback takes the cohort: the newest complete checkpoint, or step 0 with the initial weights. */
  async rollbackPoint(): Promise<StartPoint> {
    return (await this.latest()) ?? { step: 0 };
  }

  /** A rollback: reports of checkpoints in progress are forgotten (their steps will be run again). */
  rollBack(): void {
    this.reports.clear();
  }
}
