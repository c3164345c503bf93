/**
 * Expected Calibration Error (Naeini et al. 2015) with equal-width confidence bins, as a
 * histogram that accumulates over batches: per bin, the number of samples, of correct ones and
 * the sum of confidences, so that no prediction has to be kept.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CohortError } from '../errors.js';

export interface CalibrationBin {
  /** The bin is (lower, upper]: a sample with confidence c falls in the bin that holds c. */
  lower: number;
  upper: number;
  count: number;
  /** Fraction of the bin's samples whose prediction is right (NaN when empty). */
  accuracy: number;
  /** Mean confidence (max probability) of the bin's samples (NaN when empty). */
  confidence: number;
}

export interface CalibrationResult {
  /** sum over bins of |mean confidence - accuracy| * fraction of the samples in the bin. */
  ece: number;
  count: number;
  bins: CalibrationBin[];
}

/** Bin index of confidence c in (0, 1]: (lower, upper] intervals; c <= 0 goes to the first bin. */
export function binIndex(confidence: number, bins: number): number {
  return Math.min(bins - 1, Math.max(0, Math.ceil(confidence * bins) - 1));
}

export class CalibrationHistogram {
  private readonly counts: Float64Array;
  private readonly correct: Float64Array;
  private readonly confidenceSums: Float64Array;

  constructor(readonly bins = 15) {
    if (!Number.isInteger(bins) || bins < 1) throw new CohortError(`calibration: bins must be a positive integer, got ${bins}`, { code: 'INVALID_ARGUMENT' });
    this.counts = new Float64Array(bins);
    this.correct = new Float64Array(bins);
    this.confidenceSums = new Float64Array(bins);
  }

  /** Adds samples given by their confidence (max probability) and whether the prediction was right. */
  add(confidences: ArrayLike<number>, isCorrect: ArrayLike<number | boolean>): void {
    if (confidences.length !== isCorrect.length) {
      throw new CohortError(`calibration: ${confidences.length} confidences for ${isCorrect.length} outcomes`, { code: 'INVALID_ARGUMENT' });
    }
    for (let i = 0; i < confidences.length; i++) {
      const b = binIndex(confidences[i], this.bins);
      this.counts[b] += 1;
      this.correct[b] += isCorrect[i] ? 1 : 0;
      this.confidenceSums[b] += confidences[i];
    }
  }

  result(): CalibrationResult {
    const total = this.counts.reduce((a, b) => a + b, 0);
    let ece = 0;
    const bins: CalibrationBin[] = [];
    for (let b = 0; b < this.bins; b++) {
      const count = this.counts[b];
      const accuracy = count > 0 ? this.correct[b] / count : NaN;
      const confidence = count > 0 ? this.confidenceSums[b] / count : NaN;
      if (count > 0) ece += (Math.abs(confidence - accuracy) * count) / total;
      bins.push({ lower: b / this.bins, upper: (b + 1) / this.bins, count, accuracy, confidence });
    }
    return { ece, count: total, bins };
  }
}

/** Confidence (max probability) and correctness of each row of `probs` [B, C] against `labels` [B]. */
export async function confidenceAndCorrectness(probs: tf.Tensor2D, labels: tf.Tensor1D): Promise<{ confidence: Float32Array; correct: Int32Array }> {
  const [conf, hit] = tf.tidy(() => [tf.max(probs, 1), tf.cast(tf.equal(tf.argMax(probs, 1), tf.cast(labels, 'int32')), 'int32')]);
  const confidence = (await conf.data()) as Float32Array;
  const correct = (await hit.data()) as Int32Array;
  tf.dispose([conf, hit]);
  return { confidence, correct };
}

/**
 * ECE of one set of predictions: `probs` [B, C] probabilities, `labels` [B]; equal-width bins
 * over the maximum probability (default 15). Returns the ECE and every bin's count, accuracy
 * and mean confidence (for reliability diagrams).
 */
export async function expectedCalibrationError(probs: tf.Tensor2D, labels: tf.Tensor1D, options: { bins?: number } = {}): Promise<CalibrationResult> {
  const histogram = new CalibrationHistogram(options.bins ?? 15);
  const { confidence, correct } = await confidenceAndCorrectness(probs, labels);
  histogram.add(confidence, correct);
  return histogram.result();
}
