/**
 * Cohort's public library API: the distillation losses and the metrics, pure functions on tfjs
 * tensors (the package root, `import { kdLoss } from 'cohort'`). The command line is cli.ts.
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
export { initBackend, type BackendChoice, type ActiveBackend } from './shared/engine/backend.js';
export { CohortError } from './shared/errors.js';
