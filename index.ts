/**
 * Cohort's public library API (the package root, `import { kdLoss } from 'cohort'`): the
 * distillation losses and the metrics (pure functions on tfjs tensors), the model zoo and the
 * data pipeline. The command line is cli.ts.
 *
 * It works with no setup: importing it registers tfjs's pure-JavaScript cpu backend, which tfjs
 * starts on the first tensor operation when no other backend is set. `await initBackend(...)`
 * chooses a faster one (wasm, libtensorflow); a backend the caller registers (tfjs-node) takes
 * precedence over the cpu one by tfjs's priorities.
 */
import '@tensorflow/tfjs-backend-cpu';

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
  dkdLoss,
  klDivergence,
  stopGradient,
  type CrossEntropyOptions,
  type KdOptions,
  type EnsembleOptions,
  type PeerSummary,
  type TfKdVirtualOptions,
  type ByotOptions,
  type DkdOptions,
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
export { buildModel, exitModel, trainableParameterCount, describeModels, MODEL_NAMES, type ModelName, type ModelConfig, type CohortModel } from './shared/models/index.js';
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
export { CohortError, ERROR_CODES, type ErrorCode, type CohortErrorOptions } from './shared/errors.js';
