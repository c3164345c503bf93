/**
 * Knowledge distillation (Hinton et al. 2015) and its ensemble-teacher signal.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CohortError } from '../errors.js';
import { crossEntropy } from './cross-entropy.js';
import { distillationOptions, type DistillationOptions, checkTemperature } from './options.js';
import { blend, klDivergence, logOf, softmaxT, temper } from './primitives.js';

/** distillistic's defaults (and `algorithm: kd`'s). */
export const KD_DEFAULTS = { T: 20, alpha: 0.5 } as const;

export interface KdOptions extends DistillationOptions {
  /** The teacher is already a probability distribution [B, C] (e.g. an ensemble), used as is. */
  teacherIsProbs?: boolean;
}

/**
 * (1 - alpha) * CE(labels, student) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
 * batch mean; the teacher is detached. With `teacherIsProbs`, softmax(teacher / T) is replaced by
 * `teacher` itself. Defaults T = 20, alpha = 0.5 (distillistic's).
 */
export function kdLoss(student: tf.Tensor2D, teacher: tf.Tensor2D, labels: tf.Tensor1D, options: KdOptions = {}): tf.Scalar {
  const { T, alpha } = distillationOptions(options, 'kdLoss', KD_DEFAULTS);
  return tf.tidy(() => {
    const target = options.teacherIsProbs ? logOf(teacher) : temper(teacher, T); // detached by klDivergence
    return blend(crossEntropy(student, labels), klDivergence(target, temper(student, T)), alpha, T);
  });
}

export interface EnsembleOptions {
  /** One non-negative weight per teacher (normalised to sum 1); equal weights by default. */
  weights?: number[];
  /** 'probs': weighted mean of softmax(z_i / T) (returns probabilities); 'logits': weighted mean of the logits. */
  mode?: 'probs' | 'logits';
  /** Temperature of the 'probs' mode (default 1). */
  T?: number;
}

/**
 * The teaching signal of several teachers: sum_i w_i softmax(z_i / T) ('probs', the default:
 * feed it to kdLoss with teacherIsProbs) or sum_i w_i z_i ('logits'), with w normalised to sum 1.
 */
export function ensembleTeacher(logitsList: tf.Tensor2D[], options: EnsembleOptions = {}): tf.Tensor2D {
  if (logitsList.length === 0) throw new CohortError('ensembleTeacher: needs at least one teacher', { code: 'INVALID_ARGUMENT' });
  const weights = options.weights ?? logitsList.map(() => 1);
  if (weights.length !== logitsList.length) {
    throw new CohortError(`ensembleTeacher: ${weights.length} weights for ${logitsList.length} teachers`, { code: 'INVALID_ARGUMENT' });
  }
  if (weights.some((w) => !Number.isFinite(w) || w < 0) || weights.every((w) => w === 0)) {
    throw new CohortError(`ensembleTeacher: weights must be non-negative and not all zero, got [${weights.join(', ')}]`, { code: 'INVALID_ARGUMENT' });
  }
  const total = weights.reduce((a, b) => a + b, 0);
  const mode = options.mode ?? 'probs';
  const T = checkTemperature(options.T ?? 1, 'ensembleTeacher');
  return tf.tidy(() => tf.addN(logitsList.map((z, i) => tf.mul(mode === 'probs' ? softmaxT(z, T) : z, weights[i] / total))) as tf.Tensor2D);
}
