/**
 * ONNX models as forward-only teachers (onnxruntime-node, CPU provider). Against PyTorch
 * (skipped locally without python3-torch, required under CI=true): torchvision's resnet18 with
 * seeded random weights, exported by torch.onnx.export in the test; the ONNX teacher's logits
 * of PyTorch's batch match PyTorch's within 1e-4 relative, also when the dataset normalises
 * with other statistics than the model's (the teacher re-normalises). A KD run (`cohort train`:
 * a coordinator and two worker processes) with it as the teacher of an MLP student trains, and
 * the student's saved weights match a single-process reference loop fed the teacher
 * probabilities computed here: onnxruntime on images re-normalised and transposed to NCHW by
 * plain loops, softmax(z / T) as the teacher worker computes it (temperedPredictions).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as ort from 'onnxruntime-node';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import { writeIdxFile } from '../shared/data/idx.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { CohortError } from '../shared/errors.js';
import { readSafetensors } from '../shared/io/safetensors.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { kdLoss } from '../shared/losses/index.js';
import { makeOptimizer } from '../shared/training/objective.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import { buildWorkerModel, finalWeightsDir } from '../worker/run-worker.js';
import { onnxProviders, OnnxTeacher } from '../worker/onnx-teacher.js';
import { relativeError, useWasm } from './helpers/backends.js';
import { runCli } from './helpers/cli.js';
import { torchOrSkip, torchvisionReference, type TorchReference } from './helpers/torchvision.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-onnx-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(() => useWasm());

const SIDE = 32;
const CLASSES = 4;
const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
/** The dataset's own statistics, unlike the teacher's. */
const DATASET_NORM = { mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };

let reference: TorchReference | undefined;
/** The exported resnet18 (once per file). */
function exported(python: string): TorchReference {
  reference ??= torchvisionReference(python, 'resnet18', join(root, 'resnet18'), { classes: CLASSES, size: SIDE, batch: 3, seed: 4, onnx: true });
  return reference;
}

/** PyTorch's batch (NCHW, as the model saw it) in NHWC, normalised the dataset's way instead. */
function datasetView(images: { data: Float32Array; shape: number[] }, from: typeof IMAGENET, to: typeof IMAGENET): tf.Tensor4D {
  const [n, c, h, w] = images.shape;
  const out = new Float32Array(images.data.length);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < c; k++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const pixel = images.data[((i * c + k) * h + y) * w + x] * from.std[k] + from.mean[k];
          out[((i * h + y) * w + x) * c + k] = (pixel - to.mean[k]) / to.std[k];
        }
  return tf.tensor4d(out, [n, h, w, c]);
}

test("an ONNX export of torchvision's resnet18 gives PyTorch's logits as a teacher, re-normalising the dataset's images", { timeout: 120_000 }, async (t) => {
  const python = torchOrSkip(t);
  if (!python) return;
  const ref = exported(python);
  const io = readSafetensors(ref.io);
  const want = io.get('logits')!.data;
  // The model's own statistics on both sides: fed as is.
  const same = await OnnxTeacher.open({ path: ref.onnx, input: { layout: 'NCHW' }, normalization: IMAGENET, imageShape: [SIDE, SIDE, 3], classes: CLASSES, name: 't' });
  const x = datasetView(io.get('images')!, IMAGENET, IMAGENET);
  const a = await same.logits(x);
  assert.deepEqual(a.shape, [3, CLASSES]);
  assert.ok(relativeError((await a.data()) as Float32Array, want) < 1e-4);
  // A dataset normalised otherwise: the teacher maps its images back to the model's statistics.
  const other = await OnnxTeacher.open({
    path: ref.onnx,
    input: { layout: 'NCHW', ...IMAGENET },
    normalization: DATASET_NORM,
    imageShape: [SIDE, SIDE, 3],
    classes: CLASSES,
    name: 't',
  });
  const xd = datasetView(io.get('images')!, IMAGENET, DATASET_NORM);
  const b = await other.logits(xd);
  const error = relativeError((await b.data()) as Float32Array, want);
  assert.ok(error < 1e-4, `relative error ${error}`);
  // Without the model's statistics the same images give other logits: the re-normalisation matters.
  const c = await same.logits(xd);
  assert.ok(relativeError((await c.data()) as Float32Array, want) > 1e-2);
  // A teacher for another number of classes is a one-line error naming the file.
  const wrong = await OnnxTeacher.open({ path: ref.onnx, input: { layout: 'NCHW' }, normalization: IMAGENET, imageShape: [SIDE, SIDE, 3], classes: 10, name: 't' });
  await assert.rejects(wrong.logits(x), (e: Error) => e instanceof CohortError && /teacher t: ONNX model .*model\.onnx outputs \[3, 4\], expected \[3, 10\]/.test(e.message));
  // Asked for the GPU (a worker on a hardware adapter), it runs on onnxruntime's WebGPU provider,
  // or where onnxruntime finds no adapter (this machine) on the CPU, saying why, with the same logits.
  const gpu = await OnnxTeacher.open({ path: ref.onnx, input: { layout: 'NCHW' }, normalization: IMAGENET, imageShape: [SIDE, SIDE, 3], classes: CLASSES, name: 't', gpu: true });
  if (gpu.placement.provider === 'cpu') assert.match(gpu.placement.fallback ?? '', /adapter/i);
  const g = await gpu.logits(x);
  assert.ok(relativeError((await g.data()) as Float32Array, want) < 1e-4);
  assert.equal(same.placement.provider, 'cpu');
  assert.equal(same.placement.fallback, undefined);
  tf.dispose([x, xd, a, b, c, g]);
  await Promise.all([same, other, wrong, gpu].map((teacher) => teacher.dispose()));
  await assert.rejects(
    OnnxTeacher.open({ path: join(root, 'none.onnx'), input: { layout: 'NCHW' }, normalization: IMAGENET, imageShape: [SIDE, SIDE, 3], classes: CLASSES, name: 't' }),
    (e: Error) => e instanceof CohortError && /^teacher t: cannot open ONNX model .*none\.onnx/.test(e.message) && !e.message.includes('\n'),
  );
});

test("onnxruntime's WebGPU provider is tried only where the worker's backend is webgpu on a hardware adapter", () => {
  assert.deepEqual(onnxProviders({ choice: 'webgpu', adapter: { software: false } }), ['webgpu', 'cpu']);
  assert.deepEqual(onnxProviders({ choice: 'webgpu', adapter: { software: true } }), ['cpu']);
  assert.deepEqual(onnxProviders({ choice: 'wasm' }), ['cpu']);
});

test('onnx teachers in a run config: exactly one of model and onnx, input only with onnx', () => {
  const config = (teacher: object) => ({
    algorithm: 'kd',
    dataset: { name: 'fashion-mnist' },
    members: [{ name: 's', model: { name: 'mlp-student' } }],
    teachers: [{ name: 't', ...teacher }],
  });
  const run = resolveRunConfig(config({ onnx: 't.onnx', input: { mean: [0.5], std: [0.5] } }));
  assert.deepEqual(run.teachers[0].input, { layout: 'NCHW', mean: [0.5], std: [0.5] });
  assert.throws(() => resolveRunConfig(config({})), /config\.teachers\[0\]\.model: a teacher needs a 'model' \(a zoo network\) or an 'onnx' file/);
  assert.throws(
    () => resolveRunConfig(config({ onnx: 't.onnx', model: { name: 'mlp-student' } })),
    /config\.teachers\[0\]\.onnx: a teacher has either a 'model' or an 'onnx' file, not both/,
  );
  assert.throws(
    () => resolveRunConfig(config({ model: { name: 'mlp-student' }, input: { layout: 'NCHW' } })),
    /config\.teachers\[0\]\.input: 'input' describes an 'onnx' teacher's images/,
  );
  assert.throws(() => resolveRunConfig(config({ onnx: 't.onnx', input: { mean: [0.5] } })), /config\.teachers\[0\]\.input\.std: give both 'mean' and 'std'/);
  assert.throws(() => resolveRunConfig(config({ onnx: 't.onnx', input: { layout: 'NCWH' } })), /config\.teachers\[0\]\.input\.layout/);
});

/** An RGB IDX split of `n` random SIDE x SIDE images, labels cycling through the classes. */
function rgbIdx(split: string, n: number, seed: number) {
  const random = mulberry32(seed);
  const paths = { images: join(root, `${split}-images.idx`), labels: join(root, `${split}-labels.idx`) };
  writeIdxFile(paths.images, { dims: [n, SIDE, SIDE, 3], data: Uint8Array.from({ length: n * SIDE * SIDE * 3 }, () => Math.floor(random() * 256)) });
  writeIdxFile(paths.labels, { dims: [n], data: Uint8Array.from({ length: n }, (_, i) => i % CLASSES) });
  return paths;
}

/** The teacher's logits of an NHWC batch normalised the dataset's way, by onnxruntime on an NCHW buffer built here. */
async function referenceTeacherLogits(session: ort.InferenceSession, images: Float32Array, shape: number[]): Promise<tf.Tensor2D> {
  const [n, h, w, c] = shape;
  const nchw = new Float32Array(images.length);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let k = 0; k < c; k++) {
          const pixel = images[((i * h + y) * w + x) * c + k] * DATASET_NORM.std[k] + DATASET_NORM.mean[k];
          nchw[((i * c + k) * h + y) * w + x] = (pixel - IMAGENET.mean[k]) / IMAGENET.std[k];
        }
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', nchw, [n, c, h, w]) });
  const logits = out[session.outputNames[0]];
  return tf.tensor2d(logits.data as Float32Array, [n, CLASSES]);
}

test('a KD run with an ONNX teacher (cohort train, real processes) gives the student of the single-process loop', { timeout: 300_000 }, async (t) => {
  const python = torchOrSkip(t);
  if (!python) return;
  const ref = exported(python);
  const STEPS = 6;
  const BATCH = 8;
  const raw = {
    name: 'onnx-kd',
    algorithm: 'kd',
    dataset: { name: 'idx', train: rgbIdx('train', STEPS * BATCH, 1), test: rgbIdx('test', 8, 2), classes: CLASSES, normalization: DATASET_NORM },
    epochs: 1,
    batchSize: BATCH,
    seed: 7,
    temperature: 3,
    alpha: 0.6,
    members: [{ name: 's', model: { name: 'mlp-student' }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9 } }],
    teachers: [{ name: 't', onnx: ref.onnx, input: { layout: 'NCHW', ...IMAGENET }, backend: 'wasm' }],
    runDir: join(root, 'runs'),
    exchange: { timeoutMs: 120_000 },
  };
  const path = join(root, 'onnx-kd.json');
  writeFileSync(path, JSON.stringify(raw));
  const run = await runCli(['train', path, '--log-every', '2']);
  assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout + run.stderr, /t: ONNX model .*model\.onnx on onnxruntime's CPU provider/);
  assert.match(run.stdout + run.stderr, /eval epoch 1: t \(teacher\) accuracy/);

  // The reference: the same batches, the teacher's probabilities from onnxruntime, kdLoss and SGD.
  const config = resolveRunConfig(raw);
  const dataset = await openDataset(config.dataset);
  const train = dataset.loader({ split: 'train', batchSize: BATCH, seed: config.seed });
  const student = buildWorkerModel(config, config.members[0], 0, train.imageShape, CLASSES);
  const initial = await Promise.all(student.model.weights.map(async (w) => (await w.read().data()) as Float32Array));
  const optimizer = makeOptimizer(config.members[0].optimizer);
  const session = await ort.InferenceSession.create(ref.onnx, { executionProviders: ['cpu'] });
  let steps = 0;
  for await (const batch of train.epoch(0)) {
    const x = tf.tensor4d(batch.images, batch.shape);
    const y = tf.tensor1d(batch.labels, 'int32');
    const teacher = await referenceTeacherLogits(session, batch.images, batch.shape);
    const { probs, negEntropy } = temperedPredictions(teacher, config.temperature);
    const vars = student.model.trainableWeights.map((w) => w.read() as tf.Variable);
    const { value, grads } = tf.variableGrads(
      () => kdLoss(student.model.apply(x, { training: true }) as tf.Tensor2D, probs, y, { T: config.temperature, alpha: config.alpha, teacherIsProbs: true }),
      vars,
    );
    optimizer.applyGradients(grads);
    tf.dispose([x, y, teacher, probs, negEntropy, value, ...Object.values(grads)]);
    steps++;
  }
  assert.equal(steps, STEPS);
  await session.release();
  const saved = await readSavedWeights(finalWeightsDir(config, 's'));
  const expected = await Promise.all(student.model.weights.map(async (w) => (await w.read().data()) as Float32Array));
  assert.equal(saved.length, expected.length);
  let worst = 0;
  let moved = 0;
  saved.forEach(({ values }, k) => {
    for (let e = 0; e < values.length; e++) {
      worst = Math.max(worst, Math.abs(values[e] - expected[k][e]));
      moved = Math.max(moved, Math.abs(values[e] - initial[k][e]));
    }
  });
  assert.ok(moved > 1e-3, `the student did not train (largest change ${moved})`);
  assert.ok(worst < 1e-5, `largest weight difference from the reference ${worst}`);
  console.log(`# onnx-kd s: largest weight difference ${worst.toExponential(2)}, largest change in training ${moved.toExponential(2)}`);
  student.model.dispose();
});
