/**
 * Turns dataset samples into model input: gathers uint8 images by index into one Float32Array
 * batch (NHWC), normalised as (pixel / 255 - mean) / std.
 */
import type { ImageDataset } from './fashion-mnist.js';

export interface Normalization {
  mean: number;
  std: number;
}

/** Fashion-MNIST's pixel statistics (distillistic's normalisation). */
export const FASHION_MNIST_NORMALIZATION: Normalization = { mean: 0.286, std: 0.353 };

export interface Batch {
  /** [n, height, width, 1] normalised pixels. */
  images: Float32Array;
  labels: Int32Array;
  /** The dataset indices of the samples, in batch order. */
  indices: Uint32Array;
  shape: [number, number, number, number];
}

export function gatherBatch(data: ImageDataset, indices: Uint32Array, norm: Normalization): Batch {
  const pixels = data.height * data.width;
  const images = new Float32Array(indices.length * pixels);
  const labels = new Int32Array(indices.length);
  const scale = 1 / (255 * norm.std);
  const shift = norm.mean / norm.std;
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i] * pixels;
    const dst = i * pixels;
    for (let p = 0; p < pixels; p++) images[dst + p] = data.images[src + p] * scale - shift;
    labels[i] = data.labels[indices[i]];
  }
  return { images, labels, indices, shape: [indices.length, data.height, data.width, 1] };
}
