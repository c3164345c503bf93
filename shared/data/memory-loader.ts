/**
 * Batches of an in-memory dataset (Fashion-MNIST, any IDX pair): the same seeded BatchSampler
 * as the image-folder loader, normalisation per channel, and an optional per-worker downscale
 * (area resampling, optionally upsampled back) for a cross-quality student that must see the
 * same samples as its teacher at a lower resolution.
 */
import { CohortError } from '../errors.js';
import { gatherBatch, type Normalization } from './batch.js';
import { BatchSampler, ConsumerPosition, type SamplerState } from './sampler.js';
import type { Batch, BatchSource, ImageDataset } from './source.js';
import { augmentBatch, type MemoryAugment } from './memory-augment.js';
import { applyDownscale, type DownscaleSpec } from './transforms.js';

export interface MemoryLoaderOptions {
  data: ImageDataset;
  classNames: readonly string[];
  normalization: Normalization;
  batchSize: number;
  /** The cohort's seed: sample order. */
  seed: number;
  /** Shuffle every epoch (default true); false for evaluation. */
  shuffle?: boolean;
  dropLast?: boolean;
  limit?: number;
  /** Lower the resolution of every image (the images must be square). */
  downscale?: DownscaleSpec;
  /** Random crop with padding and flip (train split), drawn from augmentSeed (default: seed). */
  augment?: MemoryAugment;
  augmentSeed?: number;
}

export class MemoryLoader implements BatchSource {
  readonly size: number;
  readonly batchesPerEpoch: number;
  readonly imageShape: [number, number, number];
  private readonly sampler: BatchSampler;
  private readonly position: ConsumerPosition;

  constructor(private readonly options: MemoryLoaderOptions) {
    const { data, downscale } = options;
    if (downscale) {
      if (data.height !== data.width) throw new CohortError(`downscale needs square images, the dataset's are ${data.height}x${data.width}`, { code: 'CONFIG_INVALID' });
      if (!Number.isInteger(downscale.size) || downscale.size < 1 || downscale.size > data.height) {
        throw new CohortError(`downscale size must be an integer in 1..${data.height}, got ${downscale.size}`, { code: 'CONFIG_INVALID' });
      }
    }
    const side = downscale && downscale.upsample === 'none' ? downscale.size : undefined;
    this.imageShape = [side ?? data.height, side ?? data.width, data.channels];
    this.sampler = new BatchSampler({
      count: data.count,
      batchSize: options.batchSize,
      seed: options.seed,
      shuffle: options.shuffle,
      dropLast: options.dropLast,
      limit: options.limit,
    });
    this.position = new ConsumerPosition(this.sampler);
    this.size = this.sampler.size;
    this.batchesPerEpoch = this.sampler.batchesPerEpoch;
  }

  get classNames(): readonly string[] {
    return this.options.classNames;
  }

  state(): SamplerState {
    return this.position.state();
  }

  restore(state: SamplerState): void {
    this.position.restore(state);
  }

  async *epoch(e: number): AsyncGenerator<Batch> {
    if (!Number.isInteger(e) || e < 0) throw new CohortError(`data loader: epoch must be an integer >= 0, got ${e}`, { code: 'INVALID_ARGUMENT' });
    const start = this.position.current.epoch === e ? this.position.current.batch : 0;
    this.position.restore({ epoch: e, batch: start });
    for (let b = start; b < this.batchesPerEpoch; b++) {
      const { indices } = this.sampler.next();
      const batch = { ...this.downscale(this.augment(gatherBatch(this.options.data, indices, this.options.normalization), e)), epoch: e, batch: b };
      this.position.current = { epoch: e, batch: b + 1 };
      yield batch;
    }
  }

  async close(): Promise<void> {}

  private augment<T extends { images: Float32Array; shape: [number, number, number, number]; indices: Uint32Array }>(batch: T, epoch: number): T {
    const { augment, normalization, seed, augmentSeed } = this.options;
    if (!augment || (augment.padding === 0 && !augment.flip)) return batch;
    return { ...batch, images: augmentBatch(batch.images, batch.shape, batch.indices, augment, normalization, augmentSeed ?? seed, epoch) };
  }

  private downscale<T extends { images: Float32Array; shape: [number, number, number, number] }>(batch: T): T {
    const spec = this.options.downscale;
    if (!spec) return batch;
    const [n, side, , channels] = batch.shape;
    const [h, w] = this.imageShape;
    const per = side * side * channels;
    const images = new Float32Array(n * h * w * channels);
    for (let i = 0; i < n; i++) {
      images.set(applyDownscale(batch.images.subarray(i * per, (i + 1) * per), side, channels, spec), i * h * w * channels);
    }
    return { ...batch, images, shape: [n, h, w, channels] };
  }
}
