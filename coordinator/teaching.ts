/**
 * The teaching signals the coordinator computes from one step's logits, in plain float64
 * arithmetic (no tensor backend in the coordinator). For DML each member gets one tensor, the
 * mean of its peers' probabilities softmax(z_j / T), plus the peers' mean negative entropy (the
 * scalar dmlLossFromPeerSummary needs for the loss value); DML_e uses the same mean as its
 * ensemble target. Leave-one-out means come from one sum over the cohort: O(K) not O(K^2).
 */
import { softmaxRows } from '../shared/metrics/softmax-rows.js';

export interface PeerTeaching {
  /** mean over peers j != i of softmax(z_j / T), [rows, classes], float32 for the wire. */
  meanProbs: Float32Array;
  /** Batch mean of the peers' mean sum_c p log p. */
  meanNegEntropy: number;
}

/** For each of K >= 2 members, the summary of its K - 1 peers' predictions at temperature T. */
export function leaveOneOutTeaching(logits: readonly Float32Array[], classes: number, T: number): PeerTeaching[] {
  const K = logits.length;
  if (K < 2) throw new Error(`leaveOneOutTeaching needs at least 2 members, got ${K}`);
  const each = logits.map((z) => softmaxRows(z, classes, T));
  const size = logits[0].length;
  const rows = size / classes;
  const sumProbs = new Float64Array(size);
  let sumNegEntropy = 0;
  for (const { probs, negEntropy } of each) {
    for (let k = 0; k < size; k++) sumProbs[k] += probs[k];
    for (let r = 0; r < rows; r++) sumNegEntropy += negEntropy[r];
  }
  return each.map(({ probs, negEntropy }) => {
    const meanProbs = new Float32Array(size);
    for (let k = 0; k < size; k++) meanProbs[k] = (sumProbs[k] - probs[k]) / (K - 1);
    let own = 0;
    for (let r = 0; r < rows; r++) own += negEntropy[r];
    return { meanProbs, meanNegEntropy: (sumNegEntropy - own) / (K - 1) / rows };
  });
}
