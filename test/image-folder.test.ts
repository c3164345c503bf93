/**
 * The image-folder pipeline on real files written with sharp: folder scanning, decoding with
 * crop / flip / EXIF orientation, exact normalisation, the loader's determinism across pools,
 * member seeds and resume, corrupt-file skipping, and the piscina worker path.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImage, RESIZE_KERNEL } from '../shared/data/decode-image.js';
import { scanImageFolder } from '../shared/data/image-folder.js';
import { ImageFolderLoader, type ImageFolderLoaderOptions } from '../shared/data/image-loader.js';
import type { Batch } from '../shared/data/source.js';
import { mulberry32, sampleRandom } from '../shared/data/sampler.js';
import { IMAGENET_NORMALIZATION, areaResize, evalTransform, randomResizedCropBox, resizeShorterCenterCropBox, trainTransform } from '../shared/data/transforms.js';
import { CohortError } from '../shared/errors.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-images-'));
after(() => rmSync(root, { recursive: true, force: true }));

const MIXED = join(root, 'mixed');
const SOLID = join(root, 'solid');
const COORDS = join(root, 'coords.png');
const ROTATED = join(root, 'rotated.jpg');
let coordsPixels: Buffer;
const UPRIGHT = join(root, 'upright.jpg');
/** Class folders in code-point order: upper case sorts before lower case. */
const CLASSES = ['Dog', 'ant', 'cat'];
const COLOURS: Record<string, [number, number, number]> = { blue: [12, 34, 250], grey: [128, 128, 128], orange: [255, 140, 0] };

function noise(width: number, height: number, channels: 1 | 3, seed: number): Buffer {
  const random = mulberry32(seed);
  const data = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) data[(y * width + x) * channels + c] = (x * 5 + y * 3 + c * 70 + random() * 60) & 255;
    }
  }
  return data;
}

const rawImage = (data: Buffer, width: number, height: number, channels: 1 | 3 | 4) => sharp(data, { raw: { width, height, channels } });

before(async () => {
  const sizes: [number, number][] = [
    [37, 53],
    [61, 29],
    [45, 45],
    [80, 33],
  ];
  for (const [k, name] of CLASSES.entries()) {
    const dir = join(MIXED, name);
    mkdirSync(dir, { recursive: true });
    for (const [i, [w, h]] of sizes.entries())
      writeFileSync(
        join(dir, `img${i}.jpg`),
        await rawImage(noise(w, h, 3, 10 * k + i), w, h, 3)
          .jpeg()
          .toBuffer(),
      );
  }
  // ant: a PNG with alpha; cat: a grey JPEG; Dog: random bytes named .JPEG; plus files that are not images.
  const rgba = Buffer.alloc(23 * 31 * 4, 200);
  writeFileSync(join(MIXED, 'ant', 'alpha.png'), await rawImage(rgba, 23, 31, 4).png().toBuffer());
  writeFileSync(
    join(MIXED, 'cat', 'grey.JPG'),
    await rawImage(noise(41, 27, 1, 99), 41, 27, 1)
      .jpeg()
      .toBuffer(),
  );
  const random = mulberry32(7);
  writeFileSync(
    join(MIXED, 'Dog', 'x.JPEG'),
    Uint8Array.from({ length: 2000 }, () => random() * 256),
  );
  writeFileSync(join(MIXED, 'Dog', 'notes.txt'), 'not an image');
  writeFileSync(join(MIXED, 'cat', '.hidden.jpg'), 'ignored');
  writeFileSync(join(MIXED, 'README'), 'a file at the root is not a class');

  for (const [name, [r, g, b]] of Object.entries(COLOURS)) {
    mkdirSync(join(SOLID, name), { recursive: true });
    for (const [w, h] of [
      [37, 53],
      [300, 41],
      [64, 64],
    ]) {
      const create = { width: w, height: h, channels: 3 as const, background: { r, g, b } };
      writeFileSync(join(SOLID, name, `${w}x${h}.png`), await sharp({ create }).png().toBuffer());
    }
  }

  // R = x, G = y: every decoded pixel says where in the source it came from.
  const [W, H] = [250, 200];
  const coords = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) coords.set([x, y, 128], (y * W + x) * 3);
  writeFileSync(COORDS, await rawImage(coords, W, H, 3).png().toBuffer());
  coordsPixels = coords;
  // EXIF orientation 6 means "rotate 90 degrees clockwise to display".
  const jpeg = noise(90, 60, 3, 5);
  writeFileSync(ROTATED, await rawImage(jpeg, 90, 60, 3).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer());
  writeFileSync(UPRIGHT, await rawImage(jpeg, 90, 60, 3).rotate(90).jpeg({ quality: 95 }).toBuffer());
});

async function collect(options: ImageFolderLoaderOptions, epochs: number[] = [0]): Promise<{ batches: Batch[]; warnings: string[]; skipped: number }> {
  const warnings: string[] = [];
  const loader = new ImageFolderLoader({ warn: (line) => warnings.push(line), ...options });
  const batches: Batch[] = [];
  try {
    for (const e of epochs) for await (const batch of loader.epoch(e)) batches.push(batch);
  } finally {
    await loader.close();
  }
  return { batches, warnings, skipped: loader.skipped };
}

const small = trainTransform({ size: 32 });
const base = { root: MIXED, batchSize: 4, seed: 21, transform: small } satisfies ImageFolderLoaderOptions;

test('the folder: classes in code-point order, files sorted, only .jpeg/.jpg/.png in any case', () => {
  const folder = scanImageFolder(MIXED);
  assert.deepEqual(folder.classes, CLASSES);
  const names = folder.samples.map((s) => `${folder.classes[s.label]}/${s.path.slice(MIXED.length + 1).split('/')[1]}`);
  assert.deepEqual(names, [
    'Dog/img0.jpg',
    'Dog/img1.jpg',
    'Dog/img2.jpg',
    'Dog/img3.jpg',
    'Dog/x.JPEG',
    'ant/alpha.png',
    'ant/img0.jpg',
    'ant/img1.jpg',
    'ant/img2.jpg',
    'ant/img3.jpg',
    'cat/grey.JPG',
    'cat/img0.jpg',
    'cat/img1.jpg',
    'cat/img2.jpg',
    'cat/img3.jpg',
  ]);
  for (const s of folder.samples) assert.ok(s.path.startsWith(join(MIXED, folder.classes[s.label])));
});

test('a missing root, an empty root and a class without images are CohortErrors naming the path', () => {
  const missing = join(root, 'nope');
  assert.throws(
    () => scanImageFolder(missing),
    (e: Error) => e instanceof CohortError && e.message.includes(missing),
  );
  const empty = join(root, 'empty');
  mkdirSync(empty);
  assert.throws(
    () => scanImageFolder(empty),
    (e: Error) => e instanceof CohortError && e.message.includes(empty),
  );
  const noImages = join(root, 'no-images');
  mkdirSync(join(noImages, 'cls'), { recursive: true });
  writeFileSync(join(noImages, 'cls', 'a.txt'), 'x');
  assert.throws(
    () => scanImageFolder(noImages),
    (e: Error) => e instanceof CohortError && e.message.includes(join(noImages, 'cls')),
  );
  assert.throws(
    () => scanImageFolder(COORDS),
    (e: Error) => e instanceof CohortError && e.message.includes(COORDS),
  );
  assert.throws(() => new ImageFolderLoader({ ...base, root: missing }), CohortError);
});

test('train decode: crop from randomResizedCropBox on sampleRandom(seed, epoch, index, member), flip on the next draw', async () => {
  const spec = trainTransform({ size: 64 });
  const flips = new Set<boolean>();
  for (let index = 0; index < 16; index++) {
    const key = { seed: 3, epoch: 1, index, memberSeed: 2 };
    const result = await decodeImage(COORDS, key, spec);
    assert.ok(result.ok);
    const random = sampleRandom(3, 1, index, 2);
    const box = randomResizedCropBox(250, 200, random, spec);
    const flip = random() < 0.5;
    assert.deepEqual(result.box, box);
    assert.equal(result.flipped, flip);
    flips.add(flip);
    // Reference: crop the decoded source in JS, resize that alone with the same kernel, mirror in JS.
    const crop = Buffer.alloc(box.width * box.height * 3);
    for (let y = 0; y < box.height; y++) {
      const from = ((box.top + y) * 250 + box.left) * 3;
      coordsPixels.copy(crop, y * box.width * 3, from, from + box.width * 3);
    }
    const resized = await rawImage(crop, box.width, box.height, 3).resize(64, 64, { fit: 'fill', kernel: RESIZE_KERNEL }).raw().toBuffer();
    const expected = new Uint8Array(64 * 64 * 3);
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 64; x++) expected.set(resized.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3), (y * 64 + (flip ? 63 - x : x)) * 3);
    }
    assert.deepEqual(result.pixels, expected, `sample ${index}`);
    // and the picture is the right part of the source: R = x runs left to right (right to left when flipped)
    const row = Array.from({ length: 64 }, (_, o) => result.pixels[(32 * 64 + o) * 3]);
    assert.deepEqual(
      row,
      [...row].sort((p, q) => (flip ? q - p : p - q)),
      `row of sample ${index} runs the right way`,
    );
    assert.ok(Math.min(...row) >= box.left - 1 && Math.max(...row) <= box.left + box.width, `row of sample ${index} inside the box`);
  }
  assert.equal(flips.size, 2, 'both flipped and unflipped samples');
});

test('eval decode: the centre crop of the whole image resized, the same for every seed and epoch', async () => {
  const spec = evalTransform({ resize: 80, crop: 64 });
  const a = await decodeImage(COORDS, { seed: 1, epoch: 0, index: 0, memberSeed: 0 }, spec);
  const b = await decodeImage(COORDS, { seed: 9, epoch: 4, index: 3, memberSeed: 5 }, spec);
  assert.ok(a.ok && b.ok);
  assert.deepEqual(a.pixels, b.pixels);
  const { resized, crop } = resizeShorterCenterCropBox(250, 200, spec);
  assert.deepEqual(resized, { width: 100, height: 80 });
  const full = await sharp(COORDS).resize(resized.width, resized.height, { fit: 'fill', kernel: RESIZE_KERNEL }).raw().toBuffer();
  const expected = new Uint8Array(64 * 64 * 3);
  for (let y = 0; y < 64; y++) expected.set(full.subarray(((crop.top + y) * 100 + crop.left) * 3, ((crop.top + y) * 100 + crop.left + 64) * 3), y * 64 * 3);
  assert.deepEqual(a.pixels, expected);
});

test('EXIF orientation is applied before the crop; grey and alpha images come out as 3-channel RGB', async () => {
  const key = { seed: 4, epoch: 0, index: 7, memberSeed: 0 };
  for (const spec of [trainTransform({ size: 40 }), evalTransform({ resize: 48, crop: 40 })]) {
    const rotated = await decodeImage(ROTATED, key, spec);
    const upright = await decodeImage(UPRIGHT, key, spec);
    assert.ok(rotated.ok && upright.ok);
    assert.deepEqual(rotated.box, upright.box);
    // both are the same 60x90 picture; allow for the two JPEG encodings differing slightly
    let diff = 0;
    for (let i = 0; i < rotated.pixels.length; i++) diff = Math.max(diff, Math.abs(rotated.pixels[i] - upright.pixels[i]));
    assert.ok(diff <= 24, `max difference ${diff}`);
  }
  const grey = await decodeImage(join(MIXED, 'cat', 'grey.JPG'), key, trainTransform({ size: 20 }));
  assert.ok(grey.ok);
  assert.equal(grey.pixels.length, 20 * 20 * 3);
  for (let p = 0; p < 400; p++) assert.ok(grey.pixels[3 * p] === grey.pixels[3 * p + 1] && grey.pixels[3 * p] === grey.pixels[3 * p + 2]);
  const alpha = await decodeImage(join(MIXED, 'ant', 'alpha.png'), key, evalTransform({ resize: 24, crop: 20 }));
  assert.ok(alpha.ok);
  assert.deepEqual(new Set(alpha.pixels), new Set([200]));
  const bad = await decodeImage(join(MIXED, 'Dog', 'x.JPEG'), key, small);
  assert.ok(!bad.ok && bad.path.endsWith('x.JPEG') && bad.reason.length > 0);
  const gone = await decodeImage(join(root, 'missing.jpg'), key, small);
  assert.ok(!gone.ok && /cannot read/.test(gone.reason));
});

test('a solid colour normalises to exactly (v / 255 - mean) / std after any crop and resize', async () => {
  const folder = scanImageFolder(SOLID);
  const { mean, std } = IMAGENET_NORMALIZATION;
  for (const transform of [trainTransform({ size: 24 }), evalTransform({ resize: 28, crop: 24 })]) {
    const { batches } = await collect({ root: SOLID, batchSize: 4, seed: 5, transform, threads: 1 });
    let images = 0;
    for (const batch of batches) {
      assert.deepEqual(batch.shape, [batch.indices.length, 24, 24, 3]);
      for (let i = 0; i < batch.indices.length; i++) {
        const rgb = COLOURS[folder.classes[batch.labels[i]]];
        const expected = rgb.map((v, c) => Math.fround((v / 255 - mean[c]) / std[c]));
        const image = batch.images.subarray(i * 24 * 24 * 3, (i + 1) * 24 * 24 * 3);
        for (let p = 0; p < image.length; p++) assert.equal(image[p], expected[p % 3], `${transform.kind} image ${batch.indices[i]} value ${p}`);
        images++;
      }
    }
    assert.equal(images, 9);
  }
});

test('batches: shapes, labels from the folder, every good sample once; the corrupt file is skipped, warned once and counted', async () => {
  const folder = scanImageFolder(MIXED);
  const corrupt = folder.samples.findIndex((s) => s.path.endsWith('x.JPEG'));
  const { batches, warnings, skipped } = await collect({ ...base, threads: 2 }, [0, 1]);
  assert.equal(batches.length, 8); // ceil(15 / 4) per epoch
  for (const epoch of [0, 1]) {
    const mine = batches.filter((b) => b.epoch === epoch);
    assert.deepEqual(
      mine.map((b) => b.batch),
      [0, 1, 2, 3],
    );
    const seen = mine.flatMap((b) => Array.from(b.indices)).sort((a, b) => a - b);
    assert.deepEqual(
      seen,
      folder.samples.map((_, i) => i).filter((i) => i !== corrupt),
    );
  }
  for (const b of batches) {
    const n = b.indices.length;
    assert.deepEqual(b.shape, [n, 32, 32, 3]);
    assert.equal(b.images.length, n * 32 * 32 * 3);
    assert.deepEqual(
      Array.from(b.labels),
      Array.from(b.indices, (i) => folder.samples[i].label),
    );
    assert.ok(b.images.every(Number.isFinite));
  }
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0].includes(folder.samples[corrupt].path), warnings[0]);
  assert.equal(skipped, 2); // once per epoch
});

test('two loaders with separate pools give bit-identical batches; main thread and pool agree', async () => {
  const a = await collect({ ...base, threads: 1 }, [0, 1]);
  const b = await collect({ ...base, threads: 1, prefetch: 1 }, [0, 1]);
  const c = await collect({ ...base, threads: 0 }, [0, 1]);
  assert.deepEqual(b.batches, a.batches);
  assert.deepEqual(c.batches, a.batches);
  // epochs differ in order and in crops
  assert.notDeepEqual(Array.from(a.batches[0].indices), Array.from(a.batches[4].indices));
});

test('another member seed: the same batches and labels, other crops and flips', async () => {
  const a = await collect({ ...base, threads: 1 });
  const b = await collect({ ...base, threads: 1, memberSeed: 1 });
  assert.equal(a.batches.length, b.batches.length);
  for (let i = 0; i < a.batches.length; i++) {
    assert.deepEqual(b.batches[i].indices, a.batches[i].indices);
    assert.deepEqual(b.batches[i].labels, a.batches[i].labels);
    assert.notDeepEqual(b.batches[i].images, a.batches[i].images);
  }
});

test('eval batches do not depend on the member seed or the epoch', async () => {
  const transform = evalTransform({ resize: 36, crop: 32 });
  const byIndex = (batches: Batch[]) => {
    const map = new Map<number, Float32Array>();
    for (const b of batches) b.indices.forEach((index, i) => map.set(index, b.images.slice(i * 32 * 32 * 3, (i + 1) * 32 * 32 * 3)));
    return map;
  };
  const a = byIndex((await collect({ ...base, transform, threads: 1 })).batches);
  const b = byIndex((await collect({ ...base, transform, threads: 0, memberSeed: 3 }, [2])).batches);
  assert.equal(a.size, 14);
  assert.deepEqual(b, a);
});

test('resume: a restored loader yields exactly the batches the uninterrupted run saw', async () => {
  const straight = await collect({ ...base, threads: 1 }, [0, 1]);
  const first = new ImageFolderLoader({ ...base, threads: 1, warn: () => {} });
  let taken = 0;
  for await (const batch of first.epoch(0)) {
    assert.deepEqual(batch, straight.batches[taken]);
    if (++taken === 2) break; // with prefetch, later batches were already in flight
  }
  const saved = JSON.parse(JSON.stringify(first.state()));
  assert.deepEqual(saved, { epoch: 0, batch: 2 });
  await first.close();
  const resumed = new ImageFolderLoader({ ...base, threads: 1, warn: () => {} });
  resumed.restore(saved);
  const rest: Batch[] = [];
  for (const e of [0, 1]) for await (const batch of resumed.epoch(e)) rest.push(batch);
  await resumed.close();
  assert.deepEqual(rest, straight.batches.slice(2));
  assert.deepEqual(resumed.state(), { epoch: 1, batch: 4 });
});

test('downscale for cross-quality KD: the area average of the full-resolution batch', async () => {
  const full = await collect({ ...base, threads: 1 });
  const low = await collect({ ...base, threads: 1, transform: { ...small, downscale: { size: 8, upsample: 'none' } } });
  for (let b = 0; b < full.batches.length; b++) {
    const hi = full.batches[b];
    const lo = low.batches[b];
    assert.deepEqual(lo.indices, hi.indices);
    assert.deepEqual(lo.shape, [hi.indices.length, 8, 8, 3]);
    for (let i = 0; i < hi.indices.length; i++) {
      const expected = areaResize(hi.images.subarray(i * 3072, (i + 1) * 3072), 32, 32, 3, 8, 8);
      assert.deepEqual(lo.images.subarray(i * 192, (i + 1) * 192), expected);
    }
  }
  const up = await collect({ ...base, threads: 0, transform: { ...small, downscale: { size: 16, upsample: 'bilinear' } } });
  assert.deepEqual(up.batches[0].shape, [4, 32, 32, 3]);
});

test('loader options are checked', () => {
  assert.throws(() => new ImageFolderLoader({ ...base, threads: -1 }), /threads/);
  assert.throws(() => new ImageFolderLoader({ ...base, prefetch: 0 }), /prefetch/);
  assert.throws(() => new ImageFolderLoader({ ...base, transform: trainTransform({ scale: [1, 0.5] }) }), /scale/);
  assert.throws(() => new ImageFolderLoader({ ...base, batchSize: 0, threads: 0 }), /batchSize/);
});
