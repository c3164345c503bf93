/** Teacher-free KD with a virtual teacher (Tf-KD_virtual, Yuan et al. 2020). */
import * as tf from '@tensorflow/tfjs-core';
import { crossEntropy } from './cross-entropy.js';
import { checkFraction, distillationOptions, type DistillationOptions } from './options.js';
import { blend, klDivergence, logOf, temper } from './primitives.js';

export interface TfKdVirtualOptions extends DistillationOptions {
  /** Probability of the true class in the virtual teacher d (default 0.9). */
  a?: number;
  /**
   * true (the published method): the target is softmax(d / T), treating the probabilities d
   * as logits, an extra smoothing the thesis found to make students under-confident; false
   * (default, the thesis' calibrated variant): the target is d itself.
   */
  smoothTeacher?: boolean;
}

/**
 * The thesis' calibrated variant (the virtual teacher as is, T 1), `algorithm: tfkd_virtual`'s
 * defaults too. The published method is { smoothTeacher: true, T: 20 }.
 */
export const TF_KD_VIRTUAL_DEFAULTS = { T: 1, alpha: 0.5, a: 0.9, smoothTeacher: false } as const;

/** The virtual teacher: a on the true class, (1 - a) / (C - 1) on each other class. [B, C] */
export function virtualTeacher(labels: tf.Tensor1D, classes: number, a: number): tf.Tensor2D {
  return tf.tidy(() => {
    const onehot = tf.cast(tf.oneHot(tf.cast(labels, 'int32'), classes), 'float32');
    const rest = (1 - a) / (classes - 1);
    return tf.add(tf.mul(onehot, a - rest), rest) as tf.Tensor2D;
  });
}

/**
 * (1 - alpha) * CE + alpha * T^2 * KL(q || softmax(student / T)), q = softmax(d / T) when
 * smoothTeacher, else d, with d the virtual teacher. Defaults a = 0.9, T = 1, alpha = 0.5,
 * smoothTeacher = false (TF_KD_VIRTUAL_DEFAULTS).
 */
export function tfKdVirtualLoss(student: tf.Tensor2D, labels: tf.Tensor1D, options: TfKdVirtualOptions = {}): tf.Scalar {
  const { T, alpha } = distillationOptions(options, 'tfKdVirtualLoss', TF_KD_VIRTUAL_DEFAULTS);
  const a = checkFraction(options.a ?? TF_KD_VIRTUAL_DEFAULTS.a, 'a', 'tfKdVirtualLoss');
  return tf.tidy(() => {
    const d = virtualTeacher(labels, student.shape[1], a);
    const teacher = (options.smoothTeacher ?? TF_KD_VIRTUAL_DEFAULTS.smoothTeacher) ? temper(d, T) : logOf(d); // softmax(d / T), or d itself
    return blend(crossEntropy(student, labels), klDivergence(teacher, temper(student, T)), alpha, T);
  });
}
