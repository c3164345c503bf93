/**
 * The data pipeline's shared shapes: an in-memory uint8 image dataset, the batch every loader
 * yields, and `BatchSource`, the one interface training and evaluation read batches through,
 * whichever dataset (Fashion-MNIST, IDX, image folder) stands behind it.
 */
import type { SamplerState } from './sampler.js';

/** Images held in memory as bytes (Fashion-MNIST, any IDX pair). */
export interface ImageDataset {
  /** count * height * width * channels pixels, row-major (NHWC), 0..255. */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  height: number;
  width: number;
  channels: number;
  classes: number;
}

/** One batch, ready for tf.tensor4d(images, shape). */
export interface Batch {
  /** n * h * w * c normalised pixels, NHWC. */
  images: Float32Array;
  shape: [number, number, number, number];
  labels: Int32Array;
  /** Dataset indices of the images, in batch order (receivers verify alignment with them). */
  indices: Uint32Array;
  epoch: number;
  batch: number;
}

/** Batches of one split, in a seeded order shared by every process of a cohort. */
export interface BatchSource {
  /** Samples per epoch. */
  readonly size: number;
  readonly classNames: readonly string[];
  /** [height, width, channels] of every image yielded. */
  readonly imageShape: [number, number, number];
  readonly batchesPerEpoch: number;
  /** The batches of epoch `e` in order, from the restored position when it lies in `e`. */
  epoch(e: number): AsyncGenerator<Batch>;
  /** The next batch the consumer will be given: save it with a checkpoint. */
  state(): SamplerState;
  /** Continue from a saved state(): the next batch yielded is exactly the one that was next then. */
  restore(state: SamplerState): void;
  close(): Promise<void>;
}
