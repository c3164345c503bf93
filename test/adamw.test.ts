/**
 * AdamW and OneCycle's momentum cycle against PyTorch (test/fixtures/adamw_onecycle_reference.py:
 * torch.optim.AdamW under OneCycleLR with its default cycle_momentum, float64), and AdamW's state
 * restored bit for bit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/engine/backend.js';
import { AdamW } from '../shared/training/adamw.js';
import { learningRateAt, momentumAt, type Schedule } from '../shared/training/lr-schedule.js';
import { setLearningRate, setMomentum } from '../shared/training/objective.js';
import { optimizerState, restoreOptimizerState } from '../shared/training/optimizer-state.js';
import { relativeError } from './helpers/backends.js';

const ref = JSON.parse(readFileSync(new URL('./fixtures/adamw-onecycle.json', import.meta.url), 'utf8')) as {
  steps: number;
  pctStart: number;
  maxLr: number;
  weightDecay: number;
  x: number[];
  y: number[];
  w0: number[];
  b0: number[];
  lrs: number[];
  beta1s: number[];
  w: number[];
  b: number[];
};
const schedule: Schedule = { kind: 'onecycle', pctStart: ref.pctStart, divFactor: 25, finalDivFactor: 1e4 };
const clock = (step: number) => ({ step, stepsPerEpoch: ref.steps, totalSteps: ref.steps });

/** The fixture's softmax regression, `steps` AdamW steps from `start`, with the schedule's lr and beta1. */
function train(optimizer: AdamW, w: tf.Variable, b: tf.Variable, start: number, steps: number): void {
  const x = tf.tensor2d(ref.x, [8, 5]);
  const y = tf.oneHot(tf.tensor1d(ref.y, 'int32'), 3);
  for (let step = start; step < start + steps; step++) {
    setLearningRate(optimizer, learningRateAt(schedule, ref.maxLr, clock(step)));
    setMomentum(optimizer, momentumAt(schedule, clock(step))!);
    const loss = optimizer.minimize(() => tf.losses.softmaxCrossEntropy(y, tf.add(tf.matMul(x, w), b)) as tf.Scalar, true);
    loss?.dispose();
  }
  tf.dispose([x, y]);
}

test('OneCycle cycles the momentum as PyTorch does (0.95 -> 0.85 -> 0.95) beside its learning rate', () => {
  for (let step = 0; step < ref.steps; step++) {
    assert.ok(Math.abs(learningRateAt(schedule, ref.maxLr, clock(step)) - ref.lrs[step]) < 1e-12, `lr at step ${step}`);
    assert.ok(Math.abs(momentumAt(schedule, clock(step))! - ref.beta1s[step]) < 1e-12, `beta1 at step ${step}: ${momentumAt(schedule, clock(step))} vs ${ref.beta1s[step]}`);
  }
  assert.equal(momentumAt({ ...schedule, cycleMomentum: false }, clock(3)), undefined);
  assert.equal(momentumAt({ kind: 'constant' }, clock(3)), undefined);
});

test("AdamW under OneCycle ends where PyTorch's AdamW does (float32 against float64)", async () => {
  await initBackend({ backend: 'cpu' });
  const w = tf.variable(tf.tensor2d(ref.w0, [5, 3]));
  const b = tf.variable(tf.tensor1d(ref.b0));
  const optimizer = new AdamW({ lr: ref.maxLr, beta1: 0.9, beta2: 0.999, weightDecay: ref.weightDecay });
  train(optimizer, w, b, 0, ref.steps);
  const moved = relativeError(ref.w, ref.w0);
  const error = relativeError(await w.data(), ref.w);
  assert.ok(moved > 0.05, `the weights moved (${moved})`);
  assert.ok(error < 1e-5, `weights relative error ${error.toExponential(2)}`);
  assert.ok(relativeError(await b.data(), ref.b) < 1e-5, 'bias');
  tf.dispose([w, b]);
  optimizer.dispose();
});

test('AdamW restored from its state continues bit for bit', async () => {
  await initBackend({ backend: 'cpu' });
  const run = async (split: number | undefined) => {
    const w = tf.variable(tf.tensor2d(ref.w0, [5, 3]), true, `w${split ?? 'all'}`);
    const b = tf.variable(tf.tensor1d(ref.b0), true, `b${split ?? 'all'}`);
    let optimizer = new AdamW({ lr: ref.maxLr, beta1: 0.9, beta2: 0.999, weightDecay: ref.weightDecay });
    if (split === undefined) train(optimizer, w, b, 0, ref.steps);
    else {
      train(optimizer, w, b, 0, split);
      const state = await optimizerState(optimizer);
      optimizer.dispose();
      optimizer = new AdamW({ lr: ref.maxLr, beta1: 0.9, beta2: 0.999, weightDecay: ref.weightDecay });
      await restoreOptimizerState(optimizer, state);
      tf.dispose(state.map((s) => s.tensor));
      train(optimizer, w, b, split, ref.steps - split);
    }
    const values = [Array.from(await w.data()), Array.from(await b.data())];
    tf.dispose([w, b]);
    optimizer.dispose();
    return values;
  };
  assert.deepEqual(await run(13), await run(undefined));
});
