/**
 * Seeded dropout: masks are a function of (layer seed, step), so two processes (or a run
 * restored from a checkpoint) draw the same masks; kept units are scaled by 1 / (1 - rate);
 * inference is the identity; the gradient is the mask; and saved models name the layer as a
 * plain tfjs Dropout, which tfjs deserialises without this class.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { initBackend } from '../shared/engine/backend.js';
import { buildModel } from '../shared/models/index.js';
import { seededDropout, setDropoutStep } from '../shared/models/seeded-dropout.js';

let ones: tf.Tensor;
before(async () => {
  await initBackend({ backend: 'cpu' });
  ones = tf.ones([50, 200]);
});

async function values(layer: tfl.layers.Layer, step: number, training = true): Promise<Float32Array> {
  setDropoutStep(step);
  const out = layer.apply(ones, { training }) as tf.Tensor;
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

test('the same seed and step give the same mask; another step or seed another one', async () => {
  const a = await values(seededDropout({ rate: 0.5, seed: 7 }), 3);
  assert.deepEqual(await values(seededDropout({ rate: 0.5, seed: 7 }), 3), a);
  const otherStep = await values(seededDropout({ rate: 0.5, seed: 7 }), 4);
  const otherSeed = await values(seededDropout({ rate: 0.5, seed: 8 }), 3);
  const agree = (x: Float32Array, y: Float32Array) => x.filter((v, i) => v === y[i]).length / x.length;
  // Independent masks of rate 0.5 agree on about half the units.
  assert.ok(Math.abs(agree(a, otherStep) - 0.5) < 0.05, `agreement ${agree(a, otherStep)}`);
  assert.ok(Math.abs(agree(a, otherSeed) - 0.5) < 0.05, `agreement ${agree(a, otherSeed)}`);
});

test('units are dropped at the rate and the kept ones scaled by 1 / (1 - rate); inference is the identity', async () => {
  for (const rate of [0.2, 0.5]) {
    const out = await values(seededDropout({ rate, seed: 11 }), 0);
    const kept = out.filter((v) => v !== 0);
    assert.ok(Math.abs(1 - kept.length / out.length - rate) < 0.03, `rate ${rate}: dropped ${1 - kept.length / out.length}`);
    for (const v of kept) assert.equal(v, Math.fround(1 / Math.fround(1 - rate)));
    assert.deepEqual(await values(seededDropout({ rate, seed: 11 }), 0, false), new Float32Array(out.length).fill(1));
  }
});

test('the gradient is the mask, scaled', async () => {
  const layer = seededDropout({ rate: 0.5, seed: 3 });
  setDropoutStep(9);
  const grad = tf.grad((x: tf.Tensor) => tf.sum(layer.apply(x, { training: true }) as tf.Tensor))(ones);
  assert.deepEqual(await grad.data(), await values(layer, 9));
  grad.dispose();
});

test('a model with dropout saves it as a plain tfjs Dropout layer, which tfjs loads without this class', async () => {
  const built = buildModel({ name: 'mlp-teacher', inputShape: [28, 28, 1], classes: 10, seed: 1 });
  const json = built.model.toJSON(undefined, false) as { config: { layers: { class_name: string; config: { rate?: number } }[] } };
  const dropouts = json.config.layers.filter((l) => l.class_name === 'Dropout');
  assert.deepEqual(
    dropouts.map((l) => l.config.rate),
    [0.2, 0.5, 0.5],
  );
  const loaded = await tfl.models.modelFromJSON({ modelTopology: json });
  assert.deepEqual(
    loaded.layers.filter((l) => l.getClassName() === 'Dropout').map((l) => (l as unknown as { rate: number }).rate),
    [0.2, 0.5, 0.5],
  );
  // Built-in dropout, not ours: tfjs's own layer class.
  assert.ok(loaded.layers.every((l) => l.constructor.name !== 'SeededDropout'));
  // Two builds with the same seed train with the same masks.
  setDropoutStep(5);
  const x = tf.randomNormal([4, 28, 28, 1], 0, 1, 'float32', 1);
  const again = buildModel({ name: 'mlp-teacher', inputShape: [28, 28, 1], classes: 10, seed: 1 });
  const [y1, y2] = [built, again].map((m) => m.model.apply(x, { training: true }) as tf.Tensor);
  assert.deepEqual(await y1.data(), await y2.data());
  tf.dispose([x, y1, y2]);
  for (const m of [built, again]) m.model.dispose();
  loaded.dispose();
});
