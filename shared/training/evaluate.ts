/**
 * Test-set evaluation of a classifier: accuracy, NLL, entropy and calibration (ECE), computed
 * in batches by the MetricAccumulator, which reads tensors with `await data()` so that GPU
 * backends are not blocked and keeps no prediction.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { gatherBatch, type Normalization } from '../data/batch.js';
import type { ImageDataset } from '../data/fashion-mnist.js';
import { MetricAccumulator, type MetricSummary } from '../metrics/index.js';

export async function evaluate(
  model: tfl.LayersModel,
  data: ImageDataset,
  norm: Normalization,
  batchSize = 1000,
): Promise<MetricSummary> {
  const metrics = new MetricAccumulator({ bins: 15 });
  for (let start = 0; start < data.count; start += batchSize) {
    const indices = new Uint32Array(Math.min(batchSize, data.count - start)).map((_, i) => start + i);
    const batch = gatherBatch(data, indices, norm);
    const images = tf.tensor4d(batch.images, batch.shape);
    const labels = tf.tensor1d(batch.labels, 'int32');
    const logits = model.apply(images, { training: false }) as tf.Tensor2D;
    await metrics.add(logits, labels);
    tf.dispose([images, labels, logits]);
  }
  return metrics.result();
}
