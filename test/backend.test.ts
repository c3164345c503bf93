/**
 * Backend selection: fallbacks of `auto`, GPU pinning, and the one-line errors for backends that
 * are not installed (checked through the real CLI process: no stack trace may reach the user).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, isInstalled, pinGpu, visibleGpuCount } from '../shared/engine/backend.js';
import { CohortError } from '../shared/errors.js';
import { runCli } from './helpers/cli.js';

const nativeInstalled = isInstalled('@tensorflow/tfjs-node') || isInstalled('@tensorflow/tfjs-node-gpu');

test('auto falls back to wasm when no native backend is installed, and wasm can train', { skip: nativeInstalled && 'a native backend is installed here' }, async () => {
  const active = await initBackend({ backend: 'auto' });
  assert.equal(active.choice, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.match(active.device, /wasm/);
  // The training kernels are registered: a conv filter gradient runs on wasm.
  const g = tf.grad((f: tf.Tensor) => tf.sum(tf.conv2d(tf.ones([1, 4, 4, 1]) as tf.Tensor4D, f as tf.Tensor4D, 1, 'valid')))(tf.ones([3, 3, 1, 1]));
  assert.deepEqual(Array.from(await g.data()), new Array(9).fill(4)); // each tap sees 2x2 ones
});

test('a backend that is not installed is a CohortError naming the install command', { skip: nativeInstalled && 'a native backend is installed here' }, async () => {
  for (const backend of ['tensorflow', 'tensorflow-gpu'] as const) {
    await assert.rejects(initBackend({ backend }), (error: unknown) => {
      assert.ok(error instanceof CohortError);
      assert.match(error.message, new RegExp(`backend '${backend}' is not installed: npm install @tensorflow/tfjs-node`));
      return true;
    });
  }
});

test('an unknown backend name is rejected with the list of choices', async () => {
  await assert.rejects(initBackend({ backend: 'metal' as never }), /unknown backend 'metal': choose one of auto, tensorflow-gpu, webgpu, tensorflow, wasm, cpu/);
});

test('--gpu N pins the process through CUDA_VISIBLE_DEVICES before any native library loads', () => {
  const saved = { cuda: process.env.CUDA_VISIBLE_DEVICES, growth: process.env.TF_FORCE_GPU_ALLOW_GROWTH };
  try {
    pinGpu(3);
    assert.equal(process.env.CUDA_VISIBLE_DEVICES, '3');
    assert.equal(process.env.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
    assert.throws(() => pinGpu(-1), /--gpu must be a GPU index/);
    assert.throws(() => pinGpu(1.5), /--gpu must be a GPU index/);
  } finally {
    for (const [key, value] of [
      ['CUDA_VISIBLE_DEVICES', saved.cuda],
      ['TF_FORCE_GPU_ALLOW_GROWTH', saved.growth],
    ] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
});

test('visibleGpuCount reports what the driver exposes (0 on a machine without NVIDIA GPUs)', () => {
  const count = visibleGpuCount();
  assert.ok(Number.isInteger(count) && count >= 0);
});

test('CLI: a missing backend is one error line and exit code 2, no stack trace', { skip: nativeInstalled && 'a native backend is installed here' }, async () => {
  const { code, stdout, stderr } = await runCli(['train-single', '--backend', 'tensorflow-gpu', '--gpu', '0']);
  assert.equal(code, 2);
  assert.equal(stdout, '');
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], /^cohort: error: backend 'tensorflow-gpu' is not installed: npm install @tensorflow\/tfjs-node-gpu/);
});

test('CLI: bad option values are named in one error line', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['train-single', '--epochs', '0'], /^cohort: error: --epochs must be a positive integer, got '0'$/],
    [['train-single', '--batch-size', 'many'], /^cohort: error: --batch-size must be a positive integer, got 'NaN'$/],
    [
      ['train-single', '--backend', 'metal'],
      /^cohort: error: Invalid values: Argument: backend, Given: "metal", Choices: "auto", "tensorflow-gpu", "webgpu", "tensorflow", "wasm", "cpu" \(see --help\)$/,
    ],
    [['train-single', '--gpu', '-2', '--backend', 'wasm'], /^cohort: error: --gpu must be a GPU index \(0, 1, \.\.\.\), got '-2'$/],
    [['no-such-command'], /^cohort: error: Unknown argument: no-such-command \(see --help\)$/],
  ];
  for (const [args, expected] of cases) {
    const { code, stderr } = await runCli(args);
    assert.equal(code, 2, `${args.join(' ')}: ${stderr}`);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: ${stderr}`);
    assert.match(lines[0].replace(/\s+/g, ' '), expected);
  }
});

test('CLI: --help lists the commands and the backend choices', async () => {
  const top = await runCli(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /train-single/);
  const sub = await runCli(['train-single', '--help']);
  assert.equal(sub.code, 0);
  assert.match(sub.stdout, /--backend.*\[choices: "auto", "tensorflow-gpu", "webgpu", "tensorflow", "wasm", "cpu"\]/s);
  assert.match(sub.stdout, /--gpu/);
});
