/**
 * A worker process: one cohort member or teacher. It joins the coordinator over a DEALER
 * socket, receives the run config, builds its model and data on its own backend (pinned to
 * its GPU), and trains: every step it sends its predictions (softmax(z/T)) and, when its
 * algorithm needs one, awaits the coordinator's teaching signal before building the loss (one
 * forward pass; the gradient tape stays open across the await). Every `checkpoint.everySteps`
 * steps a member writes its part of the global checkpoint. It evaluates every `evalEvery`
 * epochs, sending its metrics and its test logits (for the cohort ensemble), saves its final
 * weights and says `done`. Faults: a `rollback` from the coordinator (another worker was lost)
 * restores the named checkpoint and continues from its step; a coordinator silent for
 * `recovery.livenessMs` is presumed restarted, and the worker joins again and continues from
 * the step the new coordinator names.
 */
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { resolveRunConfig, runDirectory, type RunConfig, type WorkerConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import type { Batch, BatchSource } from '../shared/data/source.js';
import { backendMemory, initBackend, shutdownBackend, type BackendChoice } from '../shared/engine/backend.js';
import { CohortError } from '../shared/errors.js';
import { loadModelWeights, saveModel } from '../shared/io/model-files.js';
import { MetricAccumulator } from '../shared/metrics/index.js';
import { buildModel, exitModel, type CohortModel } from '../shared/models/index.js';
import { setDropoutStep } from '../shared/models/seeded-dropout.js';
import { checkpointDir, loadMemberCheckpoint, saveMemberCheckpoint } from '../shared/io/checkpoint.js';
import { PROTOCOL_VERSION, type Message, type MessageOf } from '../shared/protocol/messages.js';
import type { WorkerKeys } from '../shared/protocol/curve.js';
import { ReceiveTimeout, WorkerSocket } from '../shared/protocol/sockets.js';
import { asyncVariableGrads } from '../shared/training/async-grads.js';
import { evaluate } from '../shared/training/evaluate.js';
import { learningRateAt } from '../shared/training/lr-schedule.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import { finalLogits, makeOptimizer, objectiveFor, setLearningRate, type Objective } from '../shared/training/objective.js';

export interface WorkerOptions {
  /** The coordinator's address, e.g. tcp://10.0.0.5:5555. */
  connect: string;
  member: string;
  /** Overrides the config's GPU for this worker. */
  gpu?: number;
  /** Overrides the config's backend for this worker. */
  backend?: BackendChoice;
  /** CURVE keys (this worker's pair and the coordinator's public key); absent: plain tcp. */
  curve?: WorkerKeys;
  /** How long to wait for the coordinator's first welcome (default 60 s); later silences are judged by the config's recovery.livenessMs. */
  timeoutMs?: number;
  log?: (line: string) => void;
}

/** The seed of member `index`'s initial weights when its model config names none: distinct per member. */
export function memberWeightSeed(runSeed: number, index: number): number {
  return runSeed * 1000 + index + 1;
}

/** Where a member's weights are saved at the end of a run (a teacher's `checkpoint` may point there). */
export function finalWeightsDir(config: RunConfig, member: string): string {
  return join(runDirectory(config), member, 'final');
}

/** Which worker of the config `name` is, and its role. */
export function findWorker(config: RunConfig, name: string): { worker: WorkerConfig; index: number; role: 'member' | 'teacher' } {
  const m = config.members.findIndex((w) => w.name === name);
  if (m >= 0) return { worker: config.members[m], index: m, role: 'member' };
  const t = config.teachers.findIndex((w) => w.name === name);
  if (t >= 0) return { worker: config.teachers[t], index: config.members.length + t, role: 'teacher' };
  const known = [...config.members, ...config.teachers].map((w) => w.name).join(', ');
  throw new CohortError(`no member or teacher named '${name}' in the run config (known: ${known})`, { code: 'UNKNOWN_WORKER' });
}

export function buildWorkerModel(config: RunConfig, worker: WorkerConfig, index: number, imageShape: [number, number, number], classes: number): CohortModel {
  return buildModel({ inputShape: imageShape, classes, ...worker.model, seed: worker.model.seed ?? memberWeightSeed(config.seed, index) });
}

function tensorsOf(batch: Batch): { x: tf.Tensor4D; y: tf.Tensor1D } {
  return { x: tf.tensor4d(batch.images, batch.shape), y: tf.tensor1d(batch.labels, 'int32') };
}

/** Sends a join until the coordinator answers with a welcome (or refuses), for at most `timeoutMs`. */
async function joinCoordinator(socket: WorkerSocket, options: WorkerOptions, timeoutMs: number): Promise<MessageOf<'welcome'>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await socket.send({
      type: 'join',
      protocolVersion: PROTOCOL_VERSION,
      member: options.member,
      backend: options.backend ?? 'config',
      device: options.gpu === undefined ? '' : `gpu ${options.gpu}`,
      pid: process.pid,
      host: hostname(),
    });
    // Ask again every 2 s: a coordinator that is (re)starting has not seen the first join.
    const resend = Date.now() + Math.min(2000, Math.max(0, deadline - Date.now()));
    while (Date.now() < resend) {
      let answer: Message;
      try {
        answer = await socket.receive(Math.max(1, resend - Date.now()));
      } catch (error) {
        if (error instanceof ReceiveTimeout) break;
        throw error;
      }
      if (answer.type === 'reject' && !answer.retryable) throw new CohortError(`the coordinator refused worker ${options.member}: ${answer.reason}`, { code: 'JOIN_REFUSED' });
      if (answer.type === 'welcome') return answer;
      if (answer.type === 'reject') {
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, resend - Date.now())));
        break;
      }
      // Anything else was sent to this member before the coordinator restarted: stale.
    }
    if (Date.now() >= deadline) throw new CohortError(`worker ${options.member}: no welcome from the coordinator at ${options.connect} within ${timeoutMs / 1000} s`, { code: 'NO_WELCOME' });
  }
}

export async function runWorker(options: WorkerOptions): Promise<void> {
  const log = options.log ?? ((line: string) => console.log(line));
  const socket = new WorkerSocket(options.member, options.curve ? { curve: options.curve } : {});
  socket.connect(options.connect);
  try {
    const welcome = await joinCoordinator(socket, options, options.timeoutMs ?? 60_000);
    const config = resolveRunConfig(welcome.config);
    await train(config, welcome, socket, options, log);
  } catch (error) {
    await socket.send({ type: 'error', message: (error as Error).message }).catch(() => {});
    throw error;
  } finally {
    socket.close();
    shutdownBackend(); // a process holding a WebGPU device does not exit
  }
}

/** Thrown out of a step when the coordinator rolls the cohort back. */
class Rollback extends Error {
  /** `checkpointStep`: an elastic re-admission restores this step's checkpoint and continues at `message_.step`. */
  constructor(readonly message_: MessageOf<'rollback'>, readonly checkpointStep?: number) {
    super(`rollback to step ${message_.step}`);
  }
}

/** What a welcome tells a worker to do; a welcome that says something else re-admits it. */
const admission = (w: MessageOf<'welcome'>) => `${w.generation ?? 0}:${w.startStep}:${w.resume ?? ''}:${w.checkpointStep ?? ''}`;

/** Thrown when the coordinator has been silent (heartbeats included) for `livenessMs`. */
class CoordinatorLost extends Error {}

interface Session {
  socket: WorkerSocket;
  /** The coordinator is presumed dead after this long without any message from it. */
  livenessMs: number;
  /** When the coordinator was last heard from. */
  lastHeard: number;
  generation: number;
  /** The welcome this worker follows (admission()): the same again is a duplicate answer to a join. */
  admitted: string;
  /** Teachers: the last step every student has finished (from the coordinator's advance messages). */
  studentsDone: number;
}

async function train(config: RunConfig, welcome: MessageOf<'welcome'>, socket: WorkerSocket, options: WorkerOptions, log: (line: string) => void): Promise<void> {
  const { worker, index, role } = findWorker(config, options.member);
  const session: Session = { socket, livenessMs: config.recovery.livenessMs, lastHeard: Date.now(), generation: welcome.generation ?? 0, admitted: admission(welcome), studentsDone: -1 };
  // Heartbeats from the welcome on: loading the backend and the data can take longer than livenessMs.
  const heartbeat = setInterval(() => void socket.send({ type: 'heartbeat' }).catch(() => {}), config.recovery.heartbeatMs);
  heartbeat.unref();
  const active = await initBackend({ backend: options.backend ?? worker.backend, gpu: options.gpu ?? worker.gpu });
  log(`${worker.name}: backend ${active.choice} on ${active.device}`);
  const dataset = await openDataset(config.dataset);
  const downscale = role === 'teacher' && config.teacherSeesDownscaled ? (worker.downscale ?? studentDownscale(config)) : worker.downscale;
  const train = dataset.loader({ split: 'train', batchSize: config.batchSize, seed: config.seed, memberSeed: worker.augmentSeed, downscale, limit: config.trainLimit });
  const test = dataset.loader({ split: 'test', batchSize: 500, seed: config.seed, downscale });
  const stepsPerEpoch = train.batchesPerEpoch;
  const totalSteps = stepsPerEpoch * config.epochs;
  const exchange = { float16: config.exchange.float16 };
  const runDir = runDirectory(config);

  const teacherCheckpoint = 'checkpoint' in worker ? (worker.checkpoint as string | undefined) : undefined;
  /** The initial state: seeded weights (or a teacher's checkpoint) and a new optimizer. */
  const initialState = () => {
    const model = buildWorkerModel(config, worker, index, train.imageShape, dataset.classNames.length);
    if (teacherCheckpoint) loadModelWeights(model.model, teacherCheckpoint);
    return { built: model, optimizer: makeOptimizer(worker.optimizer) };
  };
  let { built, optimizer } = initialState();
  if (teacherCheckpoint) log(`${worker.name}: loaded weights from ${teacherCheckpoint}`);
  const objective = objectiveFor(config, built.exits);
  /** Back to the initial state, for a rollback to step 0. */
  const reinitialise = () => {
    built.model.dispose();
    optimizer.dispose();
    ({ built, optimizer } = initialState());
  };
  let lastLoss: number | undefined;
  /**
   * Restores the global checkpoint `dir` of step `checkpointStep` (members; teachers keep their
   * fixed weights) and returns the step to continue at: `step`, which is the checkpoint's own
   * step except on an elastic rejoin, where the cohort has gone on without this member.
   */
  const restore = async (step: number, dir: string | undefined, checkpointStep = step): Promise<number> => {
    if (role === 'teacher') return step;
    if (dir === undefined) {
      if (checkpointStep !== 0) throw new CohortError(`${worker.name}: asked to restore step ${checkpointStep} without a checkpoint`, { code: 'CHECKPOINT_MISMATCH' });
      reinitialise();
      lastLoss = undefined;
      if (step > 0) log(`${worker.name}: rejoining with its initial weights at step ${step}`);
      return step;
    }
    const state = await loadMemberCheckpoint(join(dir, worker.name), built.model, optimizer);
    if (state.step !== checkpointStep) throw new CohortError(`${worker.name}: checkpoint ${dir} holds step ${state.step}, expected ${checkpointStep}`, { code: 'CHECKPOINT_MISMATCH' });
    lastLoss = state.lastLoss;
    log(`${worker.name}: restored checkpoint ${dir} (step ${checkpointStep})${step !== checkpointStep ? `; rejoining the cohort at step ${step}` : ''}`);
    return step;
  };

  let position = await restore(welcome.startStep, welcome.resume, welcome.checkpointStep);
  try {
    for (;;) {
      try {
        await runFrom(position);
        return;
      } catch (error) {
        if (error instanceof Rollback) {
          const r = error.message_;
          log(`${worker.name}: rolling back to step ${r.step} (${r.reason})`);
          session.generation = r.generation;
          position = await restore(r.step, r.checkpoint, error.checkpointStep);
        } else if (error instanceof CoordinatorLost) {
          log(`${worker.name}: ${error.message}; joining again`);
          const again = await joinCoordinator(socket, options, config.exchange.timeoutMs);
          session.generation = again.generation ?? 0;
          session.admitted = admission(again);
          session.lastHeard = Date.now();
          position = await restore(again.startStep, again.resume, again.checkpointStep);
        } else {
          throw error;
        }
      }
    }
  } finally {
    clearInterval(heartbeat);
    await Promise.all([train.close(), test.close()]);
    optimizer.dispose();
    built.model.dispose();
  }

  /** Trains from global step `start` to the end, evaluates, saves, says done and awaits shutdown. */
  async function runFrom(start: number): Promise<void> {
    session.studentsDone = start - 1;
    /** Since the last progress report: when, and how many steps and images. */
    const since = { time: performance.now(), steps: 0, images: 0 };
    let lr: number | undefined;
    /** Every `progressEvery` steps and at the end of each epoch: what the live display and metrics.jsonl show. */
    const reportProgress = async (epoch: number, step: number, images: number, last: boolean, metrics?: MetricAccumulator) => {
      since.steps++;
      since.images += images;
      if ((step + 1) % config.progressEvery !== 0 && !last) return;
      const seconds = (performance.now() - since.time) / 1000;
      const accuracy = metrics && role === 'member' ? metrics.result().accuracy : undefined;
      await session.socket.send({
        type: 'progress',
        epoch,
        step,
        totalSteps,
        ...(role === 'member' && lastLoss !== undefined ? { loss: lastLoss } : {}),
        ...(accuracy !== undefined && Number.isFinite(accuracy) ? { accuracy } : {}),
        imagesPerSecond: seconds > 0 ? since.images / seconds : 0,
        stepMs: (1000 * seconds) / since.steps,
        ...(lr === undefined ? {} : { lr }),
        memory: backendMemory(),
        generation: session.generation,
      });
      Object.assign(since, { time: performance.now(), steps: 0, images: 0 });
    };
    // An elastic rejoin after the others trained the last step: evaluate what it has.
    if (start >= totalSteps && role === 'member') await evaluateAndReport(built, test, config.epochs - 1, session, exchange);
    for (let epoch = Math.floor(start / stepsPerEpoch); epoch < config.epochs; epoch++) {
      /** Running metrics of this epoch's training batches (what distillistic logs). */
      const trainMetrics = new MetricAccumulator({ bins: 15 });
      train.restore({ epoch, batch: epoch === Math.floor(start / stepsPerEpoch) ? start % stepsPerEpoch : 0 });
      for await (const batch of train.epoch(epoch)) {
        const step = epoch * stepsPerEpoch + batch.batch;
        await pollControl(session);
        const { x, y } = tensorsOf(batch);
        try {
          if (role === 'teacher') {
            // Forward-only, ahead of the students by at most `teacherWindow` steps.
            while (step > session.studentsDone + config.exchange.teacherWindow) {
              // control() takes the advance messages (and rollbacks, shutdowns) as they come.
              const message = await receiveLive(session);
              if (!control(session, message)) throw new CohortError(`${worker.name}: unexpected ${message.type} message while waiting for the students to finish step ${step - config.exchange.teacherWindow}`, { code: 'PROTOCOL_MISMATCH' });
            }
            const logits = tf.tidy(() => finalLogits(built.model.apply(x, { training: false }) as tf.Tensor, built.exits));
            await sendPredictions(session, step, batch, logits, config.temperature, undefined, exchange);
            logits.dispose();
            await reportProgress(epoch, step, batch.labels.length, batch.batch === stepsPerEpoch - 1);
            continue;
          }
          lr = learningRateAt(worker.schedule, worker.optimizer.lr, { step, stepsPerEpoch, totalSteps });
          setLearningRate(optimizer, lr);
          setDropoutStep(step); // dropout masks are a function of the step: restored with it
          const { value, grads } = await asyncVariableGrads(async () => {
            const outputs = built.model.apply(x, { training: true }) as tf.Tensor | tf.Tensor[];
            const logits = finalLogits(outputs, built.exits);
            await sendPredictions(session, step, batch, logits, config.temperature, lastLoss, exchange);
            await trainMetrics.add(logits, y);
            const teaching = objective.needsTeaching ? await receiveTeaching(session, step) : undefined;
            try {
              return objective.loss(outputs, y, teaching, (step + 1) / stepsPerEpoch);
            } finally {
              teaching?.probs.dispose();
            }
          });
          optimizer.applyGradients(grads);
          lastLoss = (await value.data())[0];
          tf.dispose([value, ...Object.values(grads)]);
        } finally {
          tf.dispose([x, y]);
        }
        await reportProgress(epoch, step, batch.labels.length, batch.batch === stepsPerEpoch - 1, trainMetrics);
        if ((step + 1) % config.checkpoint.everySteps === 0 && step + 1 < totalSteps) {
          const dir = join(checkpointDir(runDir, step + 1), worker.name);
          await saveMemberCheckpoint(dir, built.model, optimizer, { step: step + 1, lastLoss });
          await session.socket.send({ type: 'checkpointed', step: step + 1, generation: session.generation });
        }
      }
      if ((epoch + 1) % config.evalEvery === 0 || epoch === config.epochs - 1) {
        await evaluateAndReport(built, test, epoch, session, exchange, role === 'member' ? trainMetrics : undefined);
      }
    }
    if (role === 'member') {
      const dir = finalWeightsDir(config, worker.name);
      mkdirSync(dir, { recursive: true });
      await saveModel(built.model, dir);
      log(`${worker.name}: final weights saved to ${dir}`);
    }
    await session.socket.send({ type: 'done', member: worker.name, generation: session.generation });
    await awaitShutdown(session);
  }
}

/** Cross-quality with teacherSeesDownscaled: the teacher takes the (first) student's downscale. */
function studentDownscale(config: RunConfig) {
  return config.members.find((m) => m.downscale)?.downscale;
}

/** Sends the step's predictions: softmax(z / T) and its batch-mean negative entropy, computed on this worker's backend. */
async function sendPredictions(
  session: Session,
  step: number,
  batch: Batch,
  logits: tf.Tensor2D,
  T: number,
  loss: number | undefined,
  exchange: { float16: boolean },
): Promise<void> {
  const { probs, negEntropy } = temperedPredictions(logits, T);
  const [data, ne] = await Promise.all([probs.data() as Promise<Float32Array>, negEntropy.data()]);
  tf.dispose([probs, negEntropy]);
  await session.socket.send(
    {
      type: 'predictions',
      step,
      epoch: batch.epoch,
      batch: batch.batch,
      indices: { dtype: 'uint32', shape: [batch.indices.length], data: batch.indices },
      probs: { dtype: 'float32', shape: logits.shape, data },
      negEntropy: ne[0],
      ...(loss === undefined ? {} : { loss }),
      generation: session.generation,
    },
    exchange,
  );
}

async function receiveTeaching(session: Session, step: number) {
  const message = await expectMessage(session, `the teaching signal of step ${step}`);
  if (message.type !== 'teaching') throw new CohortError(`${session.socket.member}: expected the teaching signal of step ${step}, got ${message.type}`, { code: 'PROTOCOL_MISMATCH' });
  if (message.step !== step) throw new CohortError(`${session.socket.member}: teaching signal for step ${message.step} arrived at step ${step}`, { code: 'PROTOCOL_MISMATCH' });
  const t = message.teaching;
  return { probs: tf.tensor2d(t.data as Float32Array, t.shape as [number, number]), peerNegEntropy: message.peerNegEntropy };
}

/**
 * Handles a control message: a rollback of a newer generation is thrown as Rollback; a shutdown
 * or error from the coordinator ends the worker. Returns whether the message was consumed.
 */
function control(session: Session, message: Message): boolean {
  const who = session.socket.member;
  if (message.type === 'rollback') {
    if (message.generation > session.generation) throw new Rollback(message);
    return true;
  }
  if (message.type === 'shutdown') throw new CohortError(`${who}: the coordinator stopped the run: ${message.reason}`, { code: 'COORDINATOR_STOPPED' });
  if (message.type === 'error') throw new CohortError(`${who}: the coordinator failed: ${message.message}`, { code: 'COORDINATOR_FAILED' });
  if (message.type === 'welcome' && admission(message) !== session.admitted && (message.generation ?? 0) >= session.generation) {
    // The coordinator declared this worker lost (it was slow) and has admitted it again, from
    // another step: follow the new welcome.
    session.admitted = admission(message);
    const { startStep: step, resume: checkpoint, generation = 0, checkpointStep } = message;
    throw new Rollback({ type: 'rollback', step, ...(checkpoint ? { checkpoint } : {}), generation, reason: 'the coordinator admitted this worker again' }, checkpointStep);
  }
  // Heartbeats, and answers to a join sent again while the first answer was on its way.
  if (message.type === 'heartbeat' || message.type === 'welcome' || (message.type === 'reject' && message.retryable)) return true;
  // A teaching signal of an older generation was sent before a rollback: stale.
  if (message.type === 'teaching' && (message.generation ?? 0) < session.generation) return true;
  // Wherever it arrives (between steps too: a teacher slower than its students gets them while
  // it computes), an advance moves the teacher's window; dropping one could stall the cohort.
  if (message.type === 'advance') {
    session.studentsDone = Math.max(session.studentsDone, message.step);
    return true;
  }
  return false;
}

/** The next message from the coordinator, or CoordinatorLost once it has been silent for livenessMs. */
async function receiveLive(session: Session): Promise<Message> {
  const left = session.lastHeard + session.livenessMs - Date.now();
  try {
    const message = await session.socket.receive(Math.max(1, left));
    session.lastHeard = Date.now();
    return message;
  } catch (error) {
    if (error instanceof ReceiveTimeout) {
      throw new CoordinatorLost(`no message from the coordinator for ${(session.livenessMs / 1000).toFixed(0)} s`);
    }
    throw error;
  }
}

/** The next message that is not a control message or stale. */
async function expectMessage(session: Session, _what: string): Promise<Message> {
  for (;;) {
    const message = await receiveLive(session);
    if (!control(session, message)) return message;
  }
}

/** Between steps: handles whatever control messages have arrived, without waiting. */
async function pollControl(session: Session): Promise<void> {
  for (let message = await session.socket.poll(); message; message = await session.socket.poll()) {
    session.lastHeard = Date.now();
    if (!control(session, message)) {
      throw new CohortError(`${session.socket.member}: unexpected ${message.type} message between steps`, { code: 'PROTOCOL_MISMATCH' });
    }
  }
  if (Date.now() - session.lastHeard > session.livenessMs) {
    throw new CoordinatorLost(`no message from the coordinator for ${((Date.now() - session.lastHeard) / 1000).toFixed(0)} s`);
  }
}

async function awaitShutdown(session: Session): Promise<void> {
  for (;;) {
    const message = await receiveLive(session);
    if (message.type === 'shutdown') return;
    control(session, message);
  }
}

async function evaluateAndReport(
  built: CohortModel,
  test: BatchSource,
  epoch: number,
  session: Session,
  exchange: { float16: boolean },
  trainMetrics?: MetricAccumulator,
): Promise<void> {
  const r = await evaluate(exitModel(built), test, async (batch, logits) => {
    const data = (await logits.data()) as Float32Array;
    await session.socket.send(
      {
        type: 'evalLogits',
        generation: session.generation,
        epoch,
        batch: batch.batch,
        indices: { dtype: 'uint32', shape: [batch.indices.length], data: batch.indices },
        labels: { dtype: 'int32', shape: [batch.labels.length], data: batch.labels },
        logits: { dtype: 'float32', shape: logits.shape, data },
      },
      exchange,
    );
  });
  const t = trainMetrics?.result();
  const train: Record<string, number> = t ? { trainAccuracy: t.accuracy, trainNll: t.nll, trainEce: t.calibration.ece } : {};
  const reliability = r.calibration.bins.map((b) => ({ ...b, accuracy: b.count > 0 ? b.accuracy : null, confidence: b.count > 0 ? b.confidence : null }));
  await session.socket.send({ type: 'eval', epoch, generation: session.generation, metrics: { accuracy: r.accuracy, nll: r.nll, ece: r.calibration.ece, entropy: r.entropy, count: r.count, ...train }, reliability });
}
