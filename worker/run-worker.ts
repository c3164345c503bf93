/**
 * A worker process: one cohort member or teacher. It joins the coordinator over a DEALER
 * socket, receives the run config, builds its model and data on its own backend (pinned to
 * its GPU), and trains: every step it sends its logits and, when its algorithm needs one,
 * awaits the coordinator's teaching signal before building the loss (one forward pass; the
 * gradient tape stays open across the await). It evaluates every `evalEvery` epochs, sending
 * its metrics and its test logits (for the cohort ensemble), and says `done` at the end.
 */
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { resolveRunConfig, type RunConfig, type WorkerConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import type { Batch, BatchSource } from '../shared/data/source.js';
import { initBackend, type BackendChoice } from '../shared/engine/backend.js';
import { CohortError } from '../shared/errors.js';
import { loadModelWeights, saveModel } from '../shared/io/model-files.js';
import { EnsembleMetrics } from '../shared/metrics/ensemble-metrics.js';
import { MetricAccumulator } from '../shared/metrics/index.js';
import { buildModel, type CohortModel } from '../shared/models/index.js';
import { PROTOCOL_VERSION, type Message } from '../shared/protocol/messages.js';
import { WorkerSocket } from '../shared/protocol/sockets.js';
import { asyncVariableGrads } from '../shared/training/async-grads.js';
import { learningRateAt } from '../shared/training/lr-schedule.js';
import { finalLogits, makeOptimizer, objectiveFor, setLearningRate, type Objective } from '../shared/training/objective.js';

export interface WorkerOptions {
  /** The coordinator's address, e.g. tcp://10.0.0.5:5555. */
  connect: string;
  member: string;
  /** Overrides the config's GPU for this worker. */
  gpu?: number;
  /** Overrides the config's backend for this worker. */
  backend?: BackendChoice;
  /** How long to wait for the coordinator's answers (default: the config's exchange timeout, 60 s before it is known). */
  timeoutMs?: number;
  log?: (line: string) => void;
}

/** The seed of member `index`'s initial weights when its model config names none: distinct per member. */
export function memberWeightSeed(runSeed: number, index: number): number {
  return runSeed * 1000 + index + 1;
}

/** Where a member's weights are saved at the end of a run (a teacher's `checkpoint` may point there). */
export function finalWeightsDir(config: RunConfig, member: string): string {
  return join(config.runDir, config.name, member, 'final');
}

/** Which worker of the config `name` is, and its role. */
export function findWorker(config: RunConfig, name: string): { worker: WorkerConfig; index: number; role: 'member' | 'teacher' } {
  const m = config.members.findIndex((w) => w.name === name);
  if (m >= 0) return { worker: config.members[m], index: m, role: 'member' };
  const t = config.teachers.findIndex((w) => w.name === name);
  if (t >= 0) return { worker: config.teachers[t], index: config.members.length + t, role: 'teacher' };
  const known = [...config.members, ...config.teachers].map((w) => w.name).join(', ');
  throw new CohortError(`no member or teacher named '${name}' in the run config (known: ${known})`);
}

export function buildWorkerModel(config: RunConfig, worker: WorkerConfig, index: number, imageShape: [number, number, number], classes: number): CohortModel {
  return buildModel({ inputShape: imageShape, classes, ...worker.model, seed: worker.model.seed ?? memberWeightSeed(config.seed, index) });
}

function tensorsOf(batch: Batch): { x: tf.Tensor4D; y: tf.Tensor1D } {
  return { x: tf.tensor4d(batch.images, batch.shape), y: tf.tensor1d(batch.labels, 'int32') };
}

export async function runWorker(options: WorkerOptions): Promise<void> {
  const log = options.log ?? ((line: string) => console.log(line));
  const socket = new WorkerSocket(options.member);
  socket.connect(options.connect);
  try {
    await socket.send({
      type: 'join',
      protocolVersion: PROTOCOL_VERSION,
      member: options.member,
      backend: options.backend ?? 'config',
      device: options.gpu === undefined ? '' : `gpu ${options.gpu}`,
      pid: process.pid,
      host: hostname(),
    });
    const answer = await socket.receive(options.timeoutMs ?? 60_000);
    if (answer.type === 'reject') throw new CohortError(`the coordinator refused worker ${options.member}: ${answer.reason}`);
    if (answer.type !== 'welcome') throw new CohortError(`worker ${options.member}: expected a welcome, got ${answer.type}`);
    const config = resolveRunConfig(answer.config);
    await train(config, answer.startStep, socket, options, log);
  } catch (error) {
    await socket.send({ type: 'error', message: (error as Error).message }).catch(() => {});
    throw error;
  } finally {
    socket.close();
  }
}

async function train(config: RunConfig, startStep: number, socket: WorkerSocket, options: WorkerOptions, log: (line: string) => void): Promise<void> {
  const { worker, index, role } = findWorker(config, options.member);
  const timeoutMs = options.timeoutMs ?? config.exchange.timeoutMs;
  const active = await initBackend({ backend: options.backend ?? worker.backend, gpu: options.gpu ?? worker.gpu });
  log(`${worker.name}: backend ${active.choice} on ${active.device}`);
  const dataset = await openDataset(config.dataset);
  const downscale = role === 'teacher' && config.teacherSeesDownscaled ? (worker.downscale ?? studentDownscale(config)) : worker.downscale;
  const train = dataset.loader({ split: 'train', batchSize: config.batchSize, seed: config.seed, memberSeed: worker.augmentSeed, downscale, limit: config.trainLimit });
  const test = dataset.loader({ split: 'test', batchSize: 500, seed: config.seed, downscale });
  const built = buildWorkerModel(config, worker, index, train.imageShape, dataset.classNames.length);
  const checkpoint = 'checkpoint' in worker ? (worker.checkpoint as string | undefined) : undefined;
  if (checkpoint) {
    loadModelWeights(built.model, checkpoint);
    log(`${worker.name}: loaded weights from ${checkpoint}`);
  }
  const objective = objectiveFor(config, built.exits);
  const optimizer = makeOptimizer(worker.optimizer);
  const totalSteps = train.batchesPerEpoch * config.epochs;
  const exchange = { float16: config.exchange.float16 };
  if (startStep > 0) train.restore({ epoch: Math.floor(startStep / train.batchesPerEpoch), batch: startStep % train.batchesPerEpoch });
  let lastLoss: number | undefined;
  /** Teachers: the last step every student has finished (-1: none yet). */
  let studentsDone = startStep - 1;
  try {
    for (let epoch = Math.floor(startStep / train.batchesPerEpoch); epoch < config.epochs; epoch++) {
      /** Running metrics of this epoch's training batches (what distillistic logs). */
      const trainMetrics = new EnsembleMetrics();
      for await (const batch of train.epoch(epoch)) {
        const step = epoch * train.batchesPerEpoch + batch.batch;
        const { x, y } = tensorsOf(batch);
        if (role === 'teacher') {
          // Forward-only, ahead of the students by at most `teacherWindow` steps.
          while (step > studentsDone + config.exchange.teacherWindow) {
            const message = await expectMessage(socket, timeoutMs, `the students to finish step ${step - config.exchange.teacherWindow}`);
            if (message.type === 'advance') studentsDone = message.step;
          }
          const logits = tf.tidy(() => finalLogits(built.model.apply(x, { training: false }) as tf.Tensor, built.exits));
          await sendLogits(socket, step, batch, logits, undefined, exchange);
          tf.dispose([x, y, logits]);
          continue;
        }
        setLearningRate(optimizer, learningRateAt(worker.schedule, worker.optimizer.lr, { step, stepsPerEpoch: train.batchesPerEpoch, totalSteps }));
        const { value, grads } = await asyncVariableGrads(async () => {
          const outputs = built.model.apply(x, { training: true }) as tf.Tensor | tf.Tensor[];
          const logits = finalLogits(outputs, built.exits);
          const sent = await sendLogits(socket, step, batch, logits, lastLoss, exchange);
          trainMetrics.add([sent], batch.labels, logits.shape[1]);
          const teaching = objective.needsTeaching ? await receiveTeaching(socket, step, timeoutMs) : undefined;
          try {
            return objective.loss(outputs, y, teaching);
          } finally {
            teaching?.probs.dispose();
          }
        });
        optimizer.applyGradients(grads);
        lastLoss = (await value.data())[0];
        tf.dispose([x, y, value, ...Object.values(grads)]);
      }
      if ((epoch + 1) % config.evalEvery === 0 || epoch === config.epochs - 1) {
        await evaluateAndReport(built, test, epoch, socket, exchange, role === 'member' ? trainMetrics : undefined);
      }
    }
    if (role === 'member') {
      const dir = finalWeightsDir(config, worker.name);
      mkdirSync(dir, { recursive: true });
      await saveModel(built.model, dir);
      log(`${worker.name}: final weights saved to ${dir}`);
    }
    await socket.send({ type: 'done', member: worker.name });
    await awaitShutdown(socket, timeoutMs);
  } finally {
    await Promise.all([train.close(), test.close()]);
    optimizer.dispose();
    built.model.dispose();
  }
}

/** Cross-quality with teacherSeesDownscaled: the teacher takes the (first) student's downscale. */
function studentDownscale(config: RunConfig) {
  return config.members.find((m) => m.downscale)?.downscale;
}

/** Sends the step's logits; returns their values. */
async function sendLogits(socket: WorkerSocket, step: number, batch: Batch, logits: tf.Tensor2D, loss: number | undefined, exchange: { float16: boolean }): Promise<Float32Array> {
  const data = (await logits.data()) as Float32Array;
  await socket.send(
    {
      type: 'logits',
      step,
      epoch: batch.epoch,
      batch: batch.batch,
      indices: { dtype: 'uint32', shape: [batch.indices.length], data: batch.indices },
      logits: { dtype: 'float32', shape: logits.shape, data },
      ...(loss === undefined ? {} : { loss }),
    },
    exchange,
  );
  return data;
}

async function receiveTeaching(socket: WorkerSocket, step: number, timeoutMs: number) {
  const message = await expectMessage(socket, timeoutMs, `the teaching signal of step ${step}`);
  if (message.type !== 'teaching') throw new CohortError(`${socket.member}: expected the teaching signal of step ${step}, got ${message.type}`);
  if (message.step !== step) throw new CohortError(`${socket.member}: teaching signal for step ${message.step} arrived at step ${step}`);
  const t = message.teaching;
  return { probs: tf.tensor2d(t.data as Float32Array, t.shape as [number, number]), peerNegEntropy: message.peerNegEntropy };
}

/** The next message that is not a heartbeat; a shutdown or error from the coordinator ends the worker. */
async function expectMessage(socket: WorkerSocket, timeoutMs: number, what: string): Promise<Message> {
  for (;;) {
    let message: Message;
    try {
      message = await socket.receive(timeoutMs);
    } catch (error) {
      throw new CohortError(`${socket.member}: waiting for ${what}: ${(error as Error).message}`);
    }
    if (message.type === 'heartbeat') continue;
    if (message.type === 'shutdown') throw new CohortError(`${socket.member}: the coordinator stopped the run: ${message.reason}`);
    if (message.type === 'error') throw new CohortError(`${socket.member}: the coordinator failed: ${message.message}`);
    return message;
  }
}

async function awaitShutdown(socket: WorkerSocket, timeoutMs: number): Promise<void> {
  for (;;) {
    const message = await socket.receive(timeoutMs);
    if (message.type === 'shutdown') return;
    if (message.type === 'error') throw new CohortError(`${socket.member}: the coordinator failed: ${message.message}`);
  }
}

async function evaluateAndReport(
  built: CohortModel,
  test: BatchSource,
  epoch: number,
  socket: WorkerSocket,
  exchange: { float16: boolean },
  trainMetrics?: EnsembleMetrics,
): Promise<void> {
  const metrics = new MetricAccumulator({ bins: 15 });
  test.restore({ epoch: 0, batch: 0 });
  for await (const batch of test.epoch(0)) {
    const { x, y } = tensorsOf(batch);
    const logits = tf.tidy(() => finalLogits(built.model.apply(x, { training: false }) as tf.Tensor, built.exits));
    await metrics.add(logits, y);
    const data = (await logits.data()) as Float32Array;
    await socket.send(
      {
        type: 'evalLogits',
        epoch,
        batch: batch.batch,
        indices: { dtype: 'uint32', shape: [batch.indices.length], data: batch.indices },
        labels: { dtype: 'int32', shape: [batch.labels.length], data: batch.labels },
        logits: { dtype: 'float32', shape: logits.shape, data },
      },
      exchange,
    );
    tf.dispose([x, y, logits]);
  }
  const r = metrics.result();
  const t = trainMetrics?.result();
  const train: Record<string, number> = t ? { trainAccuracy: t.accuracy, trainNll: t.nll, trainEce: t.ece } : {};
  await socket.send({ type: 'eval', epoch, metrics: { accuracy: r.accuracy, nll: r.nll, ece: r.calibration.ece, entropy: r.entropy, count: r.count, ...train } });
}
