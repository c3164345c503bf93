/**
 * Decoupled KD (dkdLoss) against values computed independently in PyTorch (float64, the
 * authors' mdistiller formulation) by test/fixtures/dkd_reference.py on the inputs of
 * distillation-reference.json, on the wasm and cpu backends, from teacher logits and from the
 * teacher's probabilities (what the coordinator sends): relative error < 1e-5. Plus: gradients
 * match finite differences and the teacher gets none; `algorithm: dkd`'s objective warms the KD
 * terms up linearly (checked against the same PyTorch values); bad weights are clear errors.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { dkdLoss } from '../index.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { objectiveFor } from '../shared/training/objective.js';
import { relativeError, useWasm } from './helpers/backends.js';

interface Inputs {
  student: number[][];
  teacher: number[][];
  dominated: number[][];
  labels: number[];
}
const read = (file: string) => JSON.parse(readFileSync(new URL(`./fixtures/${file}`, import.meta.url), 'utf8'));
const inputs = (read('distillation-reference.json') as { cases: { name: string; inputs: Inputs; outputs: Record<string, unknown> }[] }).cases;
const reference = read('dkd-reference.json') as { cases: { name: string; outputs: Record<string, number>; teacherProbs: Record<string, number[][]> }[] };

/** 'dkd teacher T=4.0 alpha=1.0 beta=8.0' -> its parts. */
function parseKey(key: string) {
  const m = /^dkd (teacher|dominated) T=([\d.]+) alpha=([\d.]+) beta=([\d.]+)$/.exec(key);
  assert.ok(m, `unexpected reference key '${key}'`);
  return { teacher: m[1] as 'teacher' | 'dominated', T: Number(m[2]), alpha: Number(m[3]), beta: Number(m[4]) };
}

async function value(f: () => tf.Scalar): Promise<number> {
  const t = tf.tidy(f);
  const v = (await t.data())[0];
  t.dispose();
  return v;
}

before(async () => {
  await useWasm();
});

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`dkdLoss matches PyTorch on ${backend}`, () => {
    reference.cases.forEach((c, i) => {
      test(c.name, async () => {
        await tf.setBackend(backend);
        const input = inputs[i];
        assert.equal(input.name, c.name);
        const keys = Object.keys(c.outputs);
        assert.equal(keys.length, 16);
        for (const key of keys) {
          const { teacher, T, alpha, beta } = parseKey(key);
          const expected = c.outputs[key];
          const s = () => tf.tensor2d(input.inputs.student);
          const y = () => tf.tensor1d(input.inputs.labels, 'int32');
          const fromLogits = await value(() => dkdLoss(s(), tf.tensor2d(input.inputs[teacher]), y(), { T, alpha, beta }));
          const probs = c.teacherProbs[`${teacher} T=${T.toFixed(1)}`];
          const fromProbs = await value(() => dkdLoss(s(), tf.tensor2d(probs), y(), { T, alpha, beta, teacherIsProbs: true }));
          for (const [how, actual] of [
            ['logits', fromLogits],
            ['probabilities', fromProbs],
          ] as const) {
            const err = relativeError([actual], [expected]);
            assert.ok(err < 1e-5, `${key} (teacher as ${how}): ${actual} vs PyTorch ${expected} (relative error ${err.toExponential(2)})`);
          }
        }
      });
    });
  });
}

test("the defaults are the paper's: T 4, alpha 1, beta 8", async () => {
  await tf.setBackend('cpu');
  const c = inputs[0].inputs;
  const actual = await value(() => dkdLoss(tf.tensor2d(c.student), tf.tensor2d(c.teacher), tf.tensor1d(c.labels, 'int32')));
  const expected = reference.cases[0].outputs['dkd teacher T=4.0 alpha=1.0 beta=8.0'];
  assert.ok(relativeError([actual], [expected]) < 1e-5, `${actual} vs PyTorch ${expected}`);
});

describe('gradients', () => {
  const c = inputs[3].inputs; // batch 5, 3 classes: small enough to perturb every logit
  const y = () => tf.tensor1d(c.labels, 'int32');
  const loss = (s: tf.Tensor2D) => dkdLoss(s, tf.tensor2d(c.teacher), y(), { T: 2, alpha: 1.5, beta: 3 });
  test('match finite differences', async () => {
    await tf.setBackend('cpu');
    const analytic = await tf
      .grad((s: tf.Tensor) => loss(s as tf.Tensor2D))(tf.tensor2d(c.student))
      .data();
    const h = 1e-2;
    for (let i = 0; i < c.student.length; i++) {
      for (let j = 0; j < c.student[0].length; j++) {
        const shifted = (d: number) => c.student.map((row, r) => row.map((v, k) => (r === i && k === j ? v + d : v)));
        const numeric = ((await value(() => loss(tf.tensor2d(shifted(h))))) - (await value(() => loss(tf.tensor2d(shifted(-h)))))) / (2 * h);
        const g = analytic[i * c.student[0].length + j];
        assert.ok(Number.isFinite(g) && Math.abs(numeric - g) < 2e-3 + 2e-3 * Math.abs(g), `d/dz[${i},${j}]: autodiff ${g}, finite difference ${numeric}`);
      }
    }
  });
  test('the teacher gets none', async () => {
    await tf.setBackend('cpu');
    const g = await tf
      .grad((t: tf.Tensor) => dkdLoss(tf.tensor2d(c.student), t as tf.Tensor2D, y(), { T: 2 }))(tf.tensor2d(c.teacher))
      .data();
    assert.ok(g.every((v) => v === 0));
  });
});

test("algorithm dkd: the paper's defaults, the KD terms warmed up linearly over warmupEpochs (20, or 1/12 of a shorter run)", async () => {
  await tf.setBackend('cpu');
  const run = (extra: Record<string, unknown>) =>
    resolveRunConfig({
      algorithm: 'dkd',
      dataset: { name: 'fashion-mnist' },
      members: [{ name: 's', model: { name: 'cnn-student' } }],
      teachers: [{ name: 't', model: { name: 'cnn-teacher' } }],
      ...extra,
    });
  const long = run({ epochs: 300 });
  assert.deepEqual([long.temperature, long.alpha, long.beta, long.warmupEpochs], [4, 1, 8, 20]);
  assert.equal(run({ epochs: 6 }).warmupEpochs, 0.5);
  assert.equal(run({ epochs: 6, warmupEpochs: 2 }).warmupEpochs, 2);
  // The objective, fed the teacher's probabilities as the coordinator sends them, against PyTorch:
  // CE + w * (KD terms), w = min(1, epoch / warmupEpochs).
  const c = inputs[0];
  const full = reference.cases[0].outputs['dkd teacher T=4.0 alpha=1.0 beta=8.0'];
  const ce = c.outputs['ce eps=0.0'] as number;
  const objective = objectiveFor(run({ epochs: 6, warmupEpochs: 2 }));
  assert.equal(objective.needsTeaching, true);
  for (const [epoch, w] of [
    [0.5, 0.25],
    [1, 0.5],
    [2, 1],
    [5, 1],
  ]) {
    const probs = reference.cases[0].teacherProbs['teacher T=4.0'];
    const actual = await value(() => objective.loss(tf.tensor2d(c.inputs.student), tf.tensor1d(c.inputs.labels, 'int32'), { probs: tf.tensor2d(probs) }, epoch));
    const expected = ce + w * (full - ce);
    assert.ok(relativeError([actual], [expected]) < 1e-5, `epoch ${epoch}: ${actual} vs ${expected} (PyTorch, weight ${w})`);
  }
});

test('bad weights are errors naming the option', () => {
  const s = tf.tensor2d([[1, 2, 3]]);
  const y = tf.tensor1d([0], 'int32');
  const expectError = (f: () => unknown, pattern: RegExp) => assert.throws(f, (e: unknown) => e instanceof CohortError && pattern.test(e.message));
  expectError(() => dkdLoss(s, s, y, { beta: -1 }), /^dkdLoss: beta must be a non-negative number, got -1$/);
  expectError(() => dkdLoss(s, s, y, { alpha: Number.NaN }), /^dkdLoss: alpha must be a non-negative number, got NaN$/);
  expectError(() => dkdLoss(s, s, y, { T: 0 }), /^dkdLoss: temperature T must be a positive number, got 0$/);
});
