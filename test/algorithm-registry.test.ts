/**
 * The algorithm registry (shared/algorithms/registry.ts): every algorithm's entry is coherent
 * (a member that waits for a teaching signal is sent one, by a rule its roles can serve); the
 * defaults a run config gets are its loss function's own, checked numerically: the objective of
 * a config that sets nothing computes what the library loss computes with no options; an entry
 * that leaves a field out, or a table that leaves an algorithm out, does not compile (checked
 * by `npm run typecheck` through the @ts-expect-error lines below).
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { algorithmEntry, ALGORITHMS, type Algorithm, type AlgorithmEntry } from '../shared/algorithms/registry.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { byotLoss, crossEntropy, dkdLoss, dmlLossFromPeerSummary, kdLoss, summarizePeers, tfKdVirtualLoss } from '../shared/losses/index.js';
import { objectiveFor } from '../shared/training/objective.js';
import { relativeError, useWasm } from './helpers/backends.js';

before(async () => {
  await useWasm();
  await tf.setBackend('cpu');
});

test('every entry can be served: a member that waits for a teaching signal is sent one its roles can give', () => {
  assert.deepEqual(ALGORITHMS.slice(0, 3), ['baseline', 'kd', 'dml']); // the config's error lists them in this order
  for (const name of ALGORITHMS) {
    const { roles, teaching, stages } = algorithmEntry(name);
    const needsTeaching = objectiveFor(resolveRunConfig(minimalConfig(name))).needsTeaching;
    assert.equal(needsTeaching, teaching.kind !== 'none', `${name}: the worker waits for a signal exactly when the coordinator sends one`);
    if (teaching.kind === 'peers-leave-one-out') assert.ok(roles.members.min >= 2 && roles.teachers.max === 0, `${name}: peers need peers`);
    if (teaching.kind === 'teachers-mean') assert.ok(roles.teachers.min >= 1, `${name}: a teachers' mean needs a teacher`);
    if (teaching.kind === 'none') assert.equal(roles.teachers.max, 0, `${name}: teachers nobody hears from`);
    if (stages !== 'one run') assert.equal(algorithmEntry(stages.algorithm).stages, 'one run', `${name}: its stages are single runs`);
  }
});

/** The smallest valid config of an algorithm (its roles' minimum counts), setting no loss option. */
function minimalConfig(algorithm: Algorithm) {
  const { roles } = algorithmEntry(algorithm);
  const model = algorithm === 'byot' ? { name: 'multi-exit-resnet18', stem: 'small' } : { name: 'mlp-student' };
  const members = Array.from({ length: roles.members.min }, (_, i) => ({ name: `m${i}`, model, ...(algorithm === 'cross_quality_kd' ? { downscale: { size: 14 } } : {}) }));
  const teachers = Array.from({ length: roles.teachers.min }, (_, i) => ({ name: `t${i}`, model: { name: 'mlp-teacher' } }));
  return { algorithm, epochs: 300, dataset: { name: 'fashion-mnist' }, members, teachers };
}

test("a config that sets no loss option trains with the loss function's own defaults", async () => {
  const B = 6;
  const C = 5;
  const logits = (seed: number) => tf.randomNormal([B, C], 0, 3, 'float32', seed) as tf.Tensor2D;
  const labels = tf.tensor1d([0, 1, 2, 3, 4, 0], 'int32');
  const s = logits(1);
  const teacherProbs = tf.softmax(tf.div(logits(2), 20)) as tf.Tensor2D; // what a teacher sends at T 20 (KD's default)
  const peers = await summarizePeers([logits(3), logits(4)], 1); // DML's default T 1
  const dkdProbs = tf.softmax(tf.div(logits(2), 4)) as tf.Tensor2D; // DKD's default T 4
  const exits = [logits(5), logits(6), s];
  const features = [tf.randomNormal([B, 4], 0, 1, 'float32', 7), tf.randomNormal([B, 4], 0, 1, 'float32', 8), tf.randomNormal([B, 4], 0, 1, 'float32', 9)];
  // What the library computes with no options, per algorithm, and the teaching signal the coordinator sends.
  const cases: [Algorithm, () => tf.Scalar, tf.Tensor | tf.Tensor[], { probs: tf.Tensor2D; peerNegEntropy?: number } | undefined, number][] = [
    ['baseline', () => crossEntropy(s, labels), s, undefined, 1],
    ['kd', () => kdLoss(s, teacherProbs, labels, { teacherIsProbs: true }), s, { probs: teacherProbs }, 1],
    ['cross_quality_kd', () => kdLoss(s, teacherProbs, labels, { teacherIsProbs: true }), s, { probs: teacherProbs }, 1],
    ['dml', () => dmlLossFromPeerSummary(s, peers, labels), s, { probs: peers.meanProbs, peerNegEntropy: peers.meanNegEntropy }, 1],
    ['tfkd_virtual', () => tfKdVirtualLoss(s, labels), s, undefined, 1],
    ['byot', () => byotLoss(exits, features, labels), [...exits, ...features], undefined, 3],
    ['dkd', () => dkdLoss(s, dkdProbs, labels, { teacherIsProbs: true }), s, { probs: dkdProbs }, 1],
  ];
  for (const [algorithm, library, outputs, teaching, exitCount] of cases) {
    const config = resolveRunConfig(minimalConfig(algorithm));
    // Past the warm-up (DKD: 20 epochs of 300), the full loss.
    const viaConfig = tf.tidy(() => objectiveFor(config, exitCount).loss(outputs, labels, teaching, 25));
    const direct = tf.tidy(library);
    const [a, b] = [(await viaConfig.data())[0], (await direct.data())[0]];
    tf.dispose([viaConfig, direct]);
    assert.ok(relativeError([a], [b]) < 1e-6, `${algorithm}: the config's run computes ${a}, the library's defaults ${b}`);
  }
});

test('the compiler rejects an entry that leaves a field out, and a table that leaves an algorithm out', () => {
  const { loss: _loss, ...withoutLoss } = algorithmEntry('kd');
  // @ts-expect-error -- an entry must state its loss
  const incomplete: AlgorithmEntry = withoutLoss;
  // @ts-expect-error -- every algorithm must have an entry
  const partial: Record<Algorithm, AlgorithmEntry> = { baseline: algorithmEntry('baseline') };
  assert.equal(incomplete.loss, undefined);
  assert.equal(Object.keys(partial).length, 1);
});
