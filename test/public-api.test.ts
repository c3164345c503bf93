/** The package root exports the losses and metrics under exactly the documented names. */
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
  ];
  for (const name of functions) assert.equal(typeof (api as Record<string, unknown>)[name], 'function', name);
  assert.equal(typeof api.MetricAccumulator, 'function');
  assert.equal(typeof api.CohortError, 'function');
});
