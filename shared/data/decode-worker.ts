/**
 * One batch of image-folder samples, decoded and normalised into a single float32 NHWC buffer.
 * `decodeBatch` is the shared code path: the piscina pool runs it through this module's default
 * export (which moves the buffers back to the caller without copying), and the loader's
 * main-thread mode (threads: 0) calls it directly. Unreadable or corrupt files are dropped from
 * the batch and listed in `skipped`; `indices` says which samples the batch really holds.
 */
import { Piscina, transferableSymbol, valueSymbol } from 'piscina';
import { decodeImage } from './decode-image.js';
import { applyDownscale, normalizeRgb, outputSide, transformOutputShape, type TransformSpec } from './transforms.js';

export interface DecodeTask {
  /** The batch's files, labels and dataset indices, in batch order. */
  paths: string[];
  labels: ArrayLike<number>;
  indices: ArrayLike<number>;
  seed: number;
  epoch: number;
  memberSeed: number;
  transform: TransformSpec;
  /** Images of this batch decoded at the same time (default 2). */
  concurrency?: number;
}

export interface SkippedSample {
  index: number;
  path: string;
  reason: string;
}

export interface DecodedBatch {
  /** n * h * w * 3 normalised pixels, NHWC. */
  images: Float32Array;
  shape: [number, number, number, 3];
  labels: Int32Array;
  indices: Uint32Array;
  skipped: SkippedSample[];
}

/** Decodes every sample of the task (a few at a time), normalises in place, drops the failures. */
export async function decodeBatch(task: DecodeTask): Promise<DecodedBatch> {
  const n = task.paths.length;
  const [h, w] = transformOutputShape(task.transform);
  const side = outputSide(task.transform);
  const per = h * w * 3;
  const images = new Float32Array(n * per);
  const ok = new Uint8Array(n);
  const failures: (SkippedSample | undefined)[] = new Array(n);
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let i = next++; i < n; i = next++) {
      const index = task.indices[i];
      const result = await decodeImage(task.paths[i], { seed: task.seed, epoch: task.epoch, index, memberSeed: task.memberSeed }, task.transform);
      if (!result.ok) {
        failures[i] = { index, path: result.path, reason: result.reason };
        continue;
      }
      if (task.transform.downscale) {
        images.set(applyDownscale(normalizeRgb(result.pixels), side, 3, task.transform.downscale), i * per);
      } else {
        normalizeRgb(result.pixels, images, i * per);
      }
      ok[i] = 1;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, task.concurrency ?? 2)) }, lane));

  const present = ok.reduce((a, b) => a + b, 0);
  const labels = new Int32Array(present);
  const indices = new Uint32Array(present);
  let k = 0;
  for (let i = 0; i < n; i++) {
    if (!ok[i]) continue;
    if (k !== i) images.copyWithin(k * per, i * per, (i + 1) * per);
    labels[k] = task.labels[i];
    indices[k] = task.indices[i];
    k++;
  }
  return {
    images: present === n ? images : images.slice(0, present * per),
    shape: [present, h, w, 3],
    labels,
    indices,
    skipped: failures.filter((f): f is SkippedSample => f !== undefined),
  };
}

/** The piscina entry: the batch's three arrays are transferred to the caller, not copied. */
export default async function decodeBatchTask(task: DecodeTask): Promise<unknown> {
  const batch = await decodeBatch(task);
  return Piscina.move({
    [transferableSymbol]: [batch.images.buffer, batch.labels.buffer, batch.indices.buffer],
    [valueSymbol]: batch,
  });
}
