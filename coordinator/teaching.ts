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

  /** `reuse`: a sum buffer of an earlier step (its contents are overwritten by the first add). */
  constructor(readonly size: number, reuse?: Float64Array) {
    this.sum = reuse?.length === size ? reuse : new Float64Array(size);
  }

  add(probs: Float32Array, negEntropy: number): void {
    const { sum, size } = this;
    if (probs.length !== size) throw new Error(`predictions of ${probs.length} values, expected ${size}`);
    // The first predictions are written, not added: no zeroing pass and one read less (0 + p, bit for bit).
    if (this.count === 0) for (let k = 0; k < size; k++) sum[k] = 0 + probs[k];
    else for (let k = 0; k < size; k++) sum[k] += probs[k];
    this.negEntropySum += negEntropy;
    this.count++;
  }

  /** The mean of all predictions added (a teacher ensemble); NaN before any. */
  mean(): Float32Array {
    const { sum, size, count } = this;
    const out = new Float32Array(size);
    if (count === 0) return out.fill(NaN);
    for (let k = 0; k < size; k++) out[k] = sum[k] / count;
    return out;
  }

  /**
   * The mean of every prediction added except `probs` (which was added): member i's peers.
   * Written to `out` when given, which may be `probs` itself (each value is read before it is
   * overwritten): a coordinator that no longer needs a member's predictions can send them back
   * as its teaching signal without allocating (on a machine where fresh memory is expensive,
   * 1 MB of new pages costs milliseconds).
   */
  leaveOneOut(probs: Float32Array, negEntropy: number, out?: Float32Array): PeerTeaching {
    if (this.count < 2) throw new Error(`a leave-one-out mean needs at least 2 members, got ${this.count}`);
    const { sum, size } = this;
    if (probs.length !== size) throw new Error(`predictions of ${probs.length} values, expected ${size}`);
    if (out !== undefined && out.length !== size) throw new Error(`an output of ${out.length} values for a leave-one-out mean of ${size}`);
    const meanProbs = out ?? new Float32Array(size);
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
