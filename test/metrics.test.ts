/**
 * Metrics against PyTorch references (test/fixtures/distillation_reference.py): NLL, entropy,
 * top-1/top-3 accuracy and the 15-bin ECE with per-bin statistics; confidences exactly on bin
 * edges; accumulating over batches gives the same numbers as one pass over everything.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { binIndex, expectedCalibrationError, MetricAccumulator, negativeLogLikelihood, predictiveEntropy, topKAccuracy } from '../shared/metrics/index.js';
import { CohortError } from '../shared/errors.js';
import { randomValues, seeded, useWasm } from './helpers/backends.js';

interface BinStats {
  count: number;
  accuracy: number | null;
  confidence: number | null;
}
const reference = JSON.parse(readFileSync(new URL('./fixtures/distillation-reference.json', import.meta.url), 'utf8')) as {
  cases: Array<{ name: string; inputs: { student: number[][]; labels: number[] }; outputs: Record<string, number | BinStats[]> }>;
  calibration_edges: { probs: number[][]; labels: number[]; bins: number; ece: number; bin_stats: BinStats[] };
};

function close(actual: number, expected: number, what: string): void {
  const err = Math.abs(actual - expected) / Math.max(Math.abs(expected), 1e-6);
  assert.ok(err < 1e-5 || Math.abs(actual - expected) < 1e-7, `${what}: ${actual} vs PyTorch ${expected}`);
}

function sameBins(actual: Array<{ count: number; accuracy: number; confidence: number }>, expected: BinStats[], what: string): void {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((bin, i) => {
    assert.equal(bin.count, expected[i].count, `${what} bin ${i} count`);
    if (expected[i].count === 0) {
      assert.ok(Number.isNaN(bin.accuracy) && Number.isNaN(bin.confidence), `${what} bin ${i} is empty`);
      return;
    }
    close(bin.accuracy, expected[i].accuracy!, `${what} bin ${i} accuracy`);
    close(bin.confidence, expected[i].confidence!, `${what} bin ${i} confidence`);
  });
}

async function value(t: tf.Scalar): Promise<number> {
  const v = (await t.data())[0];
  t.dispose();
  return v;
}

before(async () => {
  await useWasm();
});

for (const c of reference.cases) {
  test(`metrics match PyTorch: ${c.name}`, async () => {
    const logits = tf.tensor2d(c.inputs.student);
    const labels = tf.tensor1d(c.inputs.labels, 'int32');
    close(await value(negativeLogLikelihood(logits, labels)), c.outputs.nll as number, 'nll');
    close(await value(predictiveEntropy(logits)), c.outputs.entropy as number, 'entropy');
    close(await value(topKAccuracy(logits, labels, 1)), c.outputs.top1 as number, 'top-1');
    close(await value(topKAccuracy(logits, labels, Math.min(3, logits.shape[1]))), c.outputs.top3 as number, 'top-3');
    const probs = tf.softmax(logits) as tf.Tensor2D;
    const ece = await expectedCalibrationError(probs, labels, { bins: 15 });
    close(ece.ece, c.outputs.ece15 as number, 'ece');
    sameBins(ece.bins, c.outputs['ece15 bins'] as BinStats[], 'ece');
    tf.dispose([logits, labels, probs]);
  });
}

test('a confidence on a bin edge belongs to the bin it closes: (lower, upper]', async () => {
  const { probs, labels, bins, ece, bin_stats } = reference.calibration_edges;
  const result = await expectedCalibrationError(tf.tensor2d(probs), tf.tensor1d(labels, 'int32'), { bins });
  close(result.ece, ece, 'ece');
  sameBins(result.bins, bin_stats, 'edges');
  assert.equal(binIndex(0.25, 8), 1);
  assert.equal(binIndex(0.2500001, 8), 2);
  assert.equal(binIndex(1, 8), 7);
  assert.equal(binIndex(0, 8), 0);
});

test('accumulating over batches equals one pass over all samples', async () => {
  const rng = seeded(5);
  const n = 301;
  const classes = 7;
  const logits = Array.from(randomValues(n * classes, rng.random), (v) => v * 2.5);
  const labels = Array.from({ length: n }, () => rng.int(0, classes - 1));
  const all = new MetricAccumulator({ bins: 15, topK: [1, 3] });
  await all.add(tf.tensor2d(logits, [n, classes]), tf.tensor1d(labels, 'int32'));
  const batched = new MetricAccumulator({ bins: 15, topK: [1, 3] });
  for (let start = 0; start < n; start += 64) {
    const end = Math.min(n, start + 64);
    await batched.add(tf.tensor2d(logits.slice(start * classes, end * classes), [end - start, classes]), tf.tensor1d(labels.slice(start, end), 'int32'));
  }
  const a = all.result();
  const b = batched.result();
  assert.equal(b.count, n);
  for (const key of ['accuracy', 'nll', 'entropy'] as const) close(b[key], a[key], key);
  close(b.topK[3], a.topK[3], 'top-3');
  close(b.topK[1], b.accuracy, 'top-1 equals accuracy');
  close(b.calibration.ece, a.calibration.ece, 'ece');
  assert.deepEqual(
    b.calibration.bins.map((x) => x.count),
    a.calibration.bins.map((x) => x.count),
  );
  const oneShot = await expectedCalibrationError(tf.softmax(tf.tensor2d(logits, [n, classes])) as tf.Tensor2D, tf.tensor1d(labels, 'int32'));
  close(b.calibration.ece, oneShot.ece, 'ece vs expectedCalibrationError');
  // Hand check of accuracy: count argmax hits in plain JS.
  let hits = 0;
  for (let i = 0; i < n; i++) {
    const row = logits.slice(i * classes, (i + 1) * classes);
    if (row.indexOf(Math.max(...row)) === labels[i]) hits++;
  }
  close(b.accuracy, hits / n, 'accuracy by hand');
});

test('bad arguments are errors naming the problem', async () => {
  const logits = tf.tensor2d([[1, 2, 3]]);
  const labels = tf.tensor1d([0], 'int32');
  assert.throws(
    () => topKAccuracy(logits, labels, 4),
    (e: unknown) => e instanceof CohortError && /k must be an integer in 1..3, got 4/.test(e.message),
  );
  await assert.rejects(expectedCalibrationError(tf.softmax(logits) as tf.Tensor2D, labels, { bins: 0 }), /bins must be a positive integer, got 0/);
  await assert.rejects(new MetricAccumulator().add(logits, tf.tensor1d([0, 1], 'int32')), /1 predictions for 2 labels/);
});
