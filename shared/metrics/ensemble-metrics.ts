/**
 * Accuracy, NLL and ECE (15 bins) of the mean of one or more models' probabilities, from logits
 * held in plain Float32Arrays, accumulated batch by batch without keeping any prediction: the
 * cohort ensemble's test metrics in the coordinator, and a worker's running training-batch
 * metrics (one model).
 */
import { CalibrationHistogram, type CalibrationBin } from './calibration.js';
import { softmaxRows } from './softmax-rows.js';

export class EnsembleMetrics {
  private count = 0;
  private correct = 0;
  private nllSum = 0;
  private readonly calibration = new CalibrationHistogram(15);

  /** One batch: every model's [rows, classes] logits for the same samples, and their labels. */
  add(memberLogits: readonly Float32Array[], labels: ArrayLike<number>, classes: number): void {
    const rows = labels.length;
    const mean = new Float64Array(rows * classes);
    for (const z of memberLogits) {
      const { probs } = softmaxRows(z, classes, 1);
      for (let k = 0; k < mean.length; k++) mean[k] += probs[k] / memberLogits.length;
    }
    const confidences = new Float64Array(rows);
    const hits = new Uint8Array(rows);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (mean[r * classes + c] > mean[r * classes + best]) best = c;
      confidences[r] = mean[r * classes + best];
      hits[r] = best === labels[r] ? 1 : 0;
      this.correct += hits[r];
      this.nllSum -= Math.log(Math.max(mean[r * classes + labels[r]], 1e-45));
    }
    this.calibration.add(confidences, hits);
    this.count += rows;
  }

  result(): { accuracy: number; nll: number; ece: number; count: number; bins: CalibrationBin[] } {
    const calibration = this.calibration.result();
    return { accuracy: this.correct / this.count, nll: this.nllSum / this.count, ece: calibration.ece, count: this.count, bins: calibration.bins };
  }
}
