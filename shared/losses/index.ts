/** The distillation losses: pure functions, tfjs tensors in, scalar tensor out (batch mean). */
export { crossEntropy, type CrossEntropyOptions } from './cross-entropy.js';
export { kdLoss, ensembleTeacher, KD_DEFAULTS, type KdOptions, type EnsembleOptions } from './kd.js';
export { dmlLoss, dmlEnsembleLoss, dmlLossFromPeerSummary, summarizePeers, DML_DEFAULTS, type PeerSummary } from './dml.js';
export { tfKdVirtualLoss, virtualTeacher, TF_KD_VIRTUAL_DEFAULTS, type TfKdVirtualOptions } from './tf-kd.js';
export { byotLoss, BYOT_DEFAULTS, type ByotOptions } from './byot.js';
export { dkdLoss, DKD_DEFAULTS, type DkdOptions } from './dkd.js';
export { klDivergence, softmaxT, logSoftmaxT, logOf, stopGradient } from './primitives.js';
export type { DistillationOptions } from './options.js';
