/**
 * torchvision weights in the zoo. Against PyTorch (test/fixtures/torchvision_reference.py, run
 * into a temp folder; skipped locally without python3-torch, required under CI=true):
 * torchvision's resnet18/34/50 and mobilenet_v2 with seeded random weights and randomised
 * batch-norm statistics, saved as safetensors; the zoo network loaded from that file gives
 * PyTorch's eval-mode logits of the same batch (fed NHWC) within 1e-4 relative, and its batch
 * norms have torchvision's epsilon and momentum. Another architecture's file, a missing or
 * extra tensor, a wrong shape, a classifier of another width and a damaged file are one-line
 * CohortErrors naming the tensor. The format and the layout conversion are also checked
 * without PyTorch: a state dict written here (transposed to torchvision's layout by hand)
 * round-trips into a fresh network.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { readSafetensors } from '../shared/io/safetensors.js';
import { buildModel, resolveModelConfig, type ModelConfig } from '../shared/models/index.js';
import { loadTorchvisionWeights, torchvisionMapping } from '../shared/models/torchvision-weights.js';
import { relativeError, useWasm } from './helpers/backends.js';
import { torchOrSkip, torchvisionReference } from './helpers/torchvision.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-torchvision-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(() => useWasm());

/** The model's logits of an NCHW batch read from a safetensors file (transposed to NHWC here). */
async function logitsOf(model: tfl.LayersModel, images: { data: Float32Array; shape: number[] }): Promise<Float32Array> {
  const x = tf.tidy(() => tf.transpose(tf.tensor(images.data, images.shape), [0, 2, 3, 1]));
  const y = model.predict(x) as tf.Tensor;
  const values = (await y.data()) as Float32Array;
  tf.dispose([x, y]);
  return values;
}

/** Runs `f` and returns the CohortError it throws, checking that it is one line. */
function cohortError(f: () => unknown): string {
  try {
    f();
  } catch (error) {
    assert.ok(error instanceof CohortError, `expected a CohortError, got ${String(error)}`);
    assert.ok(!error.message.includes('\n'), `not one line: ${error.message}`);
    return error.message;
  }
  assert.fail('expected an error');
}

const zoo = (name: ModelConfig['name'], weights?: string, classes = 10, side = 64): ModelConfig => ({
  name,
  classes,
  inputShape: [side, side, 3],
  stem: 'imagenet',
  seed: 5,
  ...(weights ? { weights } : {}),
});

describe('against PyTorch', () => {
  const models: [ModelConfig['name'], string][] = [
    ['resnet18', 'resnet18'],
    ['resnet34', 'resnet34'],
    ['resnet50', 'resnet50'],
    ['mobilenetv2', 'mobilenet_v2'],
  ];
  for (const [name, torchName] of models) {
    test(`${name}: torchvision's ${torchName} weights give PyTorch's eval-mode logits within 1e-4 relative`, { timeout: 240_000 }, async (t) => {
      const python = torchOrSkip(t);
      if (!python) return;
      const ref = torchvisionReference(python, torchName, join(root, torchName), { size: 64, batch: 2, seed: 11 });
      const built = buildModel(zoo(name, ref.weights));
      const io = readSafetensors(ref.io);
      const expected = io.get('logits')!.data;
      const got = await logitsOf(built.model, io.get('images')!);
      assert.equal(got.length, expected.length);
      const error = relativeError(got, expected);
      assert.ok(error < 1e-4, `relative error ${error}`);
      // Not trivially small logits: the check compares real signal.
      assert.ok(Math.max(...expected.map(Math.abs)) > 0.1, `logits too small to compare: ${expected}`);
      // The zoo's randomly initialised network is far from them: the loaded weights made the match.
      const fresh = buildModel(zoo(name));
      assert.ok(relativeError(await logitsOf(fresh.model, io.get('images')!), expected) > 0.1);
      // torchvision's batch norms: epsilon as is, momentum 0.1 is Keras' 0.9.
      for (const layer of built.model.layers.filter((l) => l.getClassName() === 'BatchNormalization')) {
        const c = layer.getConfig();
        assert.equal(c.epsilon, ref.summary.bnEps, layer.name);
        assert.ok(Math.abs((c.momentum as number) - (1 - ref.summary.bnMomentum)) < 1e-12, layer.name);
      }
      // Every tensor of the file is used (the counters of the batch norms aside).
      const used = new Set(torchvisionMapping(built.model, name as 'resnet18').map((m) => m.key));
      const file = [...readSafetensors(ref.weights).keys()].filter((k) => !k.endsWith('num_batches_tracked'));
      assert.deepEqual(file.sort(), [...used].sort());
      tf.dispose([...built.model.weights.map((w) => w.read()), ...fresh.model.weights.map((w) => w.read())]);
    });
  }

  test("another architecture's weights, a classifier of another width: one-line errors naming the tensor", { timeout: 240_000 }, async (t) => {
    const python = torchOrSkip(t);
    if (!python) return;
    const r18 = torchvisionReference(python, 'resnet18', join(root, 'arch-r18'), { size: 32 });
    const r50 = torchvisionReference(python, 'resnet50', join(root, 'arch-r50'), { size: 32, classes: 1000 });
    assert.match(
      cohortError(() => buildModel(zoo('resnet18', r50.weights, 10, 32))),
      /unexpected tensor 'layer1\.0\.conv3\.weight' for resnet18 \(weights of another architecture\?\)/,
    );
    assert.match(
      cohortError(() => buildModel(zoo('resnet34', r18.weights, 10, 32))),
      /missing tensor 'layer1\.2\.conv1\.weight' for resnet34/,
    );
    assert.match(
      cohortError(() => buildModel(zoo('mobilenetv2', r18.weights, 10, 32))),
      /unexpected tensor 'conv1\.weight' for mobilenetv2/,
    );
    const classes = cohortError(() => buildModel(zoo('resnet18', r18.weights, 100, 32)));
    assert.match(classes, /tensor 'fc\.weight' has shape \[10, 512\], resnet18 expects \[100, 512\]; the model has 100 classes/);
    assert.ok(classes.includes(r18.weights), classes);
  });
});

describe('without PyTorch', () => {
  /** A torchvision-layout state dict of `model`, transposed here by hand (OIHW, [C,1,kh,kw], [out,in]). */
  type Entry = { shape: number[]; data: Float32Array; dtype?: string };
  async function stateDictOf(model: tfl.LayersModel, name: 'resnet18' | 'mobilenetv2'): Promise<Map<string, Entry>> {
    const out = new Map<string, Entry>();
    for (const { variable, key, layout } of torchvisionMapping(model, name)) {
      const v = variable.read();
      const perm = layout === 'conv' ? [3, 2, 0, 1] : layout === 'depthwise' ? [2, 3, 0, 1] : layout === 'linear' ? [1, 0] : [0];
      const torch = tf.transpose(v, perm);
      const dims = torch.shape as number[];
      const shape = layout === 'depthwise' ? [dims[0] * dims[1], 1, dims[2], dims[3]] : dims;
      out.set(key, { shape, data: (await torch.data()) as Float32Array });
      torch.dispose();
    }
    return out;
  }

  /** Writes F32 tensors as safetensors (8-byte LE header length, JSON header, data). */
  function writeSafetensors(path: string, tensors: Map<string, Entry>): void {
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const [name, t] of tensors) {
      header[name] = { dtype: t.dtype ?? 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
      offset += t.data.byteLength;
    }
    const json = Buffer.from(JSON.stringify(header));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(path, Buffer.concat([length, json, ...[...tensors.values()].map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]));
  }

  for (const name of ['resnet18', 'mobilenetv2'] as const) {
    test(`${name}: a state dict in torchvision's layout round-trips into a fresh network`, { timeout: 120_000 }, async () => {
      const source = buildModel({ ...zoo(name, undefined, 4, 32), seed: 1 });
      const path = join(root, `${name}-roundtrip.safetensors`);
      const state = await stateDictOf(source.model, name);
      writeSafetensors(path, state);
      const target = buildModel({ ...zoo(name, undefined, 4, 32), seed: 2 });
      const images = { data: Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i)), shape: [2, 3, 32, 32] };
      const want = await logitsOf(source.model, images);
      assert.ok(relativeError(await logitsOf(target.model, images), want) > 0.1, 'the two seeds should differ before loading');
      loadTorchvisionWeights(target.model, path);
      assert.ok(relativeError(await logitsOf(target.model, images), want) < 1e-6);
    });
  }

  test('a missing, extra or misshapen tensor, a damaged file or a missing one: one-line errors naming it', { timeout: 120_000 }, async () => {
    const model = buildModel(zoo('resnet18', undefined, 4, 32)).model;
    const state = await stateDictOf(model, 'resnet18');
    const variant = (edit: (s: typeof state) => void) => {
      const copy = new Map(state);
      edit(copy);
      const path = join(root, `variant-${Math.random().toString(36).slice(2)}.safetensors`);
      writeSafetensors(path, copy);
      return path;
    };
    const load = (path: string) => cohortError(() => loadTorchvisionWeights(model, path));
    assert.match(load(variant((s) => s.delete('layer2.0.downsample.0.weight'))), /missing tensor 'layer2\.0\.downsample\.0\.weight' for resnet18/);
    assert.match(load(variant((s) => s.set('layer5.0.conv1.weight', { shape: [1], data: new Float32Array(1) }))), /unexpected tensor 'layer5\.0\.conv1\.weight'/);
    assert.match(
      load(variant((s) => s.set('layer3.1.bn2.running_var', { shape: [255], data: new Float32Array(255) }))),
      /tensor 'layer3\.1\.bn2\.running_var' has shape \[255\], resnet18 expects \[256\]/,
    );
    // Batch-norm counters (int64 scalars in every torchvision state dict) are accepted and unused.
    loadTorchvisionWeights(
      model,
      variant((s) => s.set('bn1.num_batches_tracked', { shape: [], data: new Float32Array(2), dtype: 'I64' })),
    );
    const good = variant(() => {});
    const bytes = readFileSync(good);
    const truncated = join(root, 'truncated.safetensors');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 8));
    assert.match(load(truncated), /truncated\.safetensors: not a valid safetensors file: tensor 'fc\.bias' runs past the end of the file/);
    assert.match(load(join(root, 'nowhere.safetensors')), /weights file not found: .*nowhere\.safetensors/);
    assert.match(
      cohortError(() => loadTorchvisionWeights(buildModel({ name: 'mlp-student' }).model, good)),
      /load into resnet18, resnet34, resnet50, mobilenetv2 only/,
    );
  });

  test("model.weights in a run config: torchvision's architectures only, the 'imagenet' stem by default", () => {
    const config = (model: object) => ({ algorithm: 'baseline', dataset: { name: 'fashion-mnist' }, members: [{ name: 'm', model }] });
    assert.throws(
      () => resolveRunConfig(config({ name: 'mlp-student', weights: 'w.safetensors' })),
      /config\.members\[0\]\.model: model: weights \(torchvision's\) load into resnet18, resnet34, resnet50, mobilenetv2 only, not 'mlp-student'/,
    );
    assert.throws(() => resolveRunConfig(config({ name: 'resnet18', stem: 'small', weights: 'w.safetensors' })), /config\.members\[0\]\.model: .*need the 'imagenet' stem/);
    const run = resolveRunConfig(config({ name: 'resnet18', inputShape: [64, 64, 3], weights: 'w.safetensors' }));
    assert.equal(run.members[0].model.weights, 'w.safetensors');
    assert.equal(resolveModelConfig(run.members[0].model).stem, 'imagenet');
    assert.equal(resolveModelConfig({ name: 'resnet18', inputShape: [64, 64, 3] }).stem, 'small');
  });
});
