/**
 * Deep Mutual Learning (Zhang et al. 2018) and its ensemble-target variant DML_e, in the form of
 * distillistic (the thesis code Cohort follows): peers detached, updates simultaneous.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CohortError } from '../errors.js';
import { crossEntropy } from './cross-entropy.js';
import { distillationOptions, type DistillationOptions } from './options.js';
import { blend, klDivergence, logOf, logSoftmaxT, negativeEntropy, softmaxT, stopGradient, temper } from './primitives.js';

/** The original DML's CE + KL, scaled by 1/2 (and `algorithm: dml`'s and `dml_e`'s defaults). */
export const DML_DEFAULTS = { T: 1, alpha: 0.5 } as const;

function requirePeers(peers: tf.Tensor2D[], where: string): void {
  if (peers.length === 0) throw new CohortError(`${where}: needs at least one peer`, { code: 'INVALID_ARGUMENT' });
}

/**
 * (1 - alpha) * CE + alpha * (1 / (K - 1)) * sum_j T^2 * KL(p_j || p_member), p = softmax(z / T),
 * over the K - 1 peers j (detached). Defaults T = 1, alpha = 0.5 (the original DML's CE + KL,
 * scaled by 1/2).
 */
export function dmlLoss(member: tf.Tensor2D, peers: tf.Tensor2D[], labels: tf.Tensor1D, options: DistillationOptions = {}): tf.Scalar {
  requirePeers(peers, 'dmlLoss');
  const { T, alpha } = distillationOptions(options, 'dmlLoss', DML_DEFAULTS);
  return tf.tidy(() => {
    const student = temper(member, T);
    const kl = tf.addN(peers.map((z) => klDivergence(temper(z, T), student))); // peers detached by klDivergence
    return blend(crossEntropy(member, labels), tf.div(kl, peers.length) as tf.Scalar, alpha, T);
  });
}

/** What a member needs of its peers for dmlLoss: one tensor and one number instead of K - 1 tensors. */
export interface PeerSummary {
  /** mean_j softmax(z_j / T), [B, C]. */
  meanProbs: tf.Tensor2D;
  /** Batch mean of mean_j sum_c p_jc log p_jc (the peers' mean negative entropy). */
  meanNegEntropy: number;
}

/** The PeerSummary of `peers` at temperature T (computed where the peers' logits meet: the coordinator). */
export async function summarizePeers(peers: tf.Tensor2D[], T = 1): Promise<PeerSummary> {
  requirePeers(peers, 'summarizePeers');
  const [meanProbs, negEntropy] = tf.tidy(() => {
    const probs = peers.map((z) => softmaxT(z, T));
    const mean = tf.div(tf.addN(probs), peers.length) as tf.Tensor2D;
    const ne = tf.div(tf.mean(tf.addN(probs.map((p) => negativeEntropy(p)))), peers.length);
    return [mean, ne] as const;
  });
  const meanNegEntropy = (await negEntropy.data())[0];
  negEntropy.dispose();
  return { meanProbs, meanNegEntropy };
}

/**
 * dmlLoss from the peers' PeerSummary. Since sum_c p_j log q is linear in p_j,
 * (1 / (K - 1)) sum_j KL(p_j || q) = meanNegEntropy - mean_b sum_c pbar_c log q_c,
 * so the value and the gradient equal dmlLoss's (the entropy term is a constant).
 */
export function dmlLossFromPeerSummary(member: tf.Tensor2D, peers: PeerSummary, labels: tf.Tensor1D, options: DistillationOptions = {}): tf.Scalar {
  const { T, alpha } = distillationOptions(options, 'dmlLossFromPeerSummary', DML_DEFAULTS);
  return tf.tidy(() => {
    const logQ = logSoftmaxT(member, T);
    const crossTerm = tf.mean(tf.sum(tf.mul(stopGradient(peers.meanProbs), logQ), 1));
    const kl = tf.sub(peers.meanNegEntropy, crossTerm) as tf.Scalar;
    return blend(crossEntropy(member, labels), kl, alpha, T);
  });
}

/**
 * DML_e: (1 - alpha) * CE + alpha * T^2 * KL(mean_j p_j || p_member), p = softmax(z / T), the
 * peers' probabilities averaged and detached. Defaults T = 1, alpha = 0.5.
 */
export function dmlEnsembleLoss(member: tf.Tensor2D, peers: tf.Tensor2D[], labels: tf.Tensor1D, options: DistillationOptions = {}): tf.Scalar {
  requirePeers(peers, 'dmlEnsembleLoss');
  const { T, alpha } = distillationOptions(options, 'dmlEnsembleLoss', DML_DEFAULTS);
  return tf.tidy(() => {
    const target = logOf(tf.div(tf.addN(peers.map((z) => softmaxT(z, T))), peers.length) as tf.Tensor2D); // detached by klDivergence
    return blend(crossEntropy(member, labels), klDivergence(target, temper(member, T)), alpha, T);
  });
}
