/**
 * The coordinator's float64 teaching math against the library's tensor functions: each
 * member's leave-one-out peer summary equals summarizePeers of its K - 1 peers, and the
 * ensemble's metrics equal the MetricAccumulator's on log of the mean probabilities.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { EnsembleMetrics } from '../shared/metrics/ensemble-metrics.js';
import { leaveOneOutTeaching, PredictionSums } from '../coordinator/teaching.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { initBackend } from '../shared/engine/backend.js';
import { summarizePeers } from '../shared/losses/index.js';
import { MetricAccumulator } from '../shared/metrics/index.js';

before(async () => {
  await initBackend({ backend: 'cpu' });
});

const random = mulberry32(21);
const logits = (rows: number, classes: number, scale: number) => Float32Array.from({ length: rows * classes }, () => (random() * 2 - 1) * scale);

test("the workers' tempered predictions, averaged leave-one-out, equal summarizePeers of the K - 1 peers (K = 2, 4; T = 1, 4; logits up to +-80)", async () => {
  for (const [K, T, scale] of [
    [2, 1, 3],
    [4, 4, 3],
    [4, 1, 80],
  ]) {
    const members = Array.from({ length: K }, () => logits(6, 5, scale));
    // What each worker sends: its probabilities at T and their negative entropy, from tfjs.
    const sent = await Promise.all(
      members.map(async (z) => {
        const { probs, negEntropy } = temperedPredictions(tf.tensor2d(z, [6, 5]), T);
        const out = { probs: (await probs.data()) as Float32Array, negEntropy: (await negEntropy.data())[0] };
        tf.dispose([probs, negEntropy]);
        return out;
      }),
    );
    const teaching = leaveOneOutTeaching(
      sent.map((p) => p.probs),
      sent.map((p) => p.negEntropy),
    );
    for (let i = 0; i < K; i++) {
      const peers = members.filter((_, j) => j !== i).map((z) => tf.tensor2d(z, [6, 5]));
      const expected = await summarizePeers(peers, T);
      const probs = await expected.meanProbs.data();
      teaching[i].meanProbs.forEach((p, k) => assert.ok(Math.abs(p - probs[k]) < 1e-6, `K ${K} T ${T} member ${i}: ${p} vs ${probs[k]}`));
      assert.ok(
        Math.abs(teaching[i].meanNegEntropy - expected.meanNegEntropy) < 1e-5 * Math.max(1, Math.abs(expected.meanNegEntropy)),
        `${teaching[i].meanNegEntropy} vs ${expected.meanNegEntropy}`,
      );
      assert.ok(teaching[i].meanProbs.every(Number.isFinite));
      tf.dispose([...peers, expected.meanProbs]);
    }
  }
  assert.throws(() => leaveOneOutTeaching([logits(2, 3, 1)], [0]), /at least 2 members/);
});

test('ensemble metrics equal the MetricAccumulator on the log of the members mean probabilities, over two batches', async () => {
  const ensemble = new EnsembleMetrics();
  const reference = new MetricAccumulator({ bins: 15 });
  for (const rows of [7, 5]) {
    const members = [logits(rows, 4, 4), logits(rows, 4, 4), logits(rows, 4, 4)];
    const labels = Int32Array.from({ length: rows }, () => Math.floor(random() * 4));
    ensemble.add(members, labels, 4);
    const meanLog = tf.tidy(() => tf.log(tf.div(tf.addN(members.map((z) => tf.softmax(tf.tensor2d(z, [rows, 4])))), 3)) as tf.Tensor2D);
    const y = tf.tensor1d(labels, 'int32');
    await reference.add(meanLog, y);
    tf.dispose([meanLog, y]);
  }
  const got = ensemble.result();
  const want = reference.result();
  assert.equal(got.count, 12);
  assert.equal(got.accuracy, want.accuracy);
  assert.ok(Math.abs(got.nll - want.nll) < 1e-6, `${got.nll} vs ${want.nll}`);
  assert.ok(Math.abs(got.ece - want.calibration.ece) < 1e-6, `${got.ece} vs ${want.calibration.ece}`);
});

test("a member's teaching signal written over its own predictions is bit-identical to one in a new buffer", () => {
  const random = mulberry32(99);
  for (const K of [2, 3, 5, 16]) {
    const probs = Array.from({ length: K }, () => Float32Array.from({ length: 64 * 10 }, () => random()));
    const sums = new PredictionSums(probs[0].length);
    probs.forEach((p) => sums.add(p, -1.5));
    const fresh = probs.map((p) => sums.leaveOneOut(p, -1.5).meanProbs);
    // The coordinator serves every member from the same sums, each written in place.
    const inPlace = probs.map((p) => sums.leaveOneOut(p, -1.5, p));
    inPlace.forEach((t, i) => {
      assert.equal(t.meanProbs, probs[i], 'the same buffer');
      assert.deepEqual(t.meanProbs, fresh[i], `K ${K}, member ${i}`);
    });
  }
});

test('the WebAssembly sums equal plain float64 arithmetic bit for bit (sizes 0 to 1001, K = 2, 3, 16; reset and reuse; copies of added arrays)', () => {
  const random = mulberry32(7);
  const sums = new PredictionSums(1001);
  for (const size of [0, 1, 3, 5, 64, 1001]) {
    for (const K of [2, 3, 16]) {
      const probs = Array.from({ length: K }, () => Float32Array.from({ length: size }, (_, k) => (k % 7 === 0 ? -0 : random() * 10 ** -(k % 9))));
      const negEntropies = probs.map(() => -random());
      // The reference, in the order the coordinator sums: config order, from 0.
      const sum = new Float64Array(size);
      for (const p of probs) for (let k = 0; k < size; k++) sum[k] += p[k];
      const target = size === 1001 ? sums.reset() : new PredictionSums(size);
      probs.forEach((p, i) => target.add(p, negEntropies[i]));
      const mean = target.mean();
      for (let k = 0; k < size; k++) assert.ok(Object.is(mean[k], Math.fround(sum[k] / K)), `mean, size ${size}, K ${K}, value ${k}`);
      for (const [i, p] of probs.entries()) {
        const expected = Float32Array.from(p, (v, k) => (sum[k] - v) * (1 / (K - 1)));
        const got = target.leaveOneOut(i % 2 ? p.slice() : p, negEntropies[i]); // odd members: an equal copy, not the array added
        assert.deepEqual(got.meanProbs, expected, `size ${size}, K ${K}, member ${i}`);
        for (let k = 0; k < size; k++) assert.ok(Object.is(got.meanProbs[k], expected[k]), `sign of zero, size ${size}, K ${K}, member ${i}, value ${k}`);
        const others = negEntropies.reduce((a, b) => a + b, 0) - negEntropies[i];
        assert.equal(got.meanNegEntropy, others * (1 / (K - 1)));
      }
    }
  }
  assert.throws(() => sums.add(new Float32Array(3), 0), /predictions of 3 values, expected 1001/);
  assert.throws(() => new PredictionSums(1).reset().leaveOneOut(new Float32Array(1), 0), /at least 2 members, got 0/);
  assert.ok(new PredictionSums(4).mean().every(Number.isNaN), 'the mean of nothing is NaN');
});
