/**
 * Every distillation loss against values computed independently in PyTorch (float64) by
 * test/fixtures/distillation_reference.py, on the wasm and cpu backends; relative error < 1e-5.
 * Plus: the peer-summary form of DML equals DML in value and gradient, gradients match finite
 * differences, and bad options are clear errors.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { byotLoss, crossEntropy, dmlEnsembleLoss, dmlLoss, dmlLossFromPeerSummary, ensembleTeacher, kdLoss, summarizePeers, tfKdVirtualLoss } from '../shared/losses/index.js';
import { CohortError } from '../shared/errors.js';
import { useWasm } from './helpers/backends.js';

interface Case {
  name: string;
  inputs: { student: number[][]; teacher: number[][]; dominated: number[][]; peers: number[][][]; labels: number[]; features: number[][][] };
  outputs: Record<string, number | number[][]>;
}
const reference = JSON.parse(readFileSync(new URL('./fixtures/distillation-reference.json', import.meta.url), 'utf8')) as { cases: Case[] };

function relativeError(actual: number, expected: number): number {
  return Math.abs(actual - expected) / Math.max(Math.abs(expected), 1e-6);
}

async function scalar(f: () => tf.Scalar): Promise<number> {
  const t = tf.tidy(f);
  const v = (await t.data())[0];
  t.dispose();
  return v;
}

/** The losses of one fixture case, by the reference's key. */
function lossesOf(c: Case): Array<[string, () => tf.Tensor]> {
  const s = () => tf.tensor2d(c.inputs.student);
  const t = () => tf.tensor2d(c.inputs.teacher);
  const dominated = () => tf.tensor2d(c.inputs.dominated);
  const peers = () => c.inputs.peers.map((p) => tf.tensor2d(p));
  const y = () => tf.tensor1d(c.inputs.labels, 'int32');
  const list: Array<[string, () => tf.Tensor]> = [];
  for (const eps of [0, 0.1]) list.push([`ce eps=${eps.toFixed(1)}`, () => crossEntropy(s(), y(), { labelSmoothing: eps })]);
  for (const T of [1, 20]) {
    const Tk = T.toFixed(1);
    for (const alpha of [0, 0.5, 1]) {
      const ak = alpha.toFixed(1);
      list.push([`kd T=${Tk} alpha=${ak}`, () => kdLoss(s(), t(), y(), { T, alpha })]);
      list.push([`kd dominated T=${Tk} alpha=${ak}`, () => kdLoss(s(), dominated(), y(), { T, alpha })]);
      list.push([`dml T=${Tk} alpha=${ak}`, () => dmlLoss(s(), peers(), y(), { T, alpha })]);
      list.push([`dml_e T=${Tk} alpha=${ak}`, () => dmlEnsembleLoss(s(), peers(), y(), { T, alpha })]);
      for (const smooth of [true, false]) {
        const key = `tfkd a=0.9 T=${Tk} alpha=${ak} smooth=${smooth ? 'True' : 'False'}`;
        list.push([key, () => tfKdVirtualLoss(s(), y(), { a: 0.9, T, alpha, smoothTeacher: smooth })]);
      }
    }
    const ensemble = () => ensembleTeacher([t(), ...peers()], { weights: [1, 2, 1], mode: 'probs', T });
    list.push([`ensemble probs T=${Tk}`, ensemble]);
    list.push([`kd ensemble-probs T=${Tk} alpha=0.5`, () => kdLoss(s(), ensemble(), y(), { T, alpha: 0.5, teacherIsProbs: true })]);
  }
  list.push(['ensemble logits', () => ensembleTeacher([t(), ...peers()], { weights: [1, 2, 1], mode: 'logits' })]);
  const feats = () => c.inputs.features.map((f) => tf.tensor2d(f));
  for (const [T, alpha, beta] of [
    [3, 0.3, 0],
    [1, 0.5, 0.1],
    [20, 1, 1e-6],
  ]) {
    const key = `byot T=${T.toFixed(1)} alpha=${alpha.toFixed(1)} beta=${beta === 0 ? '0.0' : beta === 1e-6 ? '1e-06' : beta}`;
    list.push([key, () => byotLoss([s(), peers()[0], t()], feats(), y(), { T, alpha, beta })]);
  }
  return list;
}

before(async () => {
  await useWasm();
});

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`losses match PyTorch on ${backend}`, () => {
    for (const c of reference.cases) {
      test(c.name, async () => {
        await tf.setBackend(backend);
        const checked: string[] = [];
        for (const [key, f] of lossesOf(c)) {
          const expected = c.outputs[key];
          assert.ok(expected !== undefined, `no reference value for '${key}'`);
          const out = tf.tidy(f);
          const actual = Array.from(await out.data());
          out.dispose();
          const wanted = typeof expected === 'number' ? [expected] : expected.flat();
          assert.equal(actual.length, wanted.length, key);
          assert.ok(actual.every(Number.isFinite), `${key}: not finite: ${actual}`);
          // Scalars: |a - b| / |b|; tensors (ensembles): ||a - b|| / ||b||.
          const err = Math.sqrt(
            actual.reduce((sum, v, i) => sum + (v - wanted[i]) ** 2, 0) /
              Math.max(
                wanted.reduce((sum, w) => sum + w * w, 0),
                1e-12,
              ),
          );
          assert.ok(err < 1e-5, `${key}: ${actual.slice(0, 4)} vs PyTorch ${wanted.slice(0, 4)} (relative error ${err.toExponential(2)})`);
          checked.push(key);
        }
        const metricKeys = new Set(['nll', 'entropy', 'top1', 'top3', 'ece15', 'ece15 bins']); // test/metrics.test.ts
        assert.deepEqual(
          checked.sort(),
          Object.keys(c.outputs)
            .filter((k) => !metricKeys.has(k))
            .sort(),
          'every reference value is checked',
        );
      });
    }
  });
}

test('DML from the peer summary equals DML: same value, same gradient', async () => {
  await tf.setBackend('wasm');
  const c = reference.cases[0];
  const y = tf.tensor1d(c.inputs.labels, 'int32');
  const peers = c.inputs.peers.map((p) => tf.tensor2d(p));
  for (const T of [1, 4]) {
    const summary = await summarizePeers(peers, T);
    const direct = tf.valueAndGrad((m: tf.Tensor) => dmlLoss(m as tf.Tensor2D, peers, y, { T, alpha: 0.7 }));
    const viaSummary = tf.valueAndGrad((m: tf.Tensor) => dmlLossFromPeerSummary(m as tf.Tensor2D, summary, y, { T, alpha: 0.7 }));
    const a = direct(tf.tensor2d(c.inputs.student));
    const b = viaSummary(tf.tensor2d(c.inputs.student));
    assert.ok(relativeError((await b.value.data())[0], (await a.value.data())[0]) < 1e-5, 'value');
    const ga = await a.grad.data();
    const gb = await b.grad.data();
    ga.forEach((g, i) => assert.ok(Math.abs(g - gb[i]) < 1e-6 + 1e-5 * Math.abs(g), `gradient[${i}]: ${g} vs ${gb[i]}`));
    summary.meanProbs.dispose();
  }
});

test('DML and DML_e differ in value but not in gradient: mean_j KL(p_j || q) and KL(mean_j p_j || q) differ by a term free of the student', async () => {
  await tf.setBackend('wasm');
  const c = reference.cases[0];
  const y = tf.tensor1d(c.inputs.labels, 'int32');
  const peers = c.inputs.peers.map((p) => tf.tensor2d(p));
  for (const T of [1, 4]) {
    const dml = tf.valueAndGrad((m: tf.Tensor) => dmlLoss(m as tf.Tensor2D, peers, y, { T, alpha: 0.7 }));
    const dmlE = tf.valueAndGrad((m: tf.Tensor) => dmlEnsembleLoss(m as tf.Tensor2D, peers, y, { T, alpha: 0.7 }));
    const a = dml(tf.tensor2d(c.inputs.student));
    const b = dmlE(tf.tensor2d(c.inputs.student));
    // Jensen: the mean of the KLs is at least the KL of the mean; with different peers, strictly.
    assert.ok((await a.value.data())[0] > (await b.value.data())[0] + 1e-4, `T ${T}: values ${(await a.value.data())[0]} and ${(await b.value.data())[0]}`);
    const ga = await a.grad.data();
    const gb = await b.grad.data();
    ga.forEach((g, i) => assert.ok(Math.abs(g - gb[i]) < 1e-6 + 1e-5 * Math.abs(g), `T ${T}: gradient[${i}]: ${g} vs ${gb[i]}`));
  }
});

describe('gradients match finite differences', () => {
  const c = reference.cases[3]; // batch 5, 3 classes: small enough to perturb every logit
  const s0 = c.inputs.student;
  const y = () => tf.tensor1d(c.inputs.labels, 'int32');
  const t = () => tf.tensor2d(c.inputs.teacher);
  const peers = () => c.inputs.peers.map((p) => tf.tensor2d(p));
  const feats = () => c.inputs.features.map((f) => tf.tensor2d(f));
  const losses: Array<[string, (s: tf.Tensor2D) => tf.Scalar]> = [
    ['crossEntropy', (s) => crossEntropy(s, y(), { labelSmoothing: 0.1 })],
    ['kdLoss', (s) => kdLoss(s, t(), y(), { T: 4, alpha: 0.6 })],
    ['kdLoss with an ensemble teacher', (s) => kdLoss(s, ensembleTeacher([t(), ...peers()], { T: 2 }), y(), { T: 2, alpha: 0.6, teacherIsProbs: true })],
    ['dmlLoss', (s) => dmlLoss(s, peers(), y(), { T: 2, alpha: 0.5 })],
    ['dmlEnsembleLoss', (s) => dmlEnsembleLoss(s, peers(), y(), { T: 2, alpha: 0.5 })],
    ['tfKdVirtualLoss (smoothed)', (s) => tfKdVirtualLoss(s, y(), { T: 3, alpha: 0.5, smoothTeacher: true })],
    ['tfKdVirtualLoss (calibrated)', (s) => tfKdVirtualLoss(s, y(), { T: 1, alpha: 0.5, smoothTeacher: false })],
    // The student is the shallowest exit; the deepest exit (teacher) is detached.
    ['byotLoss', (s) => byotLoss([s, peers()[0], t()], feats(), y(), { T: 3, alpha: 0.3, beta: 0.1 })],
  ];
  for (const [name, loss] of losses) {
    test(name, async () => {
      await tf.setBackend('cpu'); // exact float32 arithmetic in JS, no fused kernels
      const grad = tf.grad((s: tf.Tensor) => loss(s as tf.Tensor2D));
      const analytic = await grad(tf.tensor2d(s0)).data();
      const h = 1e-2;
      for (let i = 0; i < s0.length; i++) {
        for (let j = 0; j < s0[0].length; j++) {
          const shifted = (d: number) => s0.map((row, r) => row.map((v, k) => (r === i && k === j ? v + d : v)));
          const up = await scalar(() => loss(tf.tensor2d(shifted(h))));
          const down = await scalar(() => loss(tf.tensor2d(shifted(-h))));
          const numeric = (up - down) / (2 * h);
          const g = analytic[i * s0[0].length + j];
          assert.ok(Math.abs(numeric - g) < 2e-3 + 2e-3 * Math.abs(g), `d/dz[${i},${j}]: autodiff ${g}, finite difference ${numeric}`);
        }
      }
    });
  }
  test('the teaching signals get no gradient', async () => {
    await tf.setBackend('cpu');
    const gT = await tf
      .grad((tt: tf.Tensor) => kdLoss(tf.tensor2d(s0), tt as tf.Tensor2D, y(), { T: 2, alpha: 0.5 }))(t())
      .data();
    assert.ok(gT.every((g) => g === 0));
    const gDeep = await tf
      .grad((d: tf.Tensor) => byotLoss([tf.tensor2d(s0), d as tf.Tensor2D], [], y(), { alpha: 1 }))(t())
      .data();
    assert.ok(
      gDeep.every((g) => g === 0),
      'with alpha = 1 (no CE) the deepest exit gets nothing: the KL term is detached',
    );
  });
});

test('bad options are errors naming the option', () => {
  const s = tf.tensor2d([[1, 2, 3]]);
  const y = tf.tensor1d([0], 'int32');
  const expectError = (f: () => unknown, pattern: RegExp) => assert.throws(f, (e: unknown) => e instanceof CohortError && pattern.test(e.message));
  expectError(() => kdLoss(s, s, y, { T: 0 }), /^kdLoss: temperature T must be a positive number, got 0$/);
  expectError(() => dmlLoss(s, [s], y, { alpha: 1.5 }), /^dmlLoss: alpha must be in \[0, 1\], got 1.5$/);
  expectError(() => dmlLoss(s, [], y), /^dmlLoss: needs at least one peer$/);
  expectError(() => crossEntropy(s, y, { labelSmoothing: -0.1 }), /labelSmoothing must be in \[0, 1\]/);
  expectError(() => tfKdVirtualLoss(s, y, { a: 2 }), /^tfKdVirtualLoss: a must be in \[0, 1\], got 2$/);
  expectError(() => ensembleTeacher([s, s], { weights: [1] }), /1 weights for 2 teachers/);
  expectError(() => ensembleTeacher([s], { weights: [-1] }), /non-negative/);
  expectError(() => byotLoss([s, s], [tf.zeros([1, 2]), tf.zeros([1, 3])], y, { beta: 1 }), /features of exit 0 have shape \[1,2\], the deepest exit's \[1,3\]/);
});
