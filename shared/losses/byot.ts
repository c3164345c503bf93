/** Be Your Own Teacher (Zhang et al. 2019): self-distillation of a multi-exit network. */
import * as tf from '@tensorflow/tfjs-core';
import { CohortError } from '../errors.js';
import { crossEntropy } from './cross-entropy.js';
import { checkNonNegative, distillationOptions, type DistillationOptions } from './options.js';
import { klDivergence, stopGradient, temper } from './primitives.js';

/** The authors' later code (and `algorithm: byot`'s defaults). */
export const BYOT_DEFAULTS = { T: 3, alpha: 0.3, beta: 0 } as const;

export interface ByotOptions extends DistillationOptions {
  /** Weight of the feature hint ||f_exit - f_deepest||^2 (default 0: the authors' later code drops it). */
  beta?: number;
}

/**
 * sum over exits e of (1 - alpha) * CE(e), plus, for each exit shallower than the deepest one,
 * alpha * T^2 * KL(softmax(deepest / T) || softmax(e / T)) + beta * mean_b ||f_e - f_deepest||^2,
 * the deepest exit's logits and features detached. Exits are ordered shallowest first.
 * Defaults T = 3, alpha = 0.3, beta = 0 (the authors' later code).
 */
export function byotLoss(exitLogits: tf.Tensor2D[], exitFeatures: tf.Tensor[], labels: tf.Tensor1D, options: ByotOptions = {}): tf.Scalar {
  const { T, alpha } = distillationOptions(options, 'byotLoss', BYOT_DEFAULTS);
  const beta = checkNonNegative(options.beta ?? BYOT_DEFAULTS.beta, 'beta', 'byotLoss');
  if (exitLogits.length === 0) throw new CohortError('byotLoss: needs at least one exit', { code: 'INVALID_ARGUMENT' });
  if (beta > 0 && exitFeatures.length !== exitLogits.length) {
    throw new CohortError(`byotLoss: ${exitFeatures.length} feature tensors for ${exitLogits.length} exits`, { code: 'INVALID_ARGUMENT' });
  }
  return tf.tidy(() => {
    const deepest = exitLogits.length - 1;
    const target = temper(exitLogits[deepest], T); // detached by klDivergence
    const targetFeatures = beta > 0 ? stopGradient(exitFeatures[deepest]) : undefined;
    const terms: tf.Scalar[] = exitLogits.map((z) => tf.mul(crossEntropy(z, labels), 1 - alpha) as tf.Scalar);
    for (let e = 0; e < deepest; e++) {
      terms.push(tf.mul(klDivergence(target, temper(exitLogits[e], T)), alpha * T * T) as tf.Scalar);
      if (targetFeatures) {
        const f = exitFeatures[e];
        if (f.shape.join() !== targetFeatures.shape.join()) {
          throw new CohortError(`byotLoss: features of exit ${e} have shape [${f.shape}], the deepest exit's [${targetFeatures.shape}]`, { code: 'INVALID_ARGUMENT' });
        }
        const perSample = tf.sum(tf.reshape(tf.square(tf.sub(f, targetFeatures)), [f.shape[0], -1]), 1);
        terms.push(tf.mul(tf.mean(perSample), beta) as tf.Scalar);
      }
    }
    return tf.addN(terms) as tf.Scalar;
  });
}
