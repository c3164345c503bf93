/** Softmax cross-entropy with integer labels and optional label smoothing. */
import * as tf from '@tensorflow/tfjs-core';
import { checkFraction } from './options.js';
import { logSoftmaxT } from './primitives.js';

export interface CrossEntropyOptions {
  /** epsilon in [0, 1): the target is (1 - epsilon) * onehot(y) + epsilon / C. */
  labelSmoothing?: number;
}

/**
 * Batch mean of -sum_c t_c log softmax(z)_c, where t = (1 - eps) * onehot(y) + eps / C.
 * `logits` [B, C], `labels` [B] int32 class indices.
 */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, options: CrossEntropyOptions = {}): tf.Scalar {
  const eps = checkFraction(options.labelSmoothing ?? 0, 'labelSmoothing', 'crossEntropy');
  return tf.tidy(() => {
    const classes = logits.shape[1];
    let target: tf.Tensor2D = tf.cast(tf.oneHot(tf.cast(labels, 'int32'), classes), 'float32') as tf.Tensor2D;
    if (eps > 0) target = tf.add(tf.mul(target, 1 - eps), eps / classes) as tf.Tensor2D;
    return tf.neg(tf.mean(tf.sum(tf.mul(target, logSoftmaxT(logits)), 1))) as tf.Scalar;
  });
}
