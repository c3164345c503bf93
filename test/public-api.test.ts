/**
 * The package root exports the losses, metrics, models and data pipeline under the documented
 * names, and works as the README shows it: imported in a fresh process, kdLoss computes with no
 * initBackend call (on tfjs's cpu backend, registered by the root), the value of the same call here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import * as api from '../index.js';
import { ROOT } from './helpers/cli.js';

test('the package root exports every loss and metric by name', () => {
  const functions = [
    'crossEntropy',
    'kdLoss',
    'ensembleTeacher',
    'dmlLoss',
    'dmlLossFromPeerSummary',
    'summarizePeers',
    'dmlEnsembleLoss',
    'tfKdVirtualLoss',
    'byotLoss',
    'dkdLoss',
    'topKAccuracy',
    'negativeLogLikelihood',
    'predictiveEntropy',
    'expectedCalibrationError',
    'initBackend',
    'buildModel',
    'exitModel',
    'trainableParameterCount',
    'loadTorchvisionWeights',
    'openDataset',
    'trainTransform',
    'evalTransform',
  ];
  for (const name of functions) assert.equal(typeof (api as Record<string, unknown>)[name], 'function', name);
  for (const name of ['MetricAccumulator', 'ImageFolderLoader', 'MemoryLoader', 'BatchSampler']) {
    assert.equal(typeof (api as Record<string, unknown>)[name], 'function', name);
  }
  assert.ok(api.MODEL_NAMES.includes('resnet18') && api.MODEL_NAMES.includes('multi-exit-resnet18'));
  assert.equal(typeof api.CohortError, 'function');
});

const KD_INPUTS = {
  student: [
    [1, 2, 0.5],
    [-1, 0.3, 2],
  ],
  teacher: [
    [0.2, 1, 3],
    [2, -0.5, 0],
  ],
  labels: [2, 0],
  options: { T: 4, alpha: 0.7 },
};

test('a fresh process imports the package root and calls kdLoss with no initBackend: the value of the same call here, on the cpu backend', { timeout: 60_000 }, async () => {
  const script = `import * as tf from '@tensorflow/tfjs-core';
import { kdLoss } from './index.ts';
const i = ${JSON.stringify(KD_INPUTS)};
const loss = kdLoss(tf.tensor2d(i.student), tf.tensor2d(i.teacher), tf.tensor1d(i.labels, 'int32'), i.options);
console.log(JSON.stringify({ backend: tf.getBackend(), loss: (await loss.data())[0] }));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { backend: string; loss: number };
  assert.equal(out.backend, 'cpu');
  await tf.setBackend('cpu');
  const i = KD_INPUTS;
  const here = api.kdLoss(tf.tensor2d(i.student), tf.tensor2d(i.teacher), tf.tensor1d(i.labels, 'int32'), i.options);
  assert.equal(out.loss, (await here.data())[0]);
});
