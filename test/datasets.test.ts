/**
 * Datasets by name (`fashion-mnist`, `idx`, `image-folder`) through openDataset: config errors
 * naming the bad key, batch shapes and per-channel normalisation against hand-computed values,
 * sequential evaluation order, identical batches in independent loaders, exact resume, the
 * per-worker downscale of a cross-quality student, and the image-folder loader's stall count
 * (the training loop does not wait when the decode pool keeps up).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import { openDataset, type DatasetConfig } from '../shared/data/datasets.js';
import { writeIdxFile } from '../shared/data/idx.js';
import { ImageFolderLoader } from '../shared/data/image-loader.js';
import { mulberry32 } from '../shared/data/sampler.js';
import type { Batch, BatchSource } from '../shared/data/source.js';
import { evalTransform } from '../shared/data/transforms.js';
import { CohortError } from '../shared/errors.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-datasets-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** n images of side x side x channels with pixel (i, p) = (7i + 3p) mod 256, label i mod classes. */
function writePair(name: string, n: number, side: number, channels: number, classes: number): { images: string; labels: string } {
  const dims = channels === 1 ? [n, side, side] : [n, side, side, channels];
  const data = Uint8Array.from({ length: n * side * side * channels }, (_, k) => {
    const per = side * side * channels;
    return (7 * Math.floor(k / per) + 3 * (k % per)) % 256;
  });
  const paths = { images: join(root, `${name}-images.idx`), labels: join(root, `${name}-labels.idx.gz`) };
  writeIdxFile(paths.images, { dims, data });
  writeIdxFile(paths.labels, { dims: [n], data: Uint8Array.from({ length: n }, (_, i) => i % classes) }, { gzip: true });
  return paths;
}

async function all(source: BatchSource, epoch = 0): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of source.epoch(epoch)) out.push(b);
  return out;
}

const rejectsWith = (config: unknown, pattern: RegExp) => assert.rejects(openDataset(config as DatasetConfig), (e: unknown) => e instanceof CohortError && pattern.test(e.message));

describe('config errors name the bad key', () => {
  test('unknown dataset name', () =>
    rejectsWith({ name: 'cifar' }, /dataset\.name: Invalid input: expected one of "fashion-mnist"\|"idx"\|"image-folder"|dataset\.name: .*fashion-mnist/));
  test('missing and ill-typed keys, listed together', () =>
    rejectsWith(
      { name: 'idx', train: { images: 3 }, test: { images: 'a', labels: 'b' } },
      /dataset\.train\.images: .*expected string.*\n {2}dataset\.train\.labels: .*expected string/s,
    ));
  test('unknown key', () => rejectsWith({ name: 'fashion-mnist', datadir: '/x' }, /dataset: unknown key 'datadir'/));
  test('image-folder sizes', () => rejectsWith({ name: 'image-folder', train: '/a', test: '/b', size: 0 }, /dataset\.size: .*>0|dataset\.size: Too small/));
  test('a missing image folder names its path', () =>
    rejectsWith({ name: 'image-folder', train: join(root, 'nowhere'), test: join(root, 'nowhere') }, new RegExp(`${join(root, 'nowhere')}`)));
  test('a missing IDX file names its path', () =>
    rejectsWith({ name: 'idx', train: { images: join(root, 'none'), labels: join(root, 'none') }, test: { images: 'a', labels: 'b' } }, /IDX file not found: .*none/));
});

describe('idx', () => {
  let rgb: { train: { images: string; labels: string }; test: { images: string; labels: string } };
  before(() => {
    rgb = { train: writePair('rgb-train', 10, 3, 3, 4), test: writePair('rgb-test', 5, 3, 3, 4) };
  });

  test('an RGB pair: shapes, labels, and normalisation by the training set own per-channel statistics', async () => {
    const dataset = await openDataset({ name: 'idx', ...rgb });
    assert.deepEqual(dataset.classNames, ['0', '1', '2', '3']);
    const train = dataset.loader({ split: 'train', batchSize: 4, seed: 1 });
    assert.equal(train.size, 10);
    assert.equal(train.batchesPerEpoch, 3);
    assert.deepEqual(train.imageShape, [3, 3, 3]);
    const batches = await all(train);
    assert.deepEqual(
      batches.map((b) => b.shape),
      [
        [4, 3, 3, 3],
        [4, 3, 3, 3],
        [2, 3, 3, 3],
      ],
    );
    const indices = batches.flatMap((b) => Array.from(b.indices));
    assert.deepEqual(
      [...indices].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    for (const b of batches) b.indices.forEach((i, k) => assert.equal(b.labels[k], i % 4));
    // Over the whole training epoch every channel has mean 0 and (population) std 1.
    for (let c = 0; c < 3; c++) {
      const values = batches.flatMap((b) => Array.from(b.images).filter((_, k) => k % 3 === c));
      const mean = values.reduce((a, v) => a + v, 0) / values.length;
      const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length;
      assert.ok(Math.abs(mean) < 1e-5 && Math.abs(variance - 1) < 1e-4, `channel ${c}: mean ${mean}, variance ${variance}`);
    }
  });

  test('the test split is walked in order; an explicit normalisation is applied exactly', async () => {
    const dataset = await openDataset({ name: 'idx', ...rgb, normalization: { mean: [0.5, 0.25, 0], std: 0.5 } });
    const batches = await all(dataset.loader({ split: 'test', batchSize: 2, seed: 9 }));
    assert.deepEqual(
      batches.flatMap((b) => Array.from(b.indices)),
      [0, 1, 2, 3, 4],
    );
    // Image 3, pixel value index p = 4 (row 0, column 1, channel 1): (7*3 + 3*4) % 256 = 33.
    const value = batches[1].images[1 * 27 + 4];
    assert.equal(value, Math.fround((33 / 255 - 0.25) / 0.5));
  });

  test('bad pairs are clear errors', async () => {
    const grey = writePair('grey', 6, 4, 1, 4);
    await assert.rejects(openDataset({ name: 'idx', train: grey, test: rgb.test }), /test images are 3x3x3, train images 4x4x1/);
    await assert.rejects(openDataset({ name: 'idx', train: grey, test: grey, classes: 2 }), /label 2 of sample 2 is not a class 0-1/);
    await assert.rejects(openDataset({ name: 'idx', train: grey, test: grey, classNames: ['a'] }), /dataset\.classNames: 1 names for 4 classes/);
    await assert.rejects(openDataset({ name: 'idx', ...rgb, normalization: { mean: [0.1, 0.2], std: 1 } }), /dataset\.normalization: 2 values for 3-channel images/);
  });

  test('two independent loaders with one seed give bit-identical batches; another seed another order; resume is exact', async () => {
    const pair = writePair('many', 50, 4, 1, 5);
    const a = (await openDataset({ name: 'idx', train: pair, test: pair })).loader({ split: 'train', batchSize: 8, seed: 42 });
    const b = (await openDataset({ name: 'idx', train: pair, test: pair })).loader({ split: 'train', batchSize: 8, seed: 42 });
    const c = (await openDataset({ name: 'idx', train: pair, test: pair })).loader({ split: 'train', batchSize: 8, seed: 43 });
    const [ea, eb, ec] = [await all(a, 2), await all(b, 2), await all(c, 2)];
    assert.deepEqual(ea, eb);
    assert.notDeepEqual(
      ea.map((x) => Array.from(x.indices)),
      ec.map((x) => Array.from(x.indices)),
    );
    const epoch3 = await all(a, 3);
    // Stop after two batches of epoch 3, save, and resume in a fresh loader.
    let seen = 0;
    for await (const _ of b.epoch(3)) if (++seen === 2) break;
    const saved = b.state();
    assert.deepEqual(saved, { epoch: 3, batch: 2 });
    const resumed = (await openDataset({ name: 'idx', train: pair, test: pair })).loader({ split: 'train', batchSize: 8, seed: 42 });
    resumed.restore(saved);
    assert.deepEqual(await all(resumed, 3), epoch3.slice(2));
  });
});

describe('cross-quality downscale per worker', () => {
  test('a 28 -> 14 student sees the same samples as its teacher, each 2x2 block averaged; upsampled back it is 28x28 again', async () => {
    const pair = writePair('fm-like', 20, 28, 1, 10);
    const dataset = await openDataset({ name: 'idx', train: pair, test: pair, normalization: { mean: 0.5, std: 0.25 } });
    const teacher = await all(dataset.loader({ split: 'train', batchSize: 6, seed: 3 }));
    const student = await all(dataset.loader({ split: 'train', batchSize: 6, seed: 3, downscale: { size: 14, upsample: 'none' } }));
    const restored = await all(dataset.loader({ split: 'train', batchSize: 6, seed: 3, downscale: { size: 14, upsample: 'nearest' } }));
    assert.equal(student.length, teacher.length);
    for (let k = 0; k < teacher.length; k++) {
      const [t, s, r] = [teacher[k], student[k], restored[k]];
      assert.deepEqual(s.indices, t.indices);
      assert.deepEqual(s.labels, t.labels);
      assert.deepEqual(s.shape, [t.shape[0], 14, 14, 1]);
      assert.deepEqual(r.shape, t.shape);
      for (let i = 0; i < t.shape[0]; i++) {
        for (let y = 0; y < 14; y++) {
          for (let x = 0; x < 14; x++) {
            const at = (yy: number, xx: number) => t.images[i * 784 + yy * 28 + xx];
            const mean = (at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1)) / 4;
            const got = s.images[i * 196 + y * 14 + x];
            assert.ok(Math.abs(got - mean) < 1e-5, `image ${i} (${y}, ${x}): ${got} vs ${mean}`);
            assert.equal(r.images[i * 784 + (2 * y + 1) * 28 + 2 * x], got);
          }
        }
      }
    }
  });

  test('a downscale larger than the image is an error', async () => {
    const pair = writePair('small', 4, 8, 1, 2);
    const dataset = await openDataset({ name: 'idx', train: pair, test: pair });
    assert.throws(() => dataset.loader({ split: 'train', batchSize: 2, seed: 1, downscale: { size: 9, upsample: 'none' } }), /downscale size must be an integer in 1\.\.8, got 9/);
  });
});

describe('image-folder', () => {
  const folders = { train: join(root, 'images', 'train'), test: join(root, 'images', 'val'), odd: join(root, 'images', 'odd') };
  before(async () => {
    const random = mulberry32(5);
    for (const [split, count] of [
      ['train', 4],
      ['val', 2],
    ] as const) {
      for (const cls of ['n01', 'n02']) {
        const dir = join(root, 'images', split, cls);
        mkdirSync(dir, { recursive: true });
        for (let i = 0; i < count; i++) {
          const [w, h] = [40 + 7 * i, 33 + 5 * i];
          const raw = Buffer.from(Uint8Array.from({ length: w * h * 3 }, () => random() * 256));
          writeFileSync(
            join(dir, `${i}.JPEG`),
            await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
              .jpeg()
              .toBuffer(),
          );
        }
      }
    }
    mkdirSync(join(folders.odd, 'n01'), { recursive: true });
    writeFileSync(
      join(folders.odd, 'n01', 'a.png'),
      await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } })
        .png()
        .toBuffer(),
    );
  });

  test('train crops to `size`, test resizes and center-crops in folder order; class names from the folders', async () => {
    const dataset = await openDataset({ name: 'image-folder', train: folders.train, test: folders.test, size: 24, resize: 36, crop: 32, threads: 0 });
    assert.deepEqual(dataset.classNames, ['n01', 'n02']);
    const train = dataset.loader({ split: 'train', batchSize: 3, seed: 1 });
    const test = dataset.loader({ split: 'test', batchSize: 3, seed: 1, downscale: { size: 16, upsample: 'none' } });
    const [tb, vb] = [await all(train), await all(test)];
    assert.deepEqual(
      tb.map((b) => b.shape),
      [
        [3, 24, 24, 3],
        [3, 24, 24, 3],
        [2, 24, 24, 3],
      ],
    );
    assert.deepEqual(
      vb.flatMap((b) => Array.from(b.indices)),
      [0, 1, 2, 3],
    );
    assert.deepEqual(
      vb.flatMap((b) => Array.from(b.labels)),
      [0, 0, 1, 1],
    );
    assert.deepEqual(vb[0].shape, [3, 16, 16, 3]);
    await Promise.all([train.close(), test.close()]);
  });

  test('a test folder with other classes is an error', async () => {
    const dataset = await openDataset({ name: 'image-folder', train: folders.train, test: folders.odd, threads: 0 });
    assert.throws(() => dataset.loader({ split: 'test', batchSize: 2, seed: 1 }), /the class folders of .*odd differ from those of .*train/);
  });

  test('a consumer slower than the decode pool never waits after the first batch; a consumer that asks at once does', async () => {
    const options = { root: folders.train, batchSize: 2, seed: 1, transform: evalTransform({ resize: 36, crop: 32 }), threads: 1, prefetch: 3 };
    const slow = new ImageFolderLoader(options);
    for await (const _ of slow.epoch(0)) await sleep(300); // a "training step" far longer than decoding two small JPEGs
    assert.equal(slow.waits.batches, 4);
    assert.equal(slow.waits.stalls, 1, `stalls ${JSON.stringify(slow.waits)}`); // the first batch, requested before any decode finished
    await slow.close();
    const eager = new ImageFolderLoader({ ...options, prefetch: 1 });
    for await (const _ of eager.epoch(0));
    // With one batch in flight and no work between requests, the consumer waits for every batch.
    assert.ok(eager.waits.stalls >= 1 && eager.waits.stalledMs > 0, `stalls ${JSON.stringify(eager.waits)}`);
    await eager.close();
  });
});
