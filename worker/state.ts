/**
 * A worker's training state: its model and optimizer, the last loss, and the two ways back:
 * reinitialise (seeded weights, or a teacher's checkpoint, and a new optimizer) and restore
 * (a global checkpoint of a step). A teacher's weights are fixed: it restores nothing.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { join } from 'node:path';
import { CohortError } from '../shared/errors.js';
import { loadMemberCheckpoint, type MemberState } from '../shared/io/checkpoint.js';
import type { CohortModel } from '../shared/models/index.js';

export interface Initial {
  built: CohortModel;
  optimizer: tf.Optimizer;
}

export interface WorkerStateOptions {
  name: string;
  /** Teachers keep their weights: restore() only says where to continue. */
  fixed: boolean;
  /** The initial state: seeded weights (or a teacher's checkpoint) and a new optimizer; none for an ONNX teacher (onnxruntime holds its network). */
  initial: (() => Initial) | undefined;
  /** Reads a member's part of a checkpoint into the model and optimizer (default: loadMemberCheckpoint). */
  load?: (dir: string, model: tfl.LayersModel, optimizer: tf.Optimizer) => Promise<MemberState>;
  log?: (line: string) => void;
}

export class WorkerState {
  /** Undefined only for an ONNX teacher. */
  built: CohortModel | undefined;
  optimizer: tf.Optimizer | undefined;
  /** The loss of the last step trained (sent with the next step's predictions). */
  lastLoss: number | undefined;
  private readonly load: NonNullable<WorkerStateOptions['load']>;
  private readonly log: (line: string) => void;

  constructor(private readonly options: WorkerStateOptions) {
    ({ built: this.built, optimizer: this.optimizer } = options.initial?.() ?? {});
    this.load = options.load ?? loadMemberCheckpoint;
    this.log = options.log ?? (() => {});
  }

  /** Back to the initial state, for a rollback to step 0. */
  reinitialise(): void {
    this.dispose();
    ({ built: this.built, optimizer: this.optimizer } = this.options.initial?.() ?? {});
    this.lastLoss = undefined;
  }

  /**
   * Restores the global checkpoint `dir` of step `checkpointStep` (members; teachers keep their
   * fixed weights) and returns the step to continue at: `step`, which is the checkpoint's own
   * step except on an elastic rejoin, where the cohort has gone on without this member.
   */
  async restore(step: number, dir: string | undefined, checkpointStep = step): Promise<number> {
    const { name } = this.options;
    if (this.options.fixed) return step;
    if (dir === undefined) {
      if (checkpointStep !== 0) throw new CohortError(`${name}: asked to restore step ${checkpointStep} without a checkpoint`, { code: 'CHECKPOINT_MISMATCH' });
      this.reinitialise();
      if (step > 0) this.log(`${name}: rejoining with its initial weights at step ${step}`);
      return step;
    }
    if (!this.built || !this.optimizer) throw new CohortError(`${name}: has no network to restore a checkpoint into`, { code: 'CHECKPOINT_MISMATCH' });
    const state = await this.load(join(dir, name), this.built.model, this.optimizer);
    if (state.step !== checkpointStep) throw new CohortError(`${name}: checkpoint ${dir} holds step ${state.step}, expected ${checkpointStep}`, { code: 'CHECKPOINT_MISMATCH' });
    this.lastLoss = state.lastLoss;
    this.log(`${name}: restored checkpoint ${dir} (step ${checkpointStep})${step !== checkpointStep ? `; rejoining the cohort at step ${step}` : ''}`);
    return step;
  }

  dispose(): void {
    this.optimizer?.dispose();
    this.built?.model.dispose();
  }
}
