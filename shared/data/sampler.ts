/**
 * Deterministic sample order: a permutation derived only from (seed, epoch), so every process
 * of a cohort that shares the seed walks the data in the same order without talking; per-sample
 * random streams derived from (seed, epoch, sample index) for augmentation; and a sampler whose
 * position (epoch, batch) can be saved and restored exactly.
 */
import { CohortError } from '../errors.js';

/** mulberry32: a small, fast 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mixes (seed, epoch) into one 32-bit seed (splitmix-style), so nearby epochs differ fully. */
export function epochSeed(seed: number, epoch: number): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** The sample order of `epoch`: a Fisher-Yates permutation of 0..count-1. */
export function epochOrder(count: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  const random = mulberry32(epochSeed(seed, epoch));
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** Indices of batch `b` of an epoch order (the last batch may be short). */
export function batchIndices(order: Uint32Array, batchSize: number, b: number): Uint32Array {
  return order.subarray(b * batchSize, Math.min(order.length, (b + 1) * batchSize));
}

/**
 * A random stream for one sample's augmentation (crop box, flip), derived from (seed, epoch,
 * sample index) and an optional per-member seed: two workers with the same seeds draw the same
 * numbers for the same sample without talking; a different member seed gives another view.
 */
export function sampleRandom(seed: number, epoch: number, index: number, memberSeed = 0): () => number {
  return mulberry32(epochSeed(epochSeed(seed, epoch) ^ Math.imul(memberSeed + 1, 0x632be5ab), index));
}

/** Where a sampler stands: the next batch it will give is batch `batch` of epoch `epoch`. */
export interface SamplerState {
  epoch: number;
  batch: number;
}

export interface SamplerOptions {
  count: number;
  batchSize: number;
  seed: number;
  /** Drop the last batch of an epoch when it is short (default false). */
  dropLast?: boolean;
  /** Shuffle every epoch (default true); false walks 0..count-1 in order (evaluation). */
  shuffle?: boolean;
  /** Use only the first `limit` samples of each epoch's order (smoke runs); all when undefined. */
  limit?: number;
}

export interface SampledBatch {
  epoch: number;
  batch: number;
  indices: Uint32Array;
}

/** Walks epochs of batches (shuffled by default); `state()` / `restore()` resume exactly where it stood. */
export class BatchSampler {
  private epoch = 0;
  private batch = 0;
  private order: Uint32Array | undefined;
  /** Samples per epoch (`limit` applied). */
  readonly size: number;
  readonly batchesPerEpoch: number;

  constructor(private readonly options: SamplerOptions) {
    const { count, batchSize, limit } = options;
    if (!Number.isInteger(count) || count <= 0) throw new CohortError(`sampler: count must be a positive integer, got ${count}`, { code: 'INVALID_ARGUMENT' });
    if (!Number.isInteger(batchSize) || batchSize <= 0) throw new CohortError(`sampler: batchSize must be a positive integer, got ${batchSize}`, { code: 'INVALID_ARGUMENT' });
    if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0))
      throw new CohortError(`sampler: limit must be a positive integer, got ${limit}`, { code: 'INVALID_ARGUMENT' });
    this.size = Math.min(count, limit ?? count);
    this.batchesPerEpoch = options.dropLast ? Math.floor(this.size / batchSize) : Math.ceil(this.size / batchSize);
    if (this.batchesPerEpoch === 0) throw new CohortError(`sampler: batchSize ${batchSize} > ${this.size} samples with dropLast`, { code: 'INVALID_ARGUMENT' });
  }

  state(): SamplerState {
    return { epoch: this.epoch, batch: this.batch };
  }

  restore(state: SamplerState): void {
    if (!Number.isInteger(state.epoch) || state.epoch < 0 || !Number.isInteger(state.batch) || state.batch < 0 || state.batch > this.batchesPerEpoch) {
      throw new CohortError(`sampler: invalid state ${JSON.stringify(state)} (${this.batchesPerEpoch} batches per epoch)`, { code: 'INVALID_ARGUMENT' });
    }
    if (state.epoch !== this.epoch) this.order = undefined;
    this.epoch = state.epoch;
    this.batch = state.batch;
  }

  next(): SampledBatch {
    if (this.batch >= this.batchesPerEpoch) {
      this.epoch++;
      this.batch = 0;
      this.order = undefined;
    }
    this.order ??= this.epochOrder();
    const out = { epoch: this.epoch, batch: this.batch, indices: batchIndices(this.order, this.options.batchSize, this.batch) };
    this.batch++;
    return out;
  }

  private epochOrder(): Uint32Array {
    const { count, seed, shuffle } = this.options;
    const order = shuffle === false ? Uint32Array.from({ length: count }, (_, i) => i) : epochOrder(count, seed, this.epoch);
    return order.subarray(0, this.size);
  }
}

/**
 * A loader's position as its consumer sees it (the next batch it will be given), which can run
 * behind the sampler when batches are prefetched: what state() saves and restore() resumes.
 */
export class ConsumerPosition {
  current: SamplerState = { epoch: 0, batch: 0 };

  constructor(private readonly sampler: BatchSampler) {}

  state(): SamplerState {
    return { ...this.current };
  }

  restore(state: SamplerState): void {
    this.sampler.restore(state);
    this.current = { epoch: state.epoch, batch: state.batch };
  }
}
