/**
 * What a worker does around its steps: progress reports (every `progressEvery` steps and at
 * the end of each epoch), its part of a global checkpoint (every `checkpoint.everySteps`
 * steps, members), evaluations (every `evalEvery` epochs and after the last), and the final
 * save (members). When each is due is a plain function, tested without sockets.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { BatchSource } from '../shared/data/source.js';
import { backendMemory } from '../shared/engine/backend.js';
import { checkpointDir, saveMemberCheckpoint } from '../shared/io/checkpoint.js';
import { saveModel } from '../shared/io/model-files.js';
import type { MetricAccumulator } from '../shared/metrics/index.js';
import { exitModel, type CohortModel } from '../shared/models/index.js';
import type { MessageOf } from '../shared/protocol/messages.js';
import { evaluate } from '../shared/training/evaluate.js';
import type { Link } from './link.js';
import type { WorkerState } from './state.js';

/** Whether a progress report is due after global step `step` (the last of its epoch: always). */
export function progressDue(step: number, progressEvery: number, lastOfEpoch: boolean): boolean {
  return (step + 1) % progressEvery === 0 || lastOfEpoch;
}

/** Whether a member saves its part of the checkpoint after `step` (never after the last step: the final save follows). */
export function checkpointDue(step: number, everySteps: number, totalSteps: number): boolean {
  return (step + 1) % everySteps === 0 && step + 1 < totalSteps;
}

/**
 * Whether a graceful stop ends training after `step`: the coordinator's barrier `stopAt` is the
 * next step (a member saves its part of the checkpoint there); never after the last step (the
 * run then simply completes).
 */
export function stopDue(stopAt: number | undefined, step: number, totalSteps: number): boolean {
  return stopAt === step + 1 && step + 1 < totalSteps;
}

/** Whether the worker evaluates after `epoch`. */
export function evaluationDue(epoch: number, evalEvery: number, epochs: number): boolean {
  return (epoch + 1) % evalEvery === 0 || epoch === epochs - 1;
}

/**
 * Whether a member evaluates after global step `step` within its epoch (evalEverySteps: often
 * enough to see a run fluctuate): every `every` steps, except where the epoch's own evaluation
 * follows at once.
 */
export function stepEvaluationDue(step: number, every: number | undefined, lastOfEpoch: boolean, epochEvaluationDue: boolean): boolean {
  if (every === undefined || (step + 1) % every !== 0) return false;
  return !(lastOfEpoch && epochEvaluationDue);
}

/** Progress since the last report: steps, images, time; the message to send once one is due. */
export class ProgressReporter {
  private since: { time: number; steps: number; images: number };

  constructor(
    private readonly options: { progressEvery: number; totalSteps: number; member: boolean },
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.since = { time: clock(), steps: 0, images: 0 };
  }

  /** Counts a step; returns the progress message when one is due (then counting starts again). */
  step(
    epoch: number,
    step: number,
    images: number,
    lastOfEpoch: boolean,
    fields: { loss?: number; lr?: number; metrics?: MetricAccumulator; generation: number; memory?: MessageOf<'progress'>['memory'] },
  ): MessageOf<'progress'> | undefined {
    this.since.steps++;
    this.since.images += images;
    if (!progressDue(step, this.options.progressEvery, lastOfEpoch)) return undefined;
    const seconds = (this.clock() - this.since.time) / 1000;
    const { member } = this.options;
    const accuracy = fields.metrics && member ? fields.metrics.result().accuracy : undefined;
    const message: MessageOf<'progress'> = {
      type: 'progress',
      epoch,
      step,
      totalSteps: this.options.totalSteps,
      ...(member && fields.loss !== undefined ? { loss: fields.loss } : {}),
      ...(accuracy !== undefined && Number.isFinite(accuracy) ? { accuracy } : {}),
      imagesPerSecond: seconds > 0 ? this.since.images / seconds : 0,
      stepMs: (1000 * seconds) / this.since.steps,
      ...(fields.lr === undefined ? {} : { lr: fields.lr }),
      ...(fields.memory ? { memory: fields.memory } : {}),
      generation: fields.generation,
    };
    this.since = { time: this.clock(), steps: 0, images: 0 };
    return message;
  }
}

/** Sends a progress report when one is due. */
export async function reportProgress(
  link: Link,
  progress: ProgressReporter,
  epoch: number,
  step: number,
  images: number,
  lastOfEpoch: boolean,
  fields: { loss?: number; lr?: number; metrics?: MetricAccumulator },
): Promise<void> {
  const message = progress.step(epoch, step, images, lastOfEpoch, { ...fields, generation: link.generation, memory: backendMemory() });
  if (message) await link.send(message);
}

/** A member's part of the global checkpoint after `step`, reported to the coordinator. */
export async function saveCheckpoint(link: Link, state: WorkerState, runDir: string, name: string, step: number): Promise<void> {
  const dir = join(checkpointDir(runDir, step + 1), name);
  await saveMemberCheckpoint(dir, state.built!.model, state.optimizer!, { step: step + 1, lastLoss: state.lastLoss });
  await link.send({ type: 'checkpointed', step: step + 1, generation: link.generation });
}

/** Evaluates on the test set, sending the test logits (for the cohort ensemble) and the metrics. */
export async function evaluateAndReport(
  link: Link,
  network: CohortModel | ((x: tf.Tensor4D) => Promise<tf.Tensor2D>),
  test: BatchSource,
  epoch: number,
  exchange: { float16: boolean },
  trainMetrics?: MetricAccumulator,
  /** A mid-epoch evaluation (evalEverySteps): the steps done when it ran. */
  step?: number,
): Promise<void> {
  const at = step === undefined ? {} : { step };
  const r = await evaluate(typeof network === 'function' ? network : exitModel(network), test, async (batch, logits) => {
    const data = (await logits.data()) as Float32Array;
    await link.send(
      {
        type: 'evalLogits',
        generation: link.generation,
        epoch,
        ...at,
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
  await link.send({
    type: 'eval',
    epoch,
    ...at,
    generation: link.generation,
    metrics: { accuracy: r.accuracy, nll: r.nll, ece: r.calibration.ece, entropy: r.entropy, count: r.count, ...train },
    reliability,
  });
}

/** A member's final weights, saved where a teacher's `checkpoint` may point. */
export async function saveFinal(built: CohortModel, dir: string, log: (line: string) => void, name: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await saveModel(built.model, dir);
  log(`${name}: final weights saved to ${dir}`);
}
