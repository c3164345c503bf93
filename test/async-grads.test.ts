/**
 * asyncVariableGrads: gradients of a loss built across an await equal tf.variableGrads of the
 * same computation done synchronously, for a real model on the wasm backend, and nothing leaks.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/engine/backend.js';
import { dmlLossFromPeerSummary, summarizePeers } from '../shared/losses/index.js';
import { buildModel } from '../shared/models/index.js';
import { asyncVariableGrads } from '../shared/training/async-grads.js';
import { mulberry32 } from '../shared/data/sampler.js';

before(async () => {
  await initBackend({ backend: 'wasm' });
});

test('a DML loss whose peer summary arrives after an await: same value and gradients as tf.variableGrads', async () => {
  const { model } = buildModel({ name: 'cnn-student', seed: 3 });
  const random = mulberry32(1);
  const x = tf.tensor4d(
    Float32Array.from({ length: 8 * 784 }, () => random() * 2 - 1),
    [8, 28, 28, 1],
  );
  const y = tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7], 'int32');
  const peers = [5, 6].map((seed) => tf.randomNormal([8, 10], 0, 2, 'float32', seed) as tf.Tensor2D);
  const summary = await summarizePeers(peers, 4);
  const options = { T: 4, alpha: 0.7 };
  const trainable = model.trainableWeights.map((w) => w.read() as tf.Variable);

  const expected = tf.variableGrads(() => dmlLossFromPeerSummary(model.apply(x, { training: true }) as tf.Tensor2D, summary, y, options), trainable);
  const before = tf.memory().numTensors;
  let sent: Float32Array | undefined;
  const actual = await asyncVariableGrads(async () => {
    const logits = model.apply(x, { training: true }) as tf.Tensor2D;
    sent = (await logits.data()) as Float32Array; // what a worker sends to the coordinator
    await sleep(20); // the exchange
    return dmlLossFromPeerSummary(logits, summary, y, options);
  }, trainable);
  assert.equal(sent?.length, 80);
  assert.equal((await actual.value.data())[0], (await expected.value.data())[0]);
  assert.deepEqual(Object.keys(actual.grads).sort(), Object.keys(expected.grads).sort());
  for (const name of Object.keys(expected.grads)) {
    assert.deepEqual(await actual.grads[name].data(), await expected.grads[name].data(), name);
  }
  // Only the value and one gradient per variable outlive the call.
  assert.equal(tf.memory().numTensors, before + 1 + trainable.length);
  tf.dispose([actual.value, ...Object.values(actual.grads), expected.value, ...Object.values(expected.grads), x, y, ...peers, summary.meanProbs]);
  model.dispose();
});

test('an error inside f closes the tape: the next gradient computation works', async () => {
  const v = tf.variable(tf.scalar(3));
  await assert.rejects(
    asyncVariableGrads(async () => {
      tf.square(v);
      await sleep(1);
      throw new Error('peer lost');
    }, [v]),
    /peer lost/,
  );
  const { value, grads } = await asyncVariableGrads(async () => {
    const s = tf.square(v);
    await sleep(1);
    return tf.mul(s, 2) as tf.Scalar;
  }, [v]);
  assert.equal((await value.data())[0], 18);
  assert.equal((await grads[v.name].data())[0], 12);
  tf.dispose([value, grads[v.name], v]);
});
