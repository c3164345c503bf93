/**
 * What a worker sends the coordinator each step instead of raw logits: its probabilities at the
 * run's temperature, p = softmax(z / T), and their batch-mean negative entropy mean_b sum_c
 * p log p, computed on the worker's own backend (GPU or wasm), so the coordinator only averages.
 */
import * as tf from '@tensorflow/tfjs-core';

export function temperedPredictions(logits: tf.Tensor2D, T: number): { probs: tf.Tensor2D; negEntropy: tf.Scalar } {
  return tf.tidy(() => {
    const logP = tf.logSoftmax(tf.div(logits, T)) as tf.Tensor2D;
    const probs = tf.exp(logP) as tf.Tensor2D;
    return { probs, negEntropy: tf.mean(tf.sum(tf.mul(probs, logP), 1)) as tf.Scalar };
  });
}
