/**
 * Several teachers form one ensemble teacher: a KD run with two teacher workers of different
 * weights (and architectures) and one student, each a `cohort worker` process beside a
 * `cohort coordinator` process over tcp on loopback (wasm, 20 steps of 32 images). The student's
 * saved weights equal (within 1e-5) those of a single-process reference loop whose teaching
 * signal is the mean of the two teachers' softmax(z/T), averaged here in float64 from each
 * teacher's probabilities as a teacher worker computes them (temperedPredictions). The same
 * loop fed either teacher alone, or the softmax of the teachers' mean logits, ends more than
 * 1e-4 away: the check tells the ensemble apart from its parts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { resolveRunConfig, type RunConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import { initBackend } from '../shared/engine/backend.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { kdLoss } from '../shared/losses/index.js';
import { makeOptimizer } from '../shared/training/objective.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import { buildWorkerModel, finalWeightsDir } from '../worker/run-worker.js';
import { startCli } from './helpers/cli.js';
import { randomIdx } from './helpers/fake-coordinator.js';
import { freePort } from './helpers/net.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-teacher-ensemble-'));
after(() => rmSync(root, { recursive: true, force: true }));
const STEPS = 20;
const BATCH = 32;

before(async () => {
  await initBackend({ backend: 'wasm' });
});

const raw = {
  name: 'teacher-ensemble',
  algorithm: 'kd',
  dataset: { name: 'idx', train: randomIdx(root, 'train', STEPS * BATCH, 11), test: randomIdx(root, 'test', 16, 12), classes: 10 },
  epochs: 1,
  batchSize: BATCH,
  seed: 7,
  temperature: 3,
  alpha: 0.6,
  runDir: join(root, 'runs'),
  // SGD with momentum: linear in the gradient, so rounding stays at rounding level (see cohort-equivalence).
  members: [{ name: 'student', model: { name: 'mlp-student' }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9 } }],
  teachers: [
    { name: 'big', model: { name: 'mlp-teacher', dropout: 0, seed: 101 }, backend: 'wasm' },
    { name: 'small', model: { name: 'mlp-student', seed: 202 }, backend: 'wasm' },
  ],
  exchange: { timeoutMs: 120_000, teacherWindow: 2 },
};

type Teaching = (teacherProbs: Float32Array[], teacherLogits: tf.Tensor2D[]) => Float32Array;

/** The student's final weights after the single-process loop, with `teaching` as its KD target. */
async function referenceWeights(config: RunConfig, teaching: Teaching): Promise<Float32Array[]> {
  const dataset = await openDataset(config.dataset);
  const train = dataset.loader({ split: 'train', batchSize: config.batchSize, seed: config.seed });
  const [s] = config.members;
  const student = buildWorkerModel(config, s, 0, train.imageShape, 10);
  const teachers = config.teachers.map((t, j) => buildWorkerModel(config, t, config.members.length + j, train.imageShape, 10));
  const optimizer = makeOptimizer(s.optimizer);
  let steps = 0;
  for await (const batch of train.epoch(0)) {
    const x = tf.tensor4d(batch.images, batch.shape);
    const y = tf.tensor1d(batch.labels, 'int32');
    const logits = teachers.map((t) => t.model.apply(x, { training: false }) as tf.Tensor2D);
    const probs = await Promise.all(
      logits.map(async (z) => {
        const { probs: p, negEntropy } = temperedPredictions(z, config.temperature);
        const data = (await p.data()) as Float32Array;
        tf.dispose([p, negEntropy]);
        return data;
      }),
    );
    const target = tf.tensor2d(teaching(probs, logits), [batch.labels.length, 10]);
    const vars = student.model.trainableWeights.map((w) => w.read() as tf.Variable);
    const { value, grads } = tf.variableGrads(
      () => kdLoss(student.model.apply(x, { training: true }) as tf.Tensor2D, target, y, { T: config.temperature, alpha: config.alpha, teacherIsProbs: true }),
      vars,
    );
    optimizer.applyGradients(grads);
    tf.dispose([value, ...Object.values(grads), x, y, target, ...logits]);
    steps++;
  }
  assert.equal(steps, STEPS);
  const weights = await Promise.all(student.model.weights.map(async (w) => (await w.read().data()) as Float32Array));
  for (const m of [student, ...teachers]) m.model.dispose();
  optimizer.dispose();
  return weights;
}

function largestDifference(a: Float32Array[], b: Float32Array[]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((values, k) => {
    assert.equal(values.length, b[k].length);
    for (let e = 0; e < values.length; e++) worst = Math.max(worst, Math.abs(values[e] - b[k][e]));
  });
  return worst;
}

test('KD with two teacher workers: the student learns from the mean of their softmax(z/T)', { timeout: 180_000 }, async () => {
  const path = join(root, 'ensemble.json');
  writeFileSync(path, JSON.stringify(raw));
  const port = await freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  const coordinator = startCli(['coordinator', path, '--bind', endpoint, '--insecure', '--log-every', '10'], { timeoutMs: 150_000 });
  const workers = ['student', 'big', 'small'].map((name) => ({
    name,
    p: startCli(['worker', '--connect', endpoint, '--member', name, '--timeout', '120', '--insecure'], { timeoutMs: 150_000 }),
  }));
  const results = await Promise.all([{ name: 'coordinator', p: coordinator }, ...workers].map(async ({ name, p }) => ({ name, ...(await p.exited) })));
  for (const r of results) assert.equal(r.code, 0, `${r.name} failed (${r.signal ?? ''}):\n${r.output}`);
  assert.match(results[0].output, /step 20 \| loss student \d+\.\d{4}/);
  for (const t of ['big', 'small']) assert.match(results[0].output, new RegExp(`eval epoch 1: ${t} \\(teacher\\) accuracy`));

  const config = resolveRunConfig(raw);
  const saved = (await readSavedWeights(finalWeightsDir(config, 'student'))).map(({ values }) => values as Float32Array);

  // The ensemble: mean of the two teachers' probabilities, in float64, rounded once to float32.
  const mean: Teaching = ([a, b]) => Float32Array.from(a, (v, k) => (v + b[k]) / 2);
  const expected = await referenceWeights(config, mean);
  const worst = largestDifference(saved, expected);
  console.log(`# student vs the reference with the mean of both teachers: largest weight difference ${worst.toExponential(2)}`);
  assert.ok(worst < 1e-5, `student: largest weight difference ${worst} from the mean-of-both-teachers reference`);

  // What the student did not learn from: either teacher alone, or the softmax of the mean logits.
  const alternatives: [string, Teaching][] = [
    ['teacher big alone', ([a]) => a],
    ['teacher small alone', ([, b]) => b],
    [
      'softmax of the mean logits',
      (_, [za, zb]) => {
        const z = tf.div(tf.add(za, zb), 2) as tf.Tensor2D;
        const { probs, negEntropy } = temperedPredictions(z, config.temperature);
        const data = probs.dataSync() as Float32Array;
        tf.dispose([z, probs, negEntropy]);
        return data;
      },
    ],
  ];
  for (const [what, teaching] of alternatives) {
    const d = largestDifference(saved, await referenceWeights(config, teaching));
    console.log(`# student vs the reference with ${what}: ${d.toExponential(2)}`);
    assert.ok(d > 1e-4, `the student's weights are as close to the reference with ${what} (${d}): the check cannot tell the ensemble apart`);
  }
});
