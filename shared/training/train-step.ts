/**
 * One optimisation step of a classifier on one batch: forward, softmax cross-entropy,
 * backward and optimizer update. The loss and logits are returned as tensors so the caller
 * decides when to read them (await t.data()), keeping GPU backends non-blocking.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { crossEntropy } from '../losses/index.js';

export interface StepOutput {
  /** Mean loss of the batch (before the update). */
  loss: tf.Scalar;
  /** The training forward pass' logits, kept for metrics and for sending to peers. */
  logits: tf.Tensor2D;
}

export function trainStep(model: tfl.LayersModel, optimizer: tf.Optimizer, images: tf.Tensor4D, labels: tf.Tensor1D): StepOutput {
  let logits: tf.Tensor2D | undefined;
  const loss = optimizer.minimize(() => {
    logits = tf.keep(model.apply(images, { training: true }) as tf.Tensor2D);
    return crossEntropy(logits, labels);
  }, true);
  if (loss == null || logits === undefined) throw new Error('optimizer.minimize returned no loss');
  return { loss, logits };
}
