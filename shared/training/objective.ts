/**
 * What one cohort member minimises, by algorithm: the local losses (baseline, Tf-KD_virtual,
 * BYOT) and the ones that need a teaching signal from the coordinator (DML: the mean of the
 * peers' probabilities and their mean negative entropy; DML_e, KD, cross-quality KD, TAKD: the
 * teacher's probabilities). The worker and the single-process reference loop both use this.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Algorithm, RunConfig } from '../config/run-config.js';
import { byotLoss, crossEntropy, dmlLossFromPeerSummary, kdLoss, tfKdVirtualLoss } from '../losses/index.js';

/** What the coordinator sends a member at a step. */
export interface Teaching {
  /** [batch, classes] probabilities: the peers' mean (DML, DML_e) or the teacher's (KD). */
  probs: tf.Tensor2D;
  /** DML: batch mean of the peers' mean sum_c p log p. */
  peerNegEntropy?: number;
}

export interface Objective {
  /** Whether each step waits for the coordinator's teaching signal. */
  needsTeaching: boolean;
  /** The loss of the model's outputs (logits, or for multi-exit models E logits then E features). */
  loss(outputs: tf.Tensor | tf.Tensor[], labels: tf.Tensor1D, teaching?: Teaching): tf.Scalar;
}

const NEEDS_TEACHING: Record<Algorithm, boolean> = {
  baseline: false,
  tfkd_virtual: false,
  byot: false,
  dml: true,
  dml_e: true,
  kd: true,
  cross_quality_kd: true,
  takd: true,
};

/** The logits a member reports: the deepest exit of a multi-exit model. */
export function finalLogits(outputs: tf.Tensor | tf.Tensor[], exits: number): tf.Tensor2D {
  return (Array.isArray(outputs) ? outputs[exits - 1] : outputs) as tf.Tensor2D;
}

export function objectiveFor(config: Pick<RunConfig, 'algorithm' | 'temperature' | 'alpha' | 'beta' | 'labelSmoothing' | 'virtualTeacher'>, exits = 1): Objective {
  const { algorithm, temperature: T, alpha, labelSmoothing } = config;
  const needsTeaching = NEEDS_TEACHING[algorithm];
  const require = (teaching: Teaching | undefined): Teaching => {
    if (!teaching) throw new Error(`${algorithm}: a step needs the coordinator's teaching signal`);
    return teaching;
  };
  return {
    needsTeaching,
    loss(outputs, labels, teaching) {
      const logits = finalLogits(outputs, exits);
      switch (algorithm) {
        case 'baseline':
          return crossEntropy(logits, labels, { labelSmoothing });
        case 'tfkd_virtual':
          return tfKdVirtualLoss(logits, labels, { a: config.virtualTeacher.a, smoothTeacher: config.virtualTeacher.smooth, T, alpha });
        case 'byot': {
          const all = outputs as tf.Tensor[];
          return byotLoss(all.slice(0, exits) as tf.Tensor2D[], all.slice(exits), labels, { T, alpha, beta: config.beta });
        }
        case 'dml': {
          const t = require(teaching);
          return dmlLossFromPeerSummary(logits, { meanProbs: t.probs, meanNegEntropy: t.peerNegEntropy ?? 0 }, labels, { T, alpha });
        }
        case 'dml_e':
        case 'kd':
        case 'cross_quality_kd':
        case 'takd':
          return kdLoss(logits, require(teaching).probs, labels, { T, alpha, teacherIsProbs: true });
      }
    },
  };
}

/** A tfjs optimizer from a member's optimizer config. */
export function makeOptimizer(o: { name: 'adam' | 'sgd'; lr: number; momentum: number; beta1: number; beta2: number }): tf.Optimizer {
  if (o.name === 'sgd') return o.momentum > 0 ? tf.train.momentum(o.lr, o.momentum) : tf.train.sgd(o.lr);
  return tf.train.adam(o.lr, o.beta1, o.beta2);
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
