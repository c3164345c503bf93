/**
 * Fashion-MNIST/IDX augmentation (shared/data/memory-augment.ts): random crop with black padding
 * and a horizontal flip, against an independent pad-crop-flip of each image; draws that depend
 * only on (seed, epoch, sample); the test split and runs without `augment` untouched.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDataset } from '../shared/data/datasets.js';
import { augmentBatch, sampleDraw } from '../shared/data/memory-augment.js';
import { randomIdx } from './helpers/fake-coordinator.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-augment-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** torchvision's order, written out: pad with `black`, crop h x w at (top, left), then flip. */
function reference(image: Float32Array, h: number, w: number, c: number, padding: number, black: number[], draw: { top: number; left: number; flip: boolean }): Float32Array {
  const ph = h + 2 * padding;
  const pw = w + 2 * padding;
  const padded: number[][][] = Array.from({ length: ph }, () => Array.from({ length: pw }, () => black.slice()));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) padded[y + padding][x + padding] = Array.from(image.subarray((y * w + x) * c, (y * w + x) * c + c));
  const crop = padded.slice(draw.top, draw.top + h).map((row) => row.slice(draw.left, draw.left + w));
  const flipped = draw.flip ? crop.map((row) => row.slice().reverse()) : crop;
  return Float32Array.from(flipped.flat(2));
}

test('each image is padded with black, cropped at its draw and flipped on its draw, as torchvision does', () => {
  const [n, h, w, c] = [6, 5, 7, 2];
  const images = Float32Array.from({ length: n * h * w * c }, (_, i) => i + 1);
  const indices = [3, 10, 11, 40, 41, 99];
  const norm = { mean: [0.5, 0.25], std: [0.5, 0.25] };
  const out = augmentBatch(images, [n, h, w, c], indices, { padding: 2, flip: true }, norm, 7, 1);
  let flips = 0;
  let shifted = 0;
  for (let i = 0; i < n; i++) {
    const draw = sampleDraw(7, 1, indices[i], 2);
    flips += Number(draw.flip);
    shifted += Number(draw.top !== 2 || draw.left !== 2);
    const per = h * w * c;
    assert.deepEqual(out.subarray(i * per, (i + 1) * per), reference(images.subarray(i * per, (i + 1) * per), h, w, c, 2, [-1, -1], draw), `sample ${indices[i]}`);
  }
  assert.ok(flips > 0 && flips < n && shifted > 0, `the draws vary (${flips} flips, ${shifted} shifted)`);
});

test('draws depend only on (seed, epoch, sample): the same again after a restart, new ones next epoch', () => {
  assert.deepEqual(sampleDraw(5, 2, 17, 4), sampleDraw(5, 2, 17, 4));
  const epoch = (e: number) => Array.from({ length: 50 }, (_, i) => JSON.stringify(sampleDraw(5, e, i, 4)));
  assert.notDeepEqual(epoch(0), epoch(1));
  assert.ok(Array.from({ length: 200 }, (_, i) => sampleDraw(5, 0, i, 4)).every((d) => d.top >= 0 && d.top <= 8 && d.left >= 0 && d.left <= 8));
});

test('an IDX dataset with augment changes training batches only; the test split is never augmented', async () => {
  const dataset = (augment?: { padding: number; flip: boolean }) =>
    openDataset({ name: 'idx', train: randomIdx(root, 'train', 16, 1), test: randomIdx(root, 'test', 8, 2), classes: 10, ...(augment ? { augment } : {}) });
  const plain = await dataset();
  const augmented = await dataset({ padding: 4, flip: true });
  const first = async (d: typeof plain, split: 'train' | 'test') => {
    for await (const batch of d.loader({ split, batchSize: 8, seed: 3 }).epoch(0)) return batch;
    throw new Error('no batch');
  };
  assert.deepEqual((await first(augmented, 'test')).images, (await first(plain, 'test')).images);
  const [a, p] = [await first(augmented, 'train'), await first(plain, 'train')];
  assert.deepEqual(a.labels, p.labels);
  assert.deepEqual(a.shape, p.shape);
  assert.notDeepEqual(a.images, p.images);
});
