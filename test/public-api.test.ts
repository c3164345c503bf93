/** The package root exports the losses, metrics, models and data pipeline under the documented names. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as api from '../index.js';

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
