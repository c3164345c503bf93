/**
 * What one cohort member minimises at a step: its algorithm's loss (shared/algorithms/
 * registry.ts), and whether the step waits for the coordinator's teaching signal. The worker and
 * the single-process reference loop both use this.
 */
import * as tf from '@tensorflow/tfjs-core';
import { AdamW } from './adamw.js';
import { algorithmEntry, type LossConfig, type Teaching } from '../algorithms/registry.js';

export type { Teaching };

export interface Objective {
  /** Whether each step waits for the coordinator's teaching signal. */
  needsTeaching: boolean;
  /**
   * The loss of the model's outputs (logits, or for multi-exit models E logits then E features)
   * at a step; `epoch`: epochs done once this step is ((step + 1) / steps per epoch), which
   * warm-ups read (default: past any warm-up).
   */
  loss(outputs: tf.Tensor | tf.Tensor[], labels: tf.Tensor1D, teaching?: Teaching, epoch?: number): tf.Scalar;
}

/** The logits a member reports: the deepest exit of a multi-exit model. */
export function finalLogits(outputs: tf.Tensor | tf.Tensor[], exits: number): tf.Tensor2D {
  return (Array.isArray(outputs) ? outputs[exits - 1] : outputs) as tf.Tensor2D;
}

export function objectiveFor(config: LossConfig, exits = 1): Objective {
  const entry = algorithmEntry(config.algorithm);
  return {
    needsTeaching: entry.teaching.kind !== 'none',
    loss: (outputs, labels, teaching, epoch = Infinity) => entry.loss({ outputs, logits: finalLogits(outputs, exits), labels, exits, teaching, epoch }, config),
  };
}

/** A member's optimizer config (shared/config/run-config.ts optimizerSchema). */
export interface OptimizerConfig {
  name: 'adam' | 'adamw' | 'sgd';
  lr: number;
  momentum: number;
  beta1: number;
  beta2: number;
  /** AdamW's decoupled weight decay (PyTorch's default 0.01). */
  weightDecay?: number;
}

/** A tfjs optimizer from a member's optimizer config. */
export function makeOptimizer(o: OptimizerConfig): tf.Optimizer {
  if (o.name === 'sgd') return o.momentum > 0 ? tf.train.momentum(o.lr, o.momentum) : tf.train.sgd(o.lr);
  if (o.name === 'adamw') return new AdamW({ lr: o.lr, beta1: o.beta1, beta2: o.beta2, weightDecay: o.weightDecay ?? 0.01 });
  return tf.train.adam(o.lr, o.beta1, o.beta2);
}

/** Whether OneCycle can cycle this optimizer's momentum (AdamW's beta1, SGD's momentum); tfjs's Adam fixes beta1 at construction. */
export function cyclesMomentum(o: Pick<OptimizerConfig, 'name' | 'momentum'>): boolean {
  return o.name === 'adamw' || (o.name === 'sgd' && o.momentum > 0);
}

/** Sets the momentum OneCycle gives this step: AdamW's beta1, or SGD momentum's momentum. */
export function setMomentum(optimizer: tf.Optimizer, momentum: number): void {
  if (optimizer instanceof AdamW) optimizer.beta1 = momentum;
  else (optimizer as unknown as { setMomentum(m: number): void }).setMomentum(momentum);
}

/**
 * Sets the learning rate of a tfjs optimizer: SGD and momentum cache it as a scalar (their
 * setLearningRate), Adam reads the field. (tfjs optimizers define Symbol.hasInstance by duck
 * typing, so `instanceof SGDOptimizer` is true for every optimizer: test for the method.)
 */
export function setLearningRate(optimizer: tf.Optimizer, lr: number): void {
  const o = optimizer as unknown as { learningRate: number; setLearningRate?: (lr: number) => void };
  if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
  else o.learningRate = lr;
}
