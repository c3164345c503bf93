/**
 * The data pipeline: datasets by name (`openDataset`), the batch sources they hand out, the
 * seeded sampler shared by a cohort, and the image transforms.
 */
export { openDataset, datasetSchema, downscaleSchema, type Dataset, type DatasetConfig, type DatasetName, type LoaderOptions } from './datasets.js';
export type { Batch, BatchSource, ImageDataset } from './source.js';
export { BatchSampler, epochOrder, sampleRandom, type SamplerState, type SamplerOptions } from './sampler.js';
export { ImageFolderLoader, type ImageFolderLoaderOptions, type LoaderWaits } from './image-loader.js';
export { MemoryLoader, type MemoryLoaderOptions } from './memory-loader.js';
export { trainTransform, evalTransform, IMAGENET_NORMALIZATION, type TransformSpec, type DownscaleSpec } from './transforms.js';
export { FASHION_MNIST_CLASSES, loadFashionMnist } from './fashion-mnist.js';
