/**
 * Cohort's public library API (the package root, `import { kdLoss } from 'cohort'`): the
 * distillation losses and the metrics (pure functions on tfjs tensors), the model zoo and the
 * data pipeline. The command line is cli.ts.
 */
export {
  crossEntropy,
  kdLoss,
  ensembleTeacher,
  dmlLoss,
  dmlLossFromPeerSummary,
  summarizePeers,
  dmlEnsembleLoss,
  tfKdVirtualLoss,
  virtualTeacher,
  byotLoss,
  klDivergence,
  stopGradient,
  type CrossEntropyOptions,
  type KdOptions,
  type EnsembleOptions,
  type PeerSummary,
  type TfKdVirtualOptions,
  type ByotOptions,
  type DistillationOptions,
} from './shared/losses/index.js';
export {
  topKAccuracy,
  negativeLogLikelihood,
  predictiveEntropy,
  expectedCalibrationError,
  MetricAccumulator,
  CalibrationHistogram,
  type MetricSummary,
  type CalibrationResult,
  type CalibrationBin,
} from './shared/metrics/index.js';
export {
  buildModel,
  exitModel,
  trainableParameterCount,
  describeModels,
  MODEL_NAMES,
  type ModelName,
  type ModelConfig,
  type CohortModel,
} from './shared/models/index.js';
export { loadTorchvisionWeights, TORCHVISION_MODELS } from './shared/models/torchvision-weights.js';
export {
  openDataset,
  ImageFolderLoader,
  MemoryLoader,
  BatchSampler,
  trainTransform,
  evalTransform,
  type Dataset,
  type DatasetConfig,
  type LoaderOptions,
  type Batch,
  type BatchSource,
  type SamplerState,
  type TransformSpec,
  type DownscaleSpec,
} from './shared/data/index.js';
export { initBackend, type BackendChoice, type ActiveBackend } from './shared/engine/backend.js';
export { CohortError } from './shared/errors.js';
