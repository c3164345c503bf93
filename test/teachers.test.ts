/**
 * Teacher workers, each a real `cohort worker` process driven by a fake coordinator made here
 * (a bare ZeroMQ ROUTER with the real codec), on a small IDX dataset, wasm backend:
 *
 * - a teacher is forward-only and runs at most `exchange.teacherWindow` steps ahead of the
 *   students: with no `advance` it sends exactly W predictions (steps 0..W-1) and then nothing;
 *   `advance` of step s lets it go exactly up to step s + W;
 * - cross-quality KD: by default the teacher sees full-resolution images and the student the
 *   downscaled view of the same samples at the same step; with `teacherSeesDownscaled` the
 *   teacher sees the downscaled view too. Checked against the teacher's and the student's
 *   models applied here to the full and to the downscaled batch (downscaled here with the
 *   transform's `applyDownscale`): the predictions match the expected view within 1e-6 and are
 *   far from the other view's;
 * - teacherSeesDownscaled with the study's CNN teacher, whose saved weights were made at 28x28:
 *   the 14x14 view upsampled back (bilinear) is what it sees; with no upsample the config is
 *   refused (test/run-config.test.ts).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { resolveRunConfig, type RunConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import { applyDownscale, type DownscaleSpec } from '../shared/data/transforms.js';
import { initBackend } from '../shared/engine/backend.js';
import { loadModelWeights, saveModel } from '../shared/io/model-files.js';
import { buildModel } from '../shared/models/index.js';
import type { Message } from '../shared/protocol/messages.js';
import { finalLogits } from '../shared/training/objective.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import { buildWorkerModel } from '../worker/run-worker.js';
import { startCli, type CliProcess } from './helpers/cli.js';
import { FakeCoordinator, randomIdx } from './helpers/fake-coordinator.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-teachers-'));
after(() => rmSync(root, { recursive: true, force: true }));

const dataset = { name: 'idx', train: randomIdx(root, 'train', 96, 1), test: randomIdx(root, 'test', 16, 2), classes: 10 };
// The fake coordinator keeps the workers alive with heartbeats; a generous liveness on top.
const recovery = { livenessMs: 60_000, heartbeatMs: 500 };

before(async () => {
  await initBackend({ backend: 'wasm' });
});

function worker(endpoint: string, member: string): CliProcess {
  return startCli(['worker', '--connect', endpoint, '--member', member, '--insecure', '--backend', 'wasm', '--timeout', '60'], { timeoutMs: 90_000 });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A KD run of student `s` and teacher `t` (small MLPs), batch 4: 24 steps in the epoch, far more than the window. */
function kdConfig(name: string, teacherWindow: number) {
  return {
    name,
    algorithm: 'kd',
    dataset,
    batchSize: 4,
    seed: 3,
    members: [{ name: 's', model: { name: 'mlp-student' }, backend: 'wasm' }],
    teachers: [{ name: 't', model: { name: 'mlp-student', seed: 9 }, backend: 'wasm' }],
    exchange: { teacherWindow },
    recovery,
    runDir: join(root, 'runs'),
  };
}

test('a teacher runs at most teacherWindow steps ahead: W predictions, then one more per advanced step', { timeout: 90_000 }, async () => {
  const W = 3;
  const config = { ...kdConfig('teacher-window', W), temperature: 2 };
  const coordinator = new FakeCoordinator(config);
  const endpoint = await coordinator.start();
  const teacher = worker(endpoint, 't');
  const steps = () => coordinator.received('predictions', 't').map((a) => a.message.step);
  const diagnostics = () => `\nsteps so far: [${steps()}]\nteacher output:\n${teacher.output()}`;
  try {
    await coordinator.until(() => steps().length >= W, 60_000, `the teacher's first ${W} predictions`, diagnostics);
    // Nothing more while no student has finished a step: one teacher step takes milliseconds.
    await sleep(3000);
    assert.deepEqual(steps(), [0, 1, 2], `exactly steps 0..${W - 1} before any advance${diagnostics()}`);

    await coordinator.send('t', { type: 'advance', step: 0 });
    await coordinator.until(() => steps().length >= W + 1, 10_000, 'the prediction of step W after advance 0', diagnostics);
    await sleep(2000);
    assert.deepEqual(steps(), [0, 1, 2, 3], `advance of step 0 allows exactly step ${W}${diagnostics()}`);

    // Advancing to step 5 allows steps up to 5 + W = 8: five more, and no sixth.
    await coordinator.send('t', { type: 'advance', step: 5 });
    await coordinator.until(() => steps().length >= 9, 10_000, 'the predictions up to step 8 after advance 5', diagnostics);
    await sleep(2000);
    assert.deepEqual(steps(), [0, 1, 2, 3, 4, 5, 6, 7, 8], diagnostics());

    // Forward-only: predictions of the training batches in the cohort's order (the same batches
    // as a loader made here), softmax rows, no loss (a teacher never trains), nothing else.
    const resolved = resolveRunConfig(config);
    const loader = (await openDataset(resolved.dataset)).loader({ split: 'train', batchSize: resolved.batchSize, seed: resolved.seed });
    const batches = [];
    for await (const b of loader.epoch(0)) if (batches.push(b) === 9) break;
    for (const { message: p } of coordinator.received('predictions', 't')) {
      assert.deepEqual([...p.indices.data], [...batches[p.step].indices], `indices of step ${p.step}`);
      assert.equal(p.epoch, 0);
      assert.equal(p.batch, p.step);
      assert.deepEqual(p.probs.shape, [4, 10]);
      for (let r = 0; r < 4; r++) {
        const sum = p.probs.data.subarray(r * 10, r * 10 + 10).reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(sum - 1) < 1e-5, `row ${r} of step ${p.step} sums to ${sum}`);
      }
      assert.equal(p.loss, undefined, 'a teacher reports no training loss');
    }
    const kinds = new Set(coordinator.arrivals.filter((a) => a.worker === 't').map((a) => a.message.type));
    assert.deepEqual([...kinds].sort(), ['heartbeat', 'join', 'predictions'], `message types from the teacher${diagnostics()}`);
    assert.deepEqual(coordinator.undecodable, []);

    // A shutdown stops it, with the reason.
    await coordinator.send('t', { type: 'shutdown', reason: 'test over' });
    const exit = await teacher.exited;
    assert.match(exit.output, /the coordinator stopped the run: test over/);
  } finally {
    teacher.kill();
    await coordinator.close();
  }
});

test('advances that reach a teacher between its steps move its window: a teacher slower than its students does not stall', { timeout: 90_000 }, async () => {
  // The students are instant: the coordinator advances step k as soon as the teacher's step k
  // arrives, so the advances land while the teacher computes its next steps (which once dropped
  // them, and the cohort stalled when the window filled).
  const config = kdConfig('teacher-behind', 2);
  const coordinator = new FakeCoordinator(config);
  const endpoint = await coordinator.start();
  const teacher = worker(endpoint, 't');
  const steps = () => coordinator.received('predictions', 't').map((a) => a.message.step);
  let advanced = -1;
  const pump = setInterval(() => {
    for (const step of steps()) {
      if (step <= advanced) continue;
      advanced = step;
      void coordinator.send('t', { type: 'advance', step });
    }
  }, 2);
  try {
    await coordinator.until(
      () => steps().length >= 24,
      60_000,
      'all 24 predictions of the epoch',
      () => `\nsteps so far: [${steps()}]\nteacher output:\n${teacher.output()}`,
    );
    assert.deepEqual(
      steps(),
      Array.from({ length: 24 }, (_, i) => i),
    );
  } finally {
    clearInterval(pump);
    teacher.kill();
    await coordinator.close();
  }
});

interface View {
  /** The full-resolution batch and its downscaled view, NHWC. */
  full: tf.Tensor4D;
  down: tf.Tensor4D;
  indices: number[];
}

/** The first `steps` training batches, full and downscaled here with the transform's applyDownscale. */
async function views(config: RunConfig, spec: DownscaleSpec, steps: number): Promise<View[]> {
  const loader = (await openDataset(config.dataset)).loader({ split: 'train', batchSize: config.batchSize, seed: config.seed, limit: config.trainLimit });
  const out: View[] = [];
  for await (const b of loader.epoch(0)) {
    const [n, side, , channels] = b.shape;
    const small = spec.upsample === 'none' ? spec.size : side;
    const per = side * side * channels;
    const down = new Float32Array(n * small * small * channels);
    for (let i = 0; i < n; i++) down.set(applyDownscale(b.images.subarray(i * per, (i + 1) * per), side, channels, spec), i * small * small * channels);
    out.push({ full: tf.tensor4d(b.images, b.shape), down: tf.tensor4d(down, [n, small, small, channels]), indices: [...b.indices] });
    if (out.length === steps) break;
  }
  return out;
}

/** softmax(model(x) / T) as a worker computes it, for the worker `name` of `config` built for input `x`. */
async function predictionsOf(config: RunConfig, name: string, x: tf.Tensor4D, training: boolean): Promise<Float32Array> {
  const all = [...config.members, ...config.teachers];
  const index = all.findIndex((w) => w.name === name);
  const built = buildWorkerModel(config, all[index], index, x.shape.slice(1) as [number, number, number], 10);
  const checkpoint = config.teachers.find((t) => t.name === name)?.checkpoint;
  if (checkpoint) loadModelWeights(built.model, checkpoint);
  const logits = tf.tidy(() => finalLogits(built.model.apply(x, { training }) as tf.Tensor, built.exits));
  const { probs, negEntropy } = temperedPredictions(logits, config.temperature);
  const data = (await probs.data()) as Float32Array;
  tf.dispose([logits, probs, negEntropy]);
  built.model.dispose();
  return data;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
};

/**
 * A cross-quality KD run of a teacher and a downscaled student, each a real worker process; the
 * fake coordinator relays the teacher's predictions to the student as its teaching signal and
 * advances the teacher, to the end of the epoch. Returns every step's predictions of both.
 */
async function crossQualityRun(
  name: string,
  downscale: DownscaleSpec,
  teacherSeesDownscaled: boolean,
  models: { student: Record<string, unknown>; teacher: Record<string, unknown>; checkpoint?: string } = {
    student: { name: 'mlp-student' },
    teacher: { name: 'mlp-teacher', dropout: 0 },
  },
) {
  const raw = {
    name,
    algorithm: 'cross_quality_kd',
    dataset,
    batchSize: 8,
    trainLimit: 32, // 4 steps
    seed: 5,
    temperature: 2,
    teacherSeesDownscaled,
    members: [{ name: 'student', model: models.student, backend: 'wasm', downscale, optimizer: { name: 'sgd', lr: 0.01, momentum: 0.9 } }],
    teachers: [{ name: 'teacher', model: models.teacher, backend: 'wasm', ...(models.checkpoint ? { checkpoint: models.checkpoint } : {}) }],
    exchange: { teacherWindow: 2 },
    recovery,
    runDir: join(root, 'runs'),
  };
  const config = resolveRunConfig(raw);
  const predictions = new Map<string, Extract<Message, { type: 'predictions' }>>();
  const served = new Set<number>();
  const coordinator = new FakeCoordinator(raw, async (worker, message) => {
    if (message.type !== 'predictions') return;
    predictions.set(`${worker}/${message.step}`, message);
    const step = message.step;
    const s = predictions.get(`student/${step}`);
    const t = predictions.get(`teacher/${step}`);
    if (s && t && !served.has(step)) {
      served.add(step);
      await coordinator.send('student', {
        type: 'teaching',
        step,
        teaching: { dtype: 'float32', shape: t.probs.shape, data: Float32Array.from(t.probs.data) },
        peerCount: 1,
        generation: 0,
      });
      await coordinator.send('teacher', { type: 'advance', step });
    }
  });
  const endpoint = await coordinator.start();
  const processes = { teacher: worker(endpoint, 'teacher'), student: worker(endpoint, 'student') };
  const diagnostics = () =>
    Object.entries(processes)
      .map(([n, p]) => `\n${n} output:\n${p.output()}`)
      .join('');
  try {
    await coordinator.until(() => coordinator.received('done').length === 2, 80_000, 'both workers to finish the epoch', diagnostics);
    for (const n of ['teacher', 'student']) await coordinator.send(n, { type: 'shutdown', reason: 'run complete' });
    for (const [n, p] of Object.entries(processes)) {
      const exit = await p.exited;
      assert.equal(exit.code, 0, `${n} exit:\n${exit.output}`);
    }
  } finally {
    for (const p of Object.values(processes)) p.kill();
    await coordinator.close();
  }
  assert.deepEqual(coordinator.undecodable, []);
  const steps = 4;
  const at = (worker: string, step: number) => {
    const p = predictions.get(`${worker}/${step}`);
    assert.ok(p, `no predictions of ${worker} at step ${step}`);
    return p;
  };
  return { config, steps, at };
}

/**
 * Checks one cross-quality run: the same samples for teacher and student at every step; the
 * teacher's predictions match `teacherView` of the batch and not the other view; the student's
 * first predictions (before any update) match its model on the downscaled batch.
 */
async function checkCrossQuality(run: Awaited<ReturnType<typeof crossQualityRun>>, downscale: DownscaleSpec, teacherView: 'full' | 'down') {
  const { config, steps, at } = run;
  const batches = await views(config, downscale, steps);
  assert.equal(batches.length, steps);
  try {
    for (let step = 0; step < steps; step++) {
      const t = at('teacher', step);
      const s = at('student', step);
      assert.deepEqual([...t.indices.data], batches[step].indices, `teacher's samples at step ${step}`);
      assert.deepEqual([...s.indices.data], batches[step].indices, `student's samples at step ${step}`);
      const expected = await predictionsOf(config, 'teacher', batches[step][teacherView], false);
      const other = await predictionsOf(config, 'teacher', batches[step][teacherView === 'full' ? 'down' : 'full'], false);
      const dExpected = maxDiff(t.probs.data, expected);
      const dOther = maxDiff(t.probs.data, other);
      console.log(`# ${config.name} step ${step}: teacher vs ${teacherView} view ${dExpected.toExponential(2)}, vs the other view ${dOther.toExponential(2)}`);
      assert.ok(dExpected < 1e-6, `step ${step}: the teacher's predictions differ from the teacher on the ${teacherView} batch by ${dExpected}`);
      assert.ok(dOther > 1e-3, `step ${step}: the teacher's predictions are as close to the other view (${dOther}): the check cannot tell the views apart`);
    }
    // The student before its first update: its model on the downscaled batch, not on the full one.
    const s0 = at('student', 0);
    const expected = await predictionsOf(config, 'student', batches[0].down, true);
    const dStudent = maxDiff(s0.probs.data, expected);
    assert.ok(dStudent < 1e-6, `student step 0 vs its model on the downscaled batch: ${dStudent}`);
    if (downscale.upsample !== 'none') {
      const onFull = await predictionsOf(config, 'student', batches[0].full, true);
      assert.ok(maxDiff(s0.probs.data, onFull) > 1e-3, 'the student step-0 predictions are as close to the full-resolution batch');
    }
    // The student learnt from the teacher: it reported a loss from step 1 on.
    for (let step = 1; step < steps; step++) assert.ok(Number.isFinite(at('student', step).loss), `student loss at step ${step}`);
  } finally {
    for (const b of batches) tf.dispose([b.full, b.down]);
  }
}

test('cross-quality KD: by default the teacher sees the full 28x28 images, the student the 14x14 view of the same samples', { timeout: 120_000 }, async () => {
  const downscale: DownscaleSpec = { size: 14, upsample: 'none' };
  const run = await crossQualityRun('cq-default', downscale, false);
  await checkCrossQuality(run, downscale, 'full');
});

test('cross-quality KD with teacherSeesDownscaled: the teacher sees the 14x14 view too', { timeout: 120_000 }, async () => {
  const downscale: DownscaleSpec = { size: 14, upsample: 'none' };
  const run = await crossQualityRun('cq-downscaled', downscale, true);
  await checkCrossQuality(run, downscale, 'down');
});

test('cross-quality KD with teacherSeesDownscaled and a bilinear upsample: the same teacher weights see the degraded 28x28 view', { timeout: 120_000 }, async () => {
  // Both views are 28x28 here, so the teacher's model (and weights) is the same for both and
  // only the input tells them apart.
  const downscale: DownscaleSpec = { size: 14, upsample: 'bilinear' };
  const run = await crossQualityRun('cq-bilinear', downscale, true);
  await checkCrossQuality(run, downscale, 'down');
});

test("teacherSeesDownscaled with the study's CNN teacher (saved weights made at 28x28) and a 14x14 student: it sees the view upsampled back", { timeout: 120_000 }, async () => {
  // The study's teacher (examples/study/10-cross-quality-kd.yaml): cnn-teacher, its final
  // weights saved at 28x28 (its dense layer takes 3x3x128 features); the student cnn-student.
  const checkpoint = join(root, 'study-teacher', 'final');
  mkdirSync(checkpoint, { recursive: true });
  const teacher = buildModel({ name: 'cnn-teacher', inputShape: [28, 28, 1], classes: 10, dropout: 0, seed: 11 });
  await saveModel(teacher.model, checkpoint);
  teacher.model.dispose();
  const downscale: DownscaleSpec = { size: 14, upsample: 'bilinear' };
  const run = await crossQualityRun('cq-study-teacher', downscale, true, { student: { name: 'cnn-student' }, teacher: { name: 'cnn-teacher', dropout: 0 }, checkpoint });
  await checkCrossQuality(run, downscale, 'down');
});
