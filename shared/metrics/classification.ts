/**
 * Per-batch classification metrics as tensors (batch means), and an accumulator that sums them
 * over batches: top-1 / top-k accuracy, negative log-likelihood, mean predictive entropy and
 * calibration, without keeping any prediction.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CohortError } from '../errors.js';
import { logSoftmaxT } from '../losses/primitives.js';
import { CalibrationHistogram, confidenceAndCorrectness, type CalibrationResult } from './calibration.js';

/** Fraction of rows whose label is among the k largest logits. */
export function topKAccuracy(logits: tf.Tensor2D, labels: tf.Tensor1D, k = 1): tf.Scalar {
  if (!Number.isInteger(k) || k < 1 || k > logits.shape[1]) {
    throw new CohortError(`topKAccuracy: k must be an integer in 1..${logits.shape[1]}, got ${k}`, { code: 'INVALID_ARGUMENT' });
  }
  return tf.tidy(() => {
    if (k === 1) return tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), tf.cast(labels, 'int32')), 'float32')) as tf.Scalar;
    const { indices } = tf.topk(logits, k);
    const hits = tf.equal(indices, tf.reshape(tf.cast(labels, 'int32'), [-1, 1]));
    return tf.mean(tf.max(tf.cast(hits, 'float32'), 1)) as tf.Scalar;
  });
}

/** Batch mean of -log softmax(z)_y (the cross-entropy without smoothing). */
export function negativeLogLikelihood(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const picked = tf.sum(tf.mul(logSoftmaxT(logits), tf.oneHot(tf.cast(labels, 'int32'), logits.shape[1])), 1);
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}

/** Batch mean of the entropy -sum_c p_c log p_c of softmax(z). */
export function predictiveEntropy(logits: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const logP = logSoftmaxT(logits);
    return tf.neg(tf.mean(tf.sum(tf.mul(tf.exp(logP), logP), 1))) as tf.Scalar;
  });
}

export interface MetricSummary {
  count: number;
  accuracy: number;
  /** Top-k accuracy for the k asked for. */
  topK: Record<number, number>;
  nll: number;
  entropy: number;
  calibration: CalibrationResult;
}

/** Sums the metrics of successive batches of logits; `result()` gives their dataset means. */
export class MetricAccumulator {
  private count = 0;
  private nllSum = 0;
  private entropySum = 0;
  private readonly topKHits = new Map<number, number>();
  private readonly histogram: CalibrationHistogram;

  constructor(private readonly options: { bins?: number; topK?: number[] } = {}) {
    this.histogram = new CalibrationHistogram(options.bins ?? 15);
  }

  async add(logits: tf.Tensor2D, labels: tf.Tensor1D): Promise<void> {
    const batch = logits.shape[0];
    if (labels.shape[0] !== batch) throw new CohortError(`metrics: ${batch} predictions for ${labels.shape[0]} labels`, { code: 'INVALID_ARGUMENT' });
    const ks = (this.options.topK ?? []).filter((k) => k <= logits.shape[1]);
    const scalars = tf.tidy(() => [negativeLogLikelihood(logits, labels), predictiveEntropy(logits), ...ks.map((k) => topKAccuracy(logits, labels, k))]);
    const values = await Promise.all(scalars.map(async (s) => (await s.data())[0]));
    tf.dispose(scalars);
    this.nllSum += values[0] * batch;
    this.entropySum += values[1] * batch;
    ks.forEach((k, i) => this.topKHits.set(k, (this.topKHits.get(k) ?? 0) + values[2 + i] * batch));
    const probs = tf.softmax(logits) as tf.Tensor2D;
    const { confidence, correct } = await confidenceAndCorrectness(probs, labels);
    probs.dispose();
    this.histogram.add(confidence, correct);
    this.count += batch;
  }

  result(): MetricSummary {
    const calibration = this.histogram.result();
    const correct = calibration.bins.reduce((sum, b) => sum + (b.count > 0 ? b.accuracy * b.count : 0), 0);
    const topK: Record<number, number> = {};
    for (const [k, hits] of this.topKHits) topK[k] = hits / this.count;
    return {
      count: this.count,
      accuracy: correct / this.count,
      topK,
      nll: this.nllSum / this.count,
      entropy: this.entropySum / this.count,
      calibration,
    };
  }
}
