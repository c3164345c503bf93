/**
 * Augmentation for in-memory datasets (Fashion-MNIST, IDX), torchvision's RandomCrop(size,
 * padding) then RandomHorizontalFlip(0.5), on normalised NHWC batches: the padding is black (a
 * 0 pixel, normalised), as torchvision pads before Normalize. Every sample's crop and flip are a
 * function of (seed, epoch, sample index) alone, never of a generator that advances, so a worker
 * that restarts or rolls back draws the same ones again, and members with the same seed the
 * same ones (a member's own augmentSeed gives it other views of the same samples).
 */
import type { Normalization } from './batch.js';
import { epochSeed, mulberry32 } from './sampler.js';

export interface MemoryAugment {
  /** Zero padding on every side before the random crop back to the image's size (0: no crop). */
  padding: number;
  /** Flip horizontally with probability 0.5. */
  flip: boolean;
}

/** One sample's draw: the crop's top-left corner in the padded image, and the flip. */
export function sampleDraw(seed: number, epoch: number, index: number, padding: number): { top: number; left: number; flip: boolean } {
  const random = mulberry32(epochSeed(epochSeed(seed, epoch), index));
  const top = Math.floor(random() * (2 * padding + 1));
  const left = Math.floor(random() * (2 * padding + 1));
  return { top, left, flip: random() < 0.5 };
}

/** Augments `images` (NHWC, normalised with `norm`) in a new array. */
export function augmentBatch(
  images: Float32Array,
  shape: [number, number, number, number],
  indices: ArrayLike<number>,
  augment: MemoryAugment,
  norm: Normalization,
  seed: number,
  epoch: number,
): Float32Array {
  const [n, h, w, c] = shape;
  const pick = (v: number | readonly number[], ch: number) => (typeof v === 'number' ? v : v[ch]);
  const black = Float32Array.from({ length: c }, (_, ch) => -pick(norm.mean, ch) / pick(norm.std, ch));
  const out = new Float32Array(images.length);
  const per = h * w * c;
  for (let i = 0; i < n; i++) {
    const { top, left, flip } = sampleDraw(seed, epoch, indices[i], augment.padding);
    const dy = top - augment.padding;
    const dx = left - augment.padding;
    for (let y = 0; y < h; y++) {
      const sy = y + dy;
      for (let x = 0; x < w; x++) {
        const sx = (augment.flip && flip ? w - 1 - x : x) + dx;
        const o = i * per + (y * w + x) * c;
        if (sy < 0 || sy >= h || sx < 0 || sx >= w) out.set(black, o);
        else out.set(images.subarray(i * per + (sy * w + sx) * c, i * per + (sy * w + sx) * c + c), o);
      }
    }
  }
  return out;
}
