/** The distillation losses: pure functions, tfjs tensors in, scalar tensor out (batch mean). */
export { crossEntropy, type CrossEntropyOptions } from './cross-entropy.js';
export { kdLoss, ensembleTeacher, type KdOptions, type EnsembleOptions } from './kd.js';
export { dmlLoss, dmlEnsembleLoss, dmlLossFromPeerSummary, summarizePeers, type PeerSummary } from './dml.js';
export { tfKdVirtualLoss, virtualTeacher, type TfKdVirtualOptions } from './tf-kd.js';
export { byotLoss, type ByotOptions } from './byot.js';
export { klDivergence, softmaxT, logSoftmaxT, logOf, stopGradient } from './primitives.js';
export type { DistillationOptions } from './options.js';
