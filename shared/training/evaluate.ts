/**
 * Test-set evaluation of a classifier: accuracy and mean cross-entropy, computed in batches and
 * read back with `await data()` so that GPU backends are not blocked.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { gatherBatch, type Normalization } from '../data/batch.js';
import type { ImageDataset } from '../data/fashion-mnist.js';
import { softmaxCrossEntropy } from './train-step.js';

export interface EvalResult {
  accuracy: number;
  loss: number;
  count: number;
}

export async function evaluate(
  model: tfl.LayersModel,
  data: ImageDataset,
  norm: Normalization,
  batchSize = 1000,
): Promise<EvalResult> {
  let correct = 0;
  let lossSum = 0;
  for (let start = 0; start < data.count; start += batchSize) {
    const indices = new Uint32Array(Math.min(batchSize, data.count - start)).map((_, i) => start + i);
    const batch = gatherBatch(data, indices, norm);
    const [hits, loss] = tf.tidy(() => {
      const logits = model.apply(tf.tensor4d(batch.images, batch.shape), { training: false }) as tf.Tensor2D;
      const labels = tf.tensor1d(batch.labels, 'int32');
      return [tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'int32')), softmaxCrossEntropy(logits, labels)];
    });
    correct += (await hits.data())[0];
    lossSum += (await loss.data())[0] * indices.length;
    tf.dispose([hits, loss]);
  }
  return { accuracy: correct / data.count, loss: lossSum / data.count, count: data.count };
}
