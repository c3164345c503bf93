/**
 * Turns in-memory samples into model input: gathers uint8 images by index into one Float32Array
 * batch (NHWC), normalised per channel as (pixel / 255 - mean) / std.
 */
import type { ImageDataset } from './source.js';

export interface Normalization {
  /** One value per channel, or one for all channels. */
  mean: number | readonly number[];
  std: number | readonly number[];
}

/** Fashion-MNIST's pixel statistics (distillistic's normalisation). */
export const FASHION_MNIST_NORMALIZATION: Normalization = { mean: 0.286, std: 0.353 };

export interface GatheredBatch {
  images: Float32Array;
  labels: Int32Array;
  indices: Uint32Array;
  shape: [number, number, number, number];
}

/** Per-channel (scale, shift) so that normalised = pixel * scale - shift. */
function affine(norm: Normalization, channels: number): { scale: Float64Array; shift: Float64Array } {
  const pick = (v: number | readonly number[], c: number) => (typeof v === 'number' ? v : v[c]);
  const scale = new Float64Array(channels);
  const shift = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    scale[c] = 1 / (255 * pick(norm.std, c));
    shift[c] = pick(norm.mean, c) / pick(norm.std, c);
  }
  return { scale, shift };
}

export function gatherBatch(data: ImageDataset, indices: Uint32Array, norm: Normalization): GatheredBatch {
  const { channels } = data;
  const values = data.height * data.width * channels;
  const images = new Float32Array(indices.length * values);
  const labels = new Int32Array(indices.length);
  const { scale, shift } = affine(norm, channels);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i] * values;
    const dst = i * values;
    for (let p = 0; p < values; p++) {
      const c = p % channels;
      images[dst + p] = data.images[src + p] * scale[c] - shift[c];
    }
    labels[i] = data.labels[indices[i]];
  }
  return { images, labels, indices, shape: [indices.length, data.height, data.width, channels] };
}
