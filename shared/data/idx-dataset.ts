/**
 * The `idx` dataset: any IDX image/label pair (MNIST, Fashion-MNIST, KMNIST, EMNIST...):
 * images of dims [n, h, w] (grey) or [n, h, w, c], labels of dims [n] holding class numbers.
 */
import { CohortError } from '../errors.js';
import { readIdxFile, type IdxArray } from './idx.js';
import type { ImageDataset } from './source.js';

/** Checks an image/label pair and wraps it; `classes` defaults to the largest label + 1. */
export function idxToDataset(images: IdxArray, labels: IdxArray, source: string, classes?: number): ImageDataset {
  const [count, height, width, channels = 1] = images.dims;
  if (images.dims.length !== 3 && images.dims.length !== 4) {
    throw new CohortError(`${source}: expected images of dims [n, height, width] or [n, height, width, channels], found ${images.dims.join('x')}`, { code: 'DATA_INVALID' });
  }
  if (labels.dims.length !== 1 || labels.dims[0] !== count) {
    throw new CohortError(`${source}: ${count} images but labels of dims ${labels.dims.join('x')}`, { code: 'DATA_INVALID' });
  }
  let largest = 0;
  for (const l of labels.data) largest = Math.max(largest, l);
  const classCount = classes ?? largest + 1;
  const bad = labels.data.findIndex((l) => l >= classCount);
  if (bad >= 0) throw new CohortError(`${source}: label ${labels.data[bad]} of sample ${bad} is not a class 0-${classCount - 1}`, { code: 'DATA_INVALID' });
  if (classCount < 2) throw new CohortError(`${source}: labels name only ${classCount} class; a classifier needs at least 2`, { code: 'DATA_INVALID' });
  return { images: images.data, labels: labels.data, count, height, width, channels, classes: classCount };
}

/** Reads an IDX image file and its label file (plain or gzipped) into one dataset. */
export async function loadIdxDataset(imagesPath: string, labelsPath: string, classes?: number): Promise<ImageDataset> {
  const [images, labels] = await Promise.all([readIdxFile(imagesPath), readIdxFile(labelsPath)]);
  return idxToDataset(images, labels, imagesPath, classes);
}

/** Per-channel mean and std of the pixels scaled to [0, 1], for normalising a dataset by its own statistics. */
export function pixelStatistics(data: ImageDataset): { mean: number[]; std: number[] } {
  const { channels, images } = data;
  const sum = new Float64Array(channels);
  const squares = new Float64Array(channels);
  for (let i = 0; i < images.length; i++) {
    const v = images[i] / 255;
    sum[i % channels] += v;
    squares[i % channels] += v * v;
  }
  const n = images.length / channels;
  const mean = Array.from(sum, (s) => s / n);
  const std = Array.from(squares, (q, c) => Math.sqrt(Math.max(q / n - mean[c] ** 2, 1e-12)));
  return { mean, std };
}
