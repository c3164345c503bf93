/**
 * One training step of a worker. A member: forward pass, its predictions (softmax(z/T)) sent,
 * the teaching signal awaited when its algorithm needs one (the gradient tape stays open
 * across the await), the loss and the update. A teacher: forward only, at most
 * `teacherWindow` steps ahead of the students, its predictions sent.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TeacherConfig, WorkerConfig } from '../shared/config/run-config.js';
import type { Batch } from '../shared/data/source.js';
import { CohortError } from '../shared/errors.js';
import type { MetricAccumulator } from '../shared/metrics/index.js';
import { setDropoutStep } from '../shared/models/seeded-dropout.js';
import { asyncVariableGrads } from '../shared/training/async-grads.js';
import { learningRateAt, momentumAt } from '../shared/training/lr-schedule.js';
import { cyclesMomentum, finalLogits, setLearningRate, setMomentum, type Objective } from '../shared/training/objective.js';
import { temperedPredictions } from '../shared/training/predictions.js';
import type { Link } from './link.js';
import type { WorkerState } from './state.js';

export interface StepContext {
  link: Link;
  state: WorkerState;
  worker: WorkerConfig | TeacherConfig;
  /** An ONNX teacher's forward pass (onnxruntime), in place of the state's tfjs network. */
  teacherLogits?: (x: tf.Tensor4D) => Promise<tf.Tensor2D>;
  /** What evaluation runs when the network is not tfjs's (an ONNX teacher). */
  evalForward?: (x: tf.Tensor4D) => Promise<tf.Tensor2D>;
  objective: Objective;
  temperature: number;
  stepsPerEpoch: number;
  totalSteps: number;
  exchange: { float16: boolean };
}

/** What a step reports: the learning rate it trained with (members). */
export interface StepOutcome {
  lr?: number;
}

export type StepFn = (ctx: StepContext, step: number, batch: Batch, metrics: MetricAccumulator) => Promise<StepOutcome>;

function tensorsOf(batch: Batch): { x: tf.Tensor4D; y: tf.Tensor1D } {
  return { x: tf.tensor4d(batch.images, batch.shape), y: tf.tensor1d(batch.labels, 'int32') };
}

/** A member's step: predictions out, teaching in, loss, update. */
export const memberStep: StepFn = async (ctx, step, batch, trainMetrics) => {
  const { state, worker, objective, stepsPerEpoch, totalSteps } = ctx;
  const { x, y } = tensorsOf(batch);
  try {
    const optimizer = state.optimizer!;
    const clock = { step, stepsPerEpoch, totalSteps };
    const lr = learningRateAt(worker.schedule, worker.optimizer.lr, clock);
    setLearningRate(optimizer, lr);
    const momentum = cyclesMomentum(worker.optimizer) ? momentumAt(worker.schedule, clock) : undefined;
    if (momentum !== undefined) setMomentum(optimizer, momentum);
    setDropoutStep(step); // dropout masks are a function of the step: restored with it
    const built = state.built!;
    const { value, grads } = await asyncVariableGrads(async () => {
      const outputs = built.model.apply(x, { training: true }) as tf.Tensor | tf.Tensor[];
      const logits = finalLogits(outputs, built.exits);
      await sendPredictions(ctx, step, batch, logits, state.lastLoss);
      await trainMetrics.add(logits, y);
      const teaching = objective.needsTeaching ? await receiveTeaching(ctx.link, step) : undefined;
      try {
        return objective.loss(outputs, y, teaching, (step + 1) / stepsPerEpoch);
      } finally {
        teaching?.probs.dispose();
      }
    });
    optimizer.applyGradients(grads);
    state.lastLoss = (await value.data())[0];
    tf.dispose([value, ...Object.values(grads)]);
    return { lr };
  } finally {
    tf.dispose([x, y]);
  }
};

/** A teacher's step: forward only, once the students are close enough behind. */
export const teacherStep: StepFn = async (ctx, step, batch) => {
  const { link, state } = ctx;
  // control() takes the advance messages (and rollbacks, shutdowns) as they come.
  while (!link.window.allows(step)) {
    const message = await link.receive();
    if (!link.control(message))
      throw new CohortError(`${ctx.worker.name}: unexpected ${message.type} message while waiting for the students to finish step ${step - link.window.window}`, {
        code: 'PROTOCOL_MISMATCH',
      });
  }
  const { x } = tensorsOf(batch);
  try {
    const logits = ctx.teacherLogits ? await ctx.teacherLogits(x) : tf.tidy(() => finalLogits(state.built!.model.apply(x, { training: false }) as tf.Tensor, state.built!.exits));
    await sendPredictions(ctx, step, batch, logits, undefined);
    logits.dispose();
    return {};
  } finally {
    x.dispose();
  }
};

/** Sends the step's predictions: softmax(z / T) and its batch-mean negative entropy, computed on this worker's backend. */
async function sendPredictions(ctx: StepContext, step: number, batch: Batch, logits: tf.Tensor2D, loss: number | undefined): Promise<void> {
  const { probs, negEntropy } = temperedPredictions(logits, ctx.temperature);
  const [data, ne] = await Promise.all([probs.data() as Promise<Float32Array>, negEntropy.data()]);
  tf.dispose([probs, negEntropy]);
  await ctx.link.send(
    {
      type: 'predictions',
      step,
      epoch: batch.epoch,
      batch: batch.batch,
      indices: { dtype: 'uint32', shape: [batch.indices.length], data: batch.indices },
      probs: { dtype: 'float32', shape: logits.shape, data },
      negEntropy: ne[0],
      ...(loss === undefined ? {} : { loss }),
      generation: ctx.link.generation,
    },
    ctx.exchange,
  );
}

/** The coordinator's teaching signal of `step`: anything else (not a control message) is a protocol error. */
async function receiveTeaching(link: Link, step: number) {
  const message = await link.expect();
  if (message.type !== 'teaching') throw new CohortError(`${link.member}: expected the teaching signal of step ${step}, got ${message.type}`, { code: 'PROTOCOL_MISMATCH' });
  if (message.step !== step) throw new CohortError(`${link.member}: teaching signal for step ${message.step} arrived at step ${step}`, { code: 'PROTOCOL_MISMATCH' });
  const t = message.teaching;
  return { probs: tf.tensor2d(t.data as Float32Array, t.shape as [number, number]), peerNegEntropy: message.peerNegEntropy };
}
