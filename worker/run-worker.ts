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
import { join } from 'node:path';
import { workerModelName } from '../shared/config/onnx-teacher.js';
import { resolveRunConfig, runDirectory, type RunConfig, type TeacherConfig, type WorkerConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import type { BatchSource } from '../shared/data/source.js';
import { initBackend, shutdownBackend, type BackendChoice } from '../shared/engine/backend.js';
import { CohortError } from '../shared/errors.js';
import { loadModelWeights } from '../shared/io/model-files.js';
import { MetricAccumulator } from '../shared/metrics/index.js';
import { buildModel, type CohortModel } from '../shared/models/index.js';
import type { MessageOf } from '../shared/protocol/messages.js';
import type { WorkerKeys } from '../shared/protocol/curve.js';
import { WorkerSocket } from '../shared/protocol/sockets.js';
import { makeOptimizer, objectiveFor } from '../shared/training/objective.js';
import { checkpointDue, evaluateAndReport, evaluationDue, ProgressReporter, reportProgress, saveCheckpoint, saveFinal, stepEvaluationDue, stopDue } from './hooks.js';
import { HeartbeatThread } from './heartbeats.js';
import { CoordinatorLost, Link, Rollback, Stopped } from './link.js';
import { WorkerState } from './state.js';
import { openOnnxTeacher } from './onnx-teacher.js';
import { memberStep, teacherStep, type StepContext } from './steps.js';

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
export function findWorker(config: RunConfig, name: string): { worker: WorkerConfig | TeacherConfig; index: number; role: 'member' | 'teacher' } {
  const m = config.members.findIndex((w) => w.name === name);
  if (m >= 0) return { worker: config.members[m], index: m, role: 'member' };
  const t = config.teachers.findIndex((w) => w.name === name);
  if (t >= 0) return { worker: config.teachers[t], index: config.members.length + t, role: 'teacher' };
  const known = [...config.members, ...config.teachers].map((w) => w.name).join(', ');
  throw new CohortError(`no member or teacher named '${name}' in the run config (known: ${known})`, { code: 'UNKNOWN_WORKER' });
}

export function buildWorkerModel(config: RunConfig, worker: WorkerConfig | TeacherConfig, index: number, imageShape: [number, number, number], classes: number): CohortModel {
  if (!worker.model) throw new CohortError(`${worker.name} has no zoo model (it is an ONNX teacher: ${workerModelName(worker)})`, { code: 'CONFIG_INVALID' });
  return buildModel({ inputShape: imageShape, classes, ...worker.model, seed: worker.model.seed ?? memberWeightSeed(config.seed, index) });
}

/** How a worker's run ended: `stopped` when the coordinator stopped the cohort gracefully (it continues with --resume). */
export interface WorkerOutcome {
  stopped: boolean;
}

export async function runWorker(options: WorkerOptions): Promise<WorkerOutcome> {
  const log = options.log ?? ((line: string) => console.log(line));
  const socket = new WorkerSocket(options.member, options.curve ? { curve: options.curve } : {});
  socket.connect(options.connect);
  const link = new Link(socket);
  try {
    const welcome = await link.join(joinOptions(options), options.timeoutMs ?? 60_000);
    const config = resolveRunConfig(welcome.config);
    return { stopped: await train(config, welcome, link, options, log) };
  } catch (error) {
    await socket.send({ type: 'error', message: (error as Error).message }).catch(() => {});
    throw error;
  } finally {
    link.stop();
    socket.close();
    shutdownBackend(); // a process holding a WebGPU device does not exit
  }
}

const joinOptions = (o: WorkerOptions) => ({ member: o.member, connect: o.connect, ...(o.backend ? { backend: o.backend } : {}), ...(o.gpu === undefined ? {} : { gpu: o.gpu }) });

/** Cross-quality with teacherSeesDownscaled: the teacher takes the (first) student's downscale. */
function studentDownscale(config: RunConfig) {
  return config.members.find((m) => m.downscale)?.downscale;
}

/** What a worker trains with: its step context (model, optimizer, link) and its data. */
interface Session {
  ctx: StepContext;
  role: 'member' | 'teacher';
  data: { train: BatchSource; test: BatchSource };
  /** Releases the data loaders, the model and optimizer, and an ONNX teacher's session. */
  close(): Promise<void>;
}

/** Trains from the welcome's step, following rollbacks and a restarted coordinator; returns whether a graceful stop ended the run. */
async function train(config: RunConfig, welcome: MessageOf<'welcome'>, link: Link, options: WorkerOptions, log: (line: string) => void): Promise<boolean> {
  link.follow(welcome);
  const beats = startHeartbeats(config, link, options, log);
  let session: Session | undefined;
  try {
    session = await openSession(config, link, options, log);
    let position = await session.ctx.state.restore(welcome.startStep, welcome.resume, welcome.checkpointStep);
    for (;;) {
      try {
        await runFrom(config, session.ctx, session.role, session.data, position, log);
        return false;
      } catch (error) {
        if (error instanceof Stopped) {
          log(`${options.member}: stopped by the coordinator (graceful stop at step ${link.stopAt})`);
          return true;
        }
        position = await recover(error, config, session.ctx, options, log);
      }
    }
  } finally {
    link.stop();
    await beats.stop();
    await session?.close();
  }
}

/** The heartbeat thread (its own socket, beating while the main thread computes), and the link's liveness reading it. */
function startHeartbeats(config: RunConfig, link: Link, options: WorkerOptions, log: (line: string) => void): HeartbeatThread {
  const beats = new HeartbeatThread(
    {
      connect: options.connect,
      member: options.member,
      ...(options.curve ? { curve: options.curve } : {}),
      heartbeatMs: config.recovery.heartbeatMs,
      hangMs: config.exchange.timeoutMs,
    },
    (error) => log(`${options.member}: the heartbeat thread failed (${error.message}); heartbeats go on from the main thread`),
  );
  link.start(config.recovery, config.exchange.teacherWindow, () => beats.heardAt(), { alive: () => beats.linkAliveAt(), hangMs: config.exchange.timeoutMs });
  return beats;
}

/** Sets up the worker's backend, data, model (or ONNX teacher) and optimizer. */
async function openSession(config: RunConfig, link: Link, options: WorkerOptions, log: (line: string) => void): Promise<Session> {
  const { worker, index, role } = findWorker(config, options.member);
  const active = await initBackend({ backend: options.backend ?? worker.backend, gpu: options.gpu ?? worker.gpu });
  log(`${worker.name}: backend ${active.choice} on ${active.device}`);
  const dataset = await openDataset(config.dataset);
  const downscale = role === 'teacher' && config.teacherSeesDownscaled ? (worker.downscale ?? studentDownscale(config)) : worker.downscale;
  const data = {
    train: dataset.loader({ split: 'train', batchSize: config.batchSize, seed: config.seed, memberSeed: worker.augmentSeed, downscale, limit: config.trainLimit }),
    test: dataset.loader({ split: 'test', batchSize: 500, seed: config.seed, downscale }),
  };
  const teacherCheckpoint = 'checkpoint' in worker ? (worker.checkpoint as string | undefined) : undefined;
  // An ONNX teacher runs in onnxruntime: no tfjs network, no optimizer.
  const onnx = await openOnnxTeacher(worker, dataset, data.train.imageShape, log, active);
  const state = new WorkerState({
    name: worker.name,
    fixed: role === 'teacher',
    initial: onnx
      ? undefined
      : () => {
          const built = buildWorkerModel(config, worker, index, data.train.imageShape, dataset.classNames.length);
          if (teacherCheckpoint) loadModelWeights(built.model, teacherCheckpoint);
          return { built, optimizer: makeOptimizer(worker.optimizer) };
        },
    log,
  });
  if (teacherCheckpoint) log(`${worker.name}: loaded weights from ${teacherCheckpoint}`);
  const stepsPerEpoch = data.train.batchesPerEpoch;
  const ctx: StepContext = {
    link,
    state,
    worker,
    ...(onnx ? { teacherLogits: (x) => onnx.logits(x), evalForward: (x) => onnx.logits(x) } : {}),
    objective: objectiveFor(config, state.built?.exits ?? 1),
    temperature: config.temperature,
    stepsPerEpoch,
    totalSteps: stepsPerEpoch * config.epochs,
    exchange: { float16: config.exchange.float16 },
  };
  return {
    ctx,
    role,
    data,
    close: async () => {
      await Promise.all([data.train.close(), data.test.close()]);
      state.dispose();
      await onnx?.dispose();
    },
  };
}

/** After a rollback or a lost coordinator: the step to train from, its state restored; any other error is thrown again. */
async function recover(error: unknown, config: RunConfig, ctx: StepContext, options: WorkerOptions, log: (line: string) => void): Promise<number> {
  const { link, state, worker } = ctx;
  if (error instanceof Rollback) {
    const r = error.rollback;
    log(`${worker.name}: rolling back to step ${r.step} (${r.reason})`);
    link.generation = r.generation;
    return state.restore(r.step, r.checkpoint, error.checkpointStep);
  }
  if (error instanceof CoordinatorLost) {
    log(`${worker.name}: ${error.message}; joining again`);
    const again = await link.join(joinOptions(options), config.exchange.timeoutMs);
    link.follow(again);
    return state.restore(again.startStep, again.resume, again.checkpointStep);
  }
  throw error;
}

/** Trains from global step `start` to the end, evaluates, saves, says done and awaits shutdown. */
async function runFrom(
  config: RunConfig,
  ctx: StepContext,
  role: 'member' | 'teacher',
  data: { train: BatchSource; test: BatchSource },
  start: number,
  log: (line: string) => void,
): Promise<void> {
  const { link, state, worker, stepsPerEpoch, totalSteps, exchange } = ctx;
  const member = role === 'member';
  const runStep = member ? memberStep : teacherStep;
  link.window.reset(start);
  const progress = new ProgressReporter({ progressEvery: config.progressEvery, totalSteps, member });
  let lr: number | undefined;
  // An elastic rejoin after the others trained the last step: evaluate what it has.
  if (start >= totalSteps && member) await evaluateAndReport(link, ctx.evalForward ?? state.built!, data.test, config.epochs - 1, exchange);
  for (let epoch = Math.floor(start / stepsPerEpoch); epoch < config.epochs; epoch++) {
    /** Running metrics of this epoch's training batches (what distillistic logs). */
    const trainMetrics = new MetricAccumulator({ bins: 15 });
    data.train.restore({ epoch, batch: epoch === Math.floor(start / stepsPerEpoch) ? start % stepsPerEpoch : 0 });
    for await (const batch of data.train.epoch(epoch)) {
      const step = epoch * stepsPerEpoch + batch.batch;
      await link.poll();
      ({ lr } = await runStep(ctx, step, batch, trainMetrics));
      const lastOfEpoch = batch.batch === stepsPerEpoch - 1;
      await reportProgress(link, progress, epoch, step, batch.labels.length, lastOfEpoch, { loss: state.lastLoss, lr, ...(member ? { metrics: trainMetrics } : {}) });
      const checkpoint = checkpointDue(step, config.checkpoint.everySteps, totalSteps);
      if (member && checkpoint) await saveCheckpoint(link, state, runDirectory(config), worker.name, step);
      if (stopDue(link.stopAt, step, totalSteps)) {
        // A graceful stop: this member's part of the checkpoint at the barrier, then the shutdown.
        if (member && !checkpoint) await saveCheckpoint(link, state, runDirectory(config), worker.name, step);
        await link.awaitShutdown();
        throw new Stopped('the coordinator shut this worker down after a graceful stop');
      }
      if (member && stepEvaluationDue(step, config.evalEverySteps, lastOfEpoch, evaluationDue(epoch, config.evalEvery, config.epochs))) {
        await evaluateAndReport(link, ctx.evalForward ?? state.built!, data.test, epoch, exchange, undefined, step + 1);
      }
    }
    if (evaluationDue(epoch, config.evalEvery, config.epochs))
      await evaluateAndReport(link, ctx.evalForward ?? state.built!, data.test, epoch, exchange, member ? trainMetrics : undefined);
  }
  if (member) await saveFinal(state.built!, finalWeightsDir(config, worker.name), log, worker.name);
  await link.send({ type: 'done', member: worker.name, generation: link.generation });
  await link.awaitShutdown();
}
