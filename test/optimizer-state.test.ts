/**
 * Optimizer state through a checkpoint, without processes: a model trained N steps, its
 * checkpoint written (saveMemberCheckpoint) and restored (loadMemberCheckpoint) into a fresh
 * model and a fresh optimizer, then M more steps, ends with exactly the weights of an
 * uninterrupted N + M steps, bit for bit, for every optimizer the config offers. Adam runs
 * long enough that its bias corrections (1 - beta^t) are still far from 1 when restored.
 * Restoring into the optimizer that trained on past the checkpoint (what a surviving worker
 * does on a rollback) ends the same, and frees the state it replaces. A state saved by tfjs's
 * getWeights alone (a checkpoint from before Cohort saved Adam's running products) restores
 * exactly too.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '../shared/engine/backend.js';
import { loadMemberCheckpoint, saveMemberCheckpoint } from '../shared/io/checkpoint.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { seededInitializers } from '../shared/models/initializers.js';
import { makeOptimizer } from '../shared/training/objective.js';
import { optimizerState, restoreOptimizerState } from '../shared/training/optimizer-state.js';
import { weightDifferences } from './helpers/weight-differences.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-optimizer-state-'));
after(() => rmSync(root, { recursive: true, force: true }));

before(async () => {
  await initBackend({ backend: 'wasm' }); // the workers' backend in the fault tests
});

const N = 60;
const M = 60;
const BATCH = 16;
const FEATURES = 20;
const CLASSES = 5;

type OptimizerConfig = Parameters<typeof makeOptimizer>[0];
const OPTIMIZERS: Record<string, OptimizerConfig> = {
  adam: { name: 'adam', lr: 1e-3, momentum: 0.9, beta1: 0.9, beta2: 0.999 },
  'adam (other betas)': { name: 'adam', lr: 3e-3, momentum: 0.9, beta1: 0.8, beta2: 0.99 },
  adamw: { name: 'adamw', lr: 5e-3, momentum: 0.9, beta1: 0.9, beta2: 0.999, weightDecay: 0.01 },
  'sgd with momentum': { name: 'sgd', lr: 0.05, momentum: 0.9, beta1: 0.9, beta2: 0.999 },
  sgd: { name: 'sgd', lr: 0.05, momentum: 0, beta1: 0.9, beta2: 0.999 },
};

/** A small seeded classifier (the same initial weights every time). */
function model(): tfl.LayersModel {
  const seeds = seededInitializers(7);
  return tfl.sequential({
    layers: [
      tfl.layers.dense({ inputShape: [FEATURES], units: 32, activation: 'relu', kernelInitializer: seeds.glorot() }),
      tfl.layers.dense({ units: CLASSES, kernelInitializer: seeds.glorot() }),
    ],
  });
}

/** The batch of step `step`: a function of the step only, as the cohort's data order is. */
function batch(step: number): { x: tf.Tensor2D; y: tf.Tensor2D } {
  const random = mulberry32(1000 + step);
  const x = tf.tensor2d(
    Float32Array.from({ length: BATCH * FEATURES }, () => random() * 2 - 1),
    [BATCH, FEATURES],
  );
  const labels = Array.from({ length: BATCH }, () => Math.floor(random() * CLASSES));
  const y = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), CLASSES), 'float32') as tf.Tensor2D);
  return { x, y };
}

/** Steps `from`..`to` - 1, as a worker runs them (variableGrads, then applyGradients). */
function trainSteps(m: tfl.LayersModel, optimizer: tf.Optimizer, from: number, to: number): void {
  for (let step = from; step < to; step++) {
    const { x, y } = batch(step);
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, m.apply(x) as tf.Tensor2D) as tf.Scalar);
    optimizer.applyGradients(grads);
    tf.dispose([x, y, value, ...Object.values(grads)]);
  }
}

async function weightsOf(m: tfl.LayersModel): Promise<Float32Array[]> {
  return Promise.all(m.getWeights().map(async (w) => (await w.data()) as Float32Array));
}

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`optimizer state restored from a checkpoint (${backend})`, () => {
    before(async () => {
      await tf.setBackend(backend);
    });

    for (const [label, config] of Object.entries(OPTIMIZERS)) {
      test(`${label}: ${N} steps, checkpoint, restored into a fresh optimizer, ${M} more: the weights of ${N + M} uninterrupted steps, bit for bit`, async () => {
        const reference = model();
        const refOptimizer = makeOptimizer(config);
        const dir = join(root, backend, label, 'fresh');
        trainSteps(reference, refOptimizer, 0, N);
        await saveMemberCheckpoint(dir, reference, refOptimizer, { step: N });
        trainSteps(reference, refOptimizer, N, N + M);
        const expected = await weightsOf(reference);

        const restored = model();
        const optimizer = makeOptimizer(config);
        assert.equal((await loadMemberCheckpoint(dir, restored, optimizer)).step, N);
        trainSteps(restored, optimizer, N, N + M);
        const actual = await weightsOf(restored);
        assert.deepEqual(actual, expected, weightDifferences(actual, expected));
        tf.dispose([reference, restored].flatMap((m) => m.weights.map((w) => w.read())));
        refOptimizer.dispose();
        optimizer.dispose();
      });

      test(`${label}: restored into the optimizer that trained on past the checkpoint (a surviving worker's rollback): the same weights`, async () => {
        const reference = model();
        const refOptimizer = makeOptimizer(config);
        const dir = join(root, backend, label, 'rollback');
        trainSteps(reference, refOptimizer, 0, N);
        await saveMemberCheckpoint(dir, reference, refOptimizer, { step: N });
        trainSteps(reference, refOptimizer, N, N + 25); // trained on, then rolled back
        await loadMemberCheckpoint(dir, reference, refOptimizer);
        trainSteps(reference, refOptimizer, N, N + M);

        const uninterrupted = model();
        const optimizer = makeOptimizer(config);
        trainSteps(uninterrupted, optimizer, 0, N + M);
        const [actual, expected] = [await weightsOf(reference), await weightsOf(uninterrupted)];
        assert.deepEqual(actual, expected, weightDifferences(actual, expected));
        refOptimizer.dispose();
        optimizer.dispose();
      });
    }

    test('adam: a state saved by tfjs getWeights alone (an older checkpoint, no running products) restores exactly', async () => {
      const config = OPTIMIZERS.adam;
      const reference = model();
      const refOptimizer = makeOptimizer(config);
      trainSteps(reference, refOptimizer, 0, N);
      const older = (await refOptimizer.getWeights()).map((w, i) => ({ name: w.name, tensor: i === 0 ? w.tensor : w.tensor.clone() }));
      const weights = reference.getWeights().map((w) => w.clone());
      trainSteps(reference, refOptimizer, N, N + M);

      const restored = model();
      restored.setWeights(weights);
      const optimizer = makeOptimizer(config);
      await restoreOptimizerState(optimizer, older);
      trainSteps(restored, optimizer, N, N + M);
      const [actual, expected] = [await weightsOf(restored), await weightsOf(reference)];
      assert.deepEqual(actual, expected, weightDifferences(actual, expected));
      tf.dispose([...weights, ...older.map((o) => o.tensor)]);
      refOptimizer.dispose();
      optimizer.dispose();
    });

    test('a restore frees the state it replaces: tensors in memory are the same after a rollback as before', async () => {
      for (const config of Object.values(OPTIMIZERS)) {
        const m = model();
        const optimizer = makeOptimizer(config);
        trainSteps(m, optimizer, 0, 5);
        const state = await optimizerState(optimizer);
        const before = tf.memory().numTensors;
        trainSteps(m, optimizer, 5, 8);
        await restoreOptimizerState(optimizer, state);
        tf.dispose(state.map((s) => s.tensor));
        assert.equal(tf.memory().numTensors, before - state.length, `${config.name} (momentum ${config.momentum})`);
        optimizer.dispose();
      }
    });
  });
}
