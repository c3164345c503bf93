/**
 * The teaching signals the coordinator builds from one step's predictions. Workers send their
 * probabilities at the run's temperature, p_i = softmax(z_i / T), and their batch-mean negative
 * entropy; the coordinator only averages. For DML each member gets one tensor, the mean of its
 * peers' probabilities, plus the peers' mean negative entropy (the scalar
 * dmlLossFromPeerSummary needs for the loss value); DML_e uses the same mean as its ensemble
 * target; KD students get the teachers' mean. Sums accumulate as predictions arrive, so when the
 * last member's arrive only the leave-one-out subtractions remain: O(K) work, not O(K^2).
 */

export interface PeerTeaching {
  /** mean over peers j != i of p_j, [rows, classes], float32 for the wire. */
  meanProbs: Float32Array;
  /** The peers' mean of their batch-mean negative entropies. */
  meanNegEntropy: number;
}

/** Running sums of the predictions of one step. */
export class PredictionSums {
  readonly sum: Float64Array;
  negEntropySum = 0;
  count = 0;

  constructor(readonly size: number, reuse?: Float64Array) {
    this.sum = reuse?.length === size ? reuse.fill(0) : new Float64Array(size);
  }

  add(probs: Float32Array, negEntropy: number): void {
    const { sum, size } = this;
    if (probs.length !== size) throw new Error(`predictions of ${probs.length} values, expected ${size}`);
    for (let k = 0; k < size; k++) sum[k] += probs[k];
    this.negEntropySum += negEntropy;
    this.count++;
  }

  /** The mean of all predictions added (a teacher ensemble). */
  mean(): Float32Array {
    const { sum, size, count } = this;
    const out = new Float32Array(size);
    for (let k = 0; k < size; k++) out[k] = sum[k] / count;
    return out;
  }

  /** The mean of every prediction added except `probs` (which was added): member i's peers. */
  leaveOneOut(probs: Float32Array, negEntropy: number): PeerTeaching {
    if (this.count < 2) throw new Error(`a leave-one-out mean needs at least 2 members, got ${this.count}`);
    const { sum, size } = this;
    const meanProbs = new Float32Array(size);
    const scale = 1 / (this.count - 1);
    for (let k = 0; k < size; k++) meanProbs[k] = (sum[k] - probs[k]) * scale;
    return { meanProbs, meanNegEntropy: (this.negEntropySum - negEntropy) * scale };
  }
}

/** For each of K >= 2 members, the summary of its K - 1 peers' predictions. */
export function leaveOneOutTeaching(probs: readonly Float32Array[], negEntropies: readonly number[]): PeerTeaching[] {
  if (probs.length < 2) throw new Error(`leaveOneOutTeaching needs at least 2 members, got ${probs.length}`);
  const sums = new PredictionSums(probs[0].length);
  probs.forEach((p, i) => sums.add(p, negEntropies[i]));
  return probs.map((p, i) => sums.leaveOneOut(p, negEntropies[i]));
}
