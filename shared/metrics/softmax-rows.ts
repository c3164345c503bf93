/**
 * softmax(z / T) of logits held in a plain Float32Array, in float64 arithmetic, for the parts
 * of Cohort that work on received logits without a tensor backend (the coordinator, the
 * workers' running training metrics).
 */

/** softmax(z / T) of a [rows, classes] row-major matrix, and each row's sum_c p_c log p_c. */
export function softmaxRows(logits: Float32Array, classes: number, T: number): { probs: Float64Array; negEntropy: Float64Array } {
  const rows = logits.length / classes;
  const probs = new Float64Array(logits.length);
  const negEntropy = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c] / T);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[o + c] / T - max);
    const logSum = Math.log(sum);
    let ne = 0;
    for (let c = 0; c < classes; c++) {
      const logP = logits[o + c] / T - max - logSum;
      const p = Math.exp(logP);
      probs[o + c] = p;
      ne += p * logP;
    }
    negEntropy[r] = ne;
  }
  return { probs, negEntropy };
}
