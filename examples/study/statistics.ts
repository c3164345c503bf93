/**
 * The study's numbers from a run's evaluation records: final and best test accuracy, the
 * fluctuation of the evaluations after warm-up (what "instability during training" can be read
 * from), and paired differences over seeds with their 95% intervals (Student's t, n - 1 degrees
 * of freedom).
 */
export interface Evaluation {
  worker: string;
  epoch: number;
  /** A mid-epoch evaluation's steps done (evalEverySteps); absent at an epoch's end. */
  step?: number;
  accuracy: number;
}

/** Steps done when an evaluation ran: its step, or its epoch's end. */
export function stepsDone(e: Evaluation, stepsPerEpoch: number): number {
  return e.step ?? (e.epoch + 1) * stepsPerEpoch;
}

/** One worker's evaluations in training order. */
export function inOrder(evals: Evaluation[], worker: string, stepsPerEpoch: number): Evaluation[] {
  return evals.filter((e) => e.worker === worker).sort((a, b) => stepsDone(a, stepsPerEpoch) - stepsDone(b, stepsPerEpoch));
}

export function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Sample standard deviation (n - 1); 0 for fewer than two values. */
export function sampleSd(values: number[]): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  return Math.sqrt(values.reduce((a, b) => a + (b - m) ** 2, 0) / (values.length - 1));
}

export interface AccuracySummary {
  final: number;
  best: number;
  /** Sample standard deviation of the accuracy over the second half of the evaluations (warm-up excluded). */
  fluctuation: number;
  /**
   * Evaluation-to-evaluation jitter over the same second half: the root mean square of the
   * second differences (x[i+1] - 2 x[i] + x[i-1]) over sqrt 6, which estimates the standard
   * deviation of independent noise around any straight line. A steady climb (OneCycle's last
   * half) adds to `fluctuation` but not to this: a straight line has jitter 0.
   */
  jitter: number;
  evaluations: number;
}

/** Root mean square of the second differences of `values`, over sqrt 6 (0 for fewer than 3 values). */
export function successiveJitter(values: number[]): number {
  if (values.length < 3) return 0;
  const squares = values.slice(1, -1).map((v, i) => (values[i + 2] - 2 * v + values[i]) ** 2);
  return Math.sqrt(mean(squares) / 6);
}

/** Final, best, and the spread of the last half of one worker's evaluations (in training order). */
export function accuracySummary(ordered: Evaluation[]): AccuracySummary {
  const accuracies = ordered.map((e) => e.accuracy);
  const lastHalf = accuracies.slice(Math.floor(accuracies.length / 2));
  return { final: accuracies.at(-1)!, best: Math.max(...accuracies), fluctuation: sampleSd(lastHalf), jitter: successiveJitter(lastHalf), evaluations: accuracies.length };
}

/** Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom. */
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056,
  2.052, 2.048, 2.045, 2.042,
];

export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) throw new RangeError(`degrees of freedom must be a positive integer, got ${df}`);
  return df <= 30 ? T975[df - 1] : 1.96 + 2.4 / df; // past 30: close to the normal's 1.96
}

export interface PairedDifference {
  /** Seeds in both. */
  n: number;
  mean: number;
  sd: number;
  /** 95% interval of the mean difference; undefined with fewer than two pairs. */
  low?: number;
  high?: number;
}

/** a - b paired by seed (only seeds present in both). */
export function pairedDifference(a: Map<number, number>, b: Map<number, number>): PairedDifference {
  const diffs = [...a.keys()].filter((s) => b.has(s)).map((s) => a.get(s)! - b.get(s)!);
  const m = mean(diffs);
  const sd = sampleSd(diffs);
  if (diffs.length < 2) return { n: diffs.length, mean: m, sd };
  const half = (tQuantile975(diffs.length - 1) * sd) / Math.sqrt(diffs.length);
  return { n: diffs.length, mean: m, sd, low: m - half, high: m + half };
}

/** "+0.42 [-0.10, +0.94]": a difference in points with its interval; whether it excludes 0. */
export function describeDifference(d: PairedDifference, scale = 100): { text: string; outsideNoise: boolean } {
  const f = (v: number) => `${v >= 0 ? '+' : ''}${(scale * v).toFixed(2)}`;
  if (d.low === undefined || d.high === undefined) return { text: `${f(d.mean)} (n=${d.n}: no interval)`, outsideNoise: false };
  return { text: `${f(d.mean)} [${f(d.low)}, ${f(d.high)}]`, outsideNoise: d.low > 0 || d.high < 0 };
}
