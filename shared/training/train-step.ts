/**
 * One optimisation step of a classifier on one batch: forward, softmax cross-entropy,
 * backward and optimizer update. The loss is returned as a tensor so the caller decides when
 * to read it (await loss.data()), keeping GPU backends non-blocking.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';

/** Mean softmax cross-entropy of integer labels, with a numerically stable log-softmax. */
export function softmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy((): tf.Scalar => {
    const logProbs = tf.logSoftmax(logits);
    const picked = tf.sum(tf.mul(logProbs, tf.oneHot(labels, logits.shape[1])), 1);
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}

export function trainStep(
  model: tfl.LayersModel,
  optimizer: tf.Optimizer,
  images: tf.Tensor4D,
  labels: tf.Tensor1D,
): tf.Scalar {
  const loss = optimizer.minimize(
    () => softmaxCrossEntropy(model.apply(images, { training: true }) as tf.Tensor2D, labels),
    true,
  );
  if (loss == null) throw new Error('optimizer.minimize returned no loss');
  return loss;
}
