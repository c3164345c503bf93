/**
 * Evaluation of a classifier over a batch source (a test split, walked in order): accuracy,
 * NLL, entropy and calibration (ECE), computed in batches by the MetricAccumulator, which reads
 * tensors with `await data()` so that GPU backends are not blocked and keeps no prediction.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { Batch, BatchSource } from '../data/source.js';
import { MetricAccumulator, type MetricSummary } from '../metrics/index.js';

/**
 * Metrics of `model` over one full epoch of `source` (epoch 0: the order of an unshuffled split).
 * `model` may be a function giving the logits (an ONNX teacher). `onBatch` sees every batch
 * with its logits before they are freed (a worker sends them on).
 */
export async function evaluate(
  model: tfl.LayersModel | ((images: tf.Tensor4D) => Promise<tf.Tensor2D>),
  source: BatchSource,
  onBatch?: (batch: Batch, logits: tf.Tensor2D) => Promise<void>,
): Promise<MetricSummary> {
  const metrics = new MetricAccumulator({ bins: 15 });
  source.restore({ epoch: 0, batch: 0 });
  for await (const batch of source.epoch(0)) {
    const images = tf.tensor4d(batch.images, batch.shape);
    const labels = tf.tensor1d(batch.labels, 'int32');
    const logits = typeof model === 'function' ? await model(images) : (model.apply(images, { training: false }) as tf.Tensor2D);
    await metrics.add(logits, labels);
    await onBatch?.(batch, logits);
    tf.dispose([images, labels, logits]);
  }
  return metrics.result();
}
