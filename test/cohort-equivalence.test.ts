/**
 * The distributed runtime computes real DML and KD: a coordinator and its workers, each a
 * separate `cohort` process talking ZeroMQ over tcp on loopback (wasm backend), train small
 * MLPs for 20 steps on a Fashion-MNIST subset; the weights they save equal (within 1e-5) those
 * of a single-process reference loop that applies the same updates with the library's K-1
 * tensor losses (dmlLoss, kdLoss), not the coordinator's peer summaries. For KD the reference
 * feeds kdLoss the teacher's probabilities computed as the teacher worker computes them
 * (temperedPredictions): with softmax inside kdLoss instead, the one-ulp differences between
 * the two softmax formulas grow to 1.8e-3 in one student's weights over 20 steps.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { resolveRunConfig, type RunConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { initBackend } from '../shared/engine/backend.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { parseMetricsLines } from '../shared/metrics/records.js';
import { dmlLoss, kdLoss } from '../shared/losses/index.js';
import type { CohortModel } from '../shared/models/index.js';
import { makeOptimizer } from '../shared/training/objective.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import { buildWorkerModel, finalWeightsDir } from '../worker/run-worker.js';
import { runCli, startCli } from './helpers/cli.js';
import { freePort } from './helpers/net.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-equivalence-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cacheDir = join(root, 'cache');
const STEPS = 20;
const BATCH = 32;

before(async () => {
  await initBackend({ backend: 'wasm' });
  await loadFashionMnist({ cacheDir }); // convert once here, so the workers only read the cache
});

interface Proc {
  name: string;
  done: Promise<{ code: number | null; output: string }>;
}

function cohort(name: string, args: string[]): Proc {
  return { name, done: startCli(args, { timeoutMs: 240_000 }).exited };
}

/** Runs `config` as 1 + N processes; returns the coordinator's output. */
async function runDistributed(config: Record<string, unknown>): Promise<string> {
  const path = join(root, `${config.name}.json`);
  writeFileSync(path, JSON.stringify(config));
  const port = await freePort();
  const coordinator = cohort('coordinator', ['coordinator', path, '--bind', `tcp://127.0.0.1:${port}`, '--insecure', '--log-every', '5']);
  const names = [...(config.members as { name: string }[]), ...((config.teachers as { name: string }[]) ?? [])].map((w) => w.name);
  const workers = names.map((name) => cohort(name, ['worker', '--connect', `tcp://127.0.0.1:${port}`, '--member', name, '--timeout', '120', '--insecure']));
  const results = await Promise.all([coordinator, ...workers].map(async (p) => ({ name: p.name, ...(await p.done) })));
  for (const r of results) assert.equal(r.code, 0, `${r.name} failed:\n${r.output}`);
  return results[0].output;
}

// SGD with momentum: its update is linear in the gradient, so float rounding (the coordinator
// sums probabilities in float64, the reference in float32) stays at rounding level. Adam divides
// by sqrt(v), which turns rounding on near-zero gradients into differences of up to 1.2e-5.
const optimizer = { name: 'sgd', lr: 0.05, momentum: 0.9 };
const mlp = (name: string) => ({ name, model: { name: 'mlp-student' }, backend: 'wasm', optimizer });

function baseConfig(name: string, algorithm: string): Record<string, unknown> {
  return {
    name,
    algorithm,
    dataset: { name: 'fashion-mnist', cacheDir },
    epochs: 1,
    batchSize: BATCH,
    trainLimit: STEPS * BATCH,
    seed: 7,
    temperature: 3,
    alpha: 0.6,
    runDir: join(root, 'runs'),
    exchange: { timeoutMs: 120_000 },
  };
}

/** The reference: every model's forward on the same batch, then each member's update. */
async function referenceWeights(config: RunConfig, loss: (members: tf.Tensor2D[], teachers: tf.Tensor2D[], i: number, y: tf.Tensor1D) => tf.Scalar): Promise<Float32Array[][]> {
  const dataset = await openDataset(config.dataset);
  const train = dataset.loader({ split: 'train', batchSize: config.batchSize, seed: config.seed, limit: config.trainLimit });
  const build = (w: RunConfig['members'][number] | RunConfig['teachers'][number], index: number): CohortModel => buildWorkerModel(config, w, index, train.imageShape, 10);
  const members = config.members.map(build);
  const teachers = config.teachers.map((t, j) => build(t, config.members.length + j));
  const optimizers = config.members.map((m) => makeOptimizer(m.optimizer));
  let steps = 0;
  for await (const batch of train.epoch(0)) {
    const x = tf.tensor4d(batch.images, batch.shape);
    const y = tf.tensor1d(batch.labels, 'int32');
    const forward = (m: CohortModel, training: boolean) => m.model.apply(x, { training }) as tf.Tensor2D;
    const peerLogits = members.map((m) => forward(m, true));
    const teacherLogits = teachers.map((t) => forward(t, false));
    members.forEach((m, i) => {
      const vars = m.model.trainableWeights.map((w) => w.read() as tf.Variable);
      const { value, grads } = tf.variableGrads(() => {
        const all = peerLogits.map((z, j) => (j === i ? forward(m, true) : z));
        return loss(all, teacherLogits, i, y);
      }, vars);
      optimizers[i].applyGradients(grads);
      tf.dispose([value, ...Object.values(grads)]);
    });
    tf.dispose([x, y, ...peerLogits, ...teacherLogits]);
    steps++;
  }
  assert.equal(steps, STEPS);
  const weights = await Promise.all(members.map((m) => Promise.all(m.model.weights.map(async (w) => (await w.read().data()) as Float32Array))));
  for (const m of [...members, ...teachers]) m.model.dispose();
  return weights;
}

async function assertClose(config: RunConfig, expected: Float32Array[][]): Promise<void> {
  for (const [i, member] of config.members.entries()) {
    const saved = await readSavedWeights(finalWeightsDir(config, member.name));
    assert.equal(saved.length, expected[i].length);
    let worst = 0;
    saved.forEach(({ values }, k) => {
      for (let e = 0; e < values.length; e++) worst = Math.max(worst, Math.abs(values[e] - expected[i][k][e]));
    });
    assert.ok(worst < 1e-5, `${member.name}: largest weight difference ${worst}`);
    console.log(`# ${config.name} ${member.name}: largest weight difference ${worst.toExponential(2)}`);
  }
}

test('DML: a coordinator and 3 worker processes over tcp give the weights of the single-process loop', { timeout: 300_000 }, async () => {
  const raw = { ...baseConfig('dml-equivalence', 'dml'), members: [mlp('a'), mlp('b'), mlp('c')] };
  const output = await runDistributed(raw);
  assert.match(output, /step 20 \| loss a \d+\.\d{4} \| b \d+\.\d{4} \| c \d+\.\d{4}/);
  assert.match(output, /eval epoch 1: ensemble accuracy/);
  const config = resolveRunConfig(raw);
  // `cohort eval` on the saved weights reproduces the accuracy the members reported in the run.
  const runDir = join(config.runDir, config.name);
  const recorded = parseMetricsLines(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')).records.filter((r) => r.kind === 'eval');
  const evaluated = await runCli(['eval', runDir, '--backend', 'wasm', '--member', 'a', 'b']);
  assert.equal(evaluated.code, 0, evaluated.stderr);
  for (const name of ['a', 'b']) {
    const accuracy = recorded.find((r) => r.worker === name)!.accuracy;
    assert.match(evaluated.stdout, new RegExp(`^\\| ${name} \\| member \\| ${(100 * accuracy).toFixed(2)}% \\|`, 'm'));
  }
  assert.doesNotMatch(evaluated.stdout, /^\| c \|/m);
  const expected = await referenceWeights(config, (members, _t, i, y) =>
    dmlLoss(
      members[i],
      members.filter((_, j) => j !== i),
      y,
      { T: config.temperature, alpha: config.alpha },
    ),
  );
  await assertClose(config, expected);
});

test('KD: a forward-only teacher worker running ahead of 2 students gives the weights of the single-process loop', { timeout: 300_000 }, async () => {
  const raw = {
    ...baseConfig('kd-equivalence', 'kd'),
    members: [mlp('s1'), mlp('s2')],
    teachers: [{ name: 'teacher', model: { name: 'mlp-teacher', dropout: 0 }, backend: 'wasm' }],
    exchange: { timeoutMs: 120_000, teacherWindow: 3 },
  };
  await runDistributed(raw);
  const config = resolveRunConfig(raw);
  const expected = await referenceWeights(config, (members, teachers, i, y) =>
    kdLoss(members[i], temperedPredictions(teachers[0], config.temperature).probs, y, { T: config.temperature, alpha: config.alpha, teacherIsProbs: true }),
  );
  await assertClose(config, expected);
});
