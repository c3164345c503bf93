/** Decoupled Knowledge Distillation (DKD, Zhao et al., CVPR 2022). */
import * as tf from '@tensorflow/tfjs-core';
import { crossEntropy } from './cross-entropy.js';
import { checkNonNegative, checkTemperature } from './options.js';
import { klDivergence, logOf, temper } from './primitives.js';

export interface DkdOptions {
  /** Temperature T > 0 of both terms. */
  T?: number;
  /** Weight of the target-class term TCKD (>= 0). */
  alpha?: number;
  /** Weight of the non-target-class term NCKD (>= 0). */
  beta?: number;
  /** The teacher is already softmax(teacher / T), [B, C] (e.g. the coordinator's teaching signal). */
  teacherIsProbs?: boolean;
}

/** The paper's defaults (and `algorithm: dkd`'s). */
export const DKD_DEFAULTS = { T: 4, alpha: 1, beta: 8 } as const;

/**
 * log b = [log p_t, log (1 - p_t)] ([B, 2]) and the log-probabilities over the non-target
 * classes, -Infinity at the target ([B, C]), of logits already divided by T.
 */
function decoupledLogits(z: tf.Tensor2D, target: tf.Tensor2D, isTarget: tf.Tensor2D): { binary: tf.Tensor2D; other: tf.Tensor2D } {
  const other = tf.where(isTarget, tf.fill(z.shape, -Infinity), z) as tf.Tensor2D;
  const all = tf.logSumExp(z, 1, true);
  const logTarget = tf.sub(tf.sum(tf.mul(z, target), 1, true), all);
  const logRest = tf.sub(tf.logSumExp(other, 1, true), all);
  return { binary: tf.concat([logTarget, logRest], 1) as tf.Tensor2D, other };
}

/** The same from probabilities p (0 where the teacher gives 0): log p_t, log of the rest's sum, log p elsewhere. */
function decoupledProbs(p: tf.Tensor2D, target: tf.Tensor2D, isTarget: tf.Tensor2D): { binary: tf.Tensor2D; other: tf.Tensor2D } {
  const pTarget = tf.sum(tf.mul(p, target), 1, true);
  const pRest = tf.sum(tf.mul(p, tf.sub(1, target)), 1, true); // the sum, not 1 - p_t: exact for small masses
  const binary = logOf(tf.concat([pTarget, pRest], 1) as tf.Tensor2D);
  return { binary, other: tf.where(isTarget, tf.fill(p.shape, -Infinity), logOf(p)) as tf.Tensor2D };
}

/**
 * CE(labels, student) + alpha * T^2 * TCKD + beta * T^2 * NCKD, batch mean, where, at
 * temperature T, b = [p_t, 1 - p_t] are the target and non-target probabilities and p^ the
 * distribution over the non-target classes (softmax with the target logit masked out):
 * TCKD = KL(b_teacher || b_student), NCKD = KL(p^_teacher || p^_student). The teacher is
 * detached. Defaults T = 4, alpha = 1, beta = 8 (the paper's). The paper's linear warm-up of the
 * KD terms is the caller's: pass the warmed-up alpha and beta.
 */
export function dkdLoss(student: tf.Tensor2D, teacher: tf.Tensor2D, labels: tf.Tensor1D, options: DkdOptions = {}): tf.Scalar {
  const T = checkTemperature(options.T ?? DKD_DEFAULTS.T, 'dkdLoss');
  const alpha = checkNonNegative(options.alpha ?? DKD_DEFAULTS.alpha, 'alpha', 'dkdLoss');
  const beta = checkNonNegative(options.beta ?? DKD_DEFAULTS.beta, 'beta', 'dkdLoss');
  return tf.tidy(() => {
    const target = tf.cast(tf.oneHot(tf.cast(labels, 'int32'), student.shape[1]), 'float32') as tf.Tensor2D;
    const isTarget = tf.cast(target, 'bool') as tf.Tensor2D;
    const s = decoupledLogits(temper(student, T), target, isTarget);
    const t = options.teacherIsProbs ? decoupledProbs(teacher, target, isTarget) : decoupledLogits(temper(teacher, T), target, isTarget);
    // klDivergence detaches its first argument (the teacher) and takes log-probabilities as logits.
    const tckd = klDivergence(t.binary, s.binary);
    const nckd = klDivergence(t.other, s.other);
    return tf.addN([crossEntropy(student, labels), tf.mul(tckd, alpha * T * T), tf.mul(nckd, beta * T * T)]) as tf.Scalar;
  });
}
