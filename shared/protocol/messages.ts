/**
 * The messages of Cohort's distributed runtime: what a coordinator (ZeroMQ ROUTER) and its
 * workers (ZeroMQ DEALER, one per cohort member, student or teacher) say to each other. One zod
 * schema per message type is the single source of truth: the TypeScript types are inferred from
 * them and the codec validates every decoded message against them. To add a message, add a
 * schema to `messageSchemas`; a field holding a `TensorFrame` travels as a raw frame by itself.
 */
import { z } from 'zod';

/** What a worker's backend holds (shared/engine/backend.ts backendMemory()): sent with progress, kept in step records. */
export const workerMemorySchema = z.object({
  tensors: z.number().int().nonnegative(),
  bytes: z.number().nonnegative(),
  /** WebGPU: bytes of GPU buffers held by live tensors, and allocated (with tfjs' pool of free ones). */
  gpuBytes: z.number().nonnegative().optional(),
  gpuBytesAllocated: z.number().nonnegative().optional(),
});

/** Bumped on any change that an older peer would misread; checked on every message. */
export const PROTOCOL_VERSION = 1;

/** Element types on the wire. `float16` is IEEE half precision; it is widened to float32 on receive. */
export const DTYPES = ['float32', 'float16', 'int32', 'uint32'] as const;
export type Dtype = (typeof DTYPES)[number];

interface DataOf {
  float32: Float32Array;
  float16: Uint16Array; // raw IEEE half bits (Node 20 has no Float16Array)
  int32: Int32Array;
  uint32: Uint32Array;
}

/** A tensor: the header carries dtype and shape, the data travels as its own ZeroMQ frame. */
export type TensorFrame<D extends Dtype = Dtype> = { [K in D]: { dtype: K; shape: number[]; data: DataOf[K] } }[D];

const ARRAY_TYPES: Record<Dtype, abstract new (...args: never[]) => unknown> = { float32: Float32Array, float16: Uint16Array, int32: Int32Array, uint32: Uint32Array };

export function isTensorFrame(value: unknown): value is TensorFrame {
  if (typeof value !== 'object' || value === null) return false;
  const { dtype, shape, data } = value as Record<string, unknown>;
  return typeof dtype === 'string' && Object.hasOwn(ARRAY_TYPES, dtype) && Array.isArray(shape) && data instanceof ARRAY_TYPES[dtype as Dtype];
}

/** Why `value` is not a tensor of one of `dtypes` with as many values as its shape says, or undefined. */
function tensorProblem(value: unknown, dtypes: readonly Dtype[]): string | undefined {
  if (!isTensorFrame(value) || !dtypes.includes(value.dtype)) return `expected a ${dtypes.join(' or ')} tensor`;
  if (!value.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return `shape [${value.shape}] is not a list of non-negative integers`;
  const elements = value.shape.reduce((a, b) => a * b, 1);
  if (elements !== value.data.length) return `shape [${value.shape}] has ${elements} elements but the data ${value.data.length}`;
  return undefined;
}

/** A tensor field accepting the given dtypes. */
function tensor<D extends Dtype>(...dtypes: D[]) {
  return z.custom<TensorFrame<D>>((v) => !tensorProblem(v, dtypes), { error: (issue) => tensorProblem(issue.input, dtypes) });
}

const count = z.number().int().nonnegative();
const name = z.string().min(1);
/** Losses and metrics may legitimately be NaN or infinite (a diverged run); report them as they are. */
const float = z.custom<number>((v) => typeof v === 'number', { message: 'expected a number' });

export const messageSchemas = {
  /** Worker → coordinator, first message: who this worker is and what it runs on. */
  join: z.object({
    type: z.literal('join'),
    protocolVersion: z.number().int(),
    /** The run this worker means to join (checked when given). */
    runId: name.optional(),
    member: name,
    /** `member`: a DML peer; `teacher`: forward-only; `student`: learns from teachers (KD). Checked against the config when given. */
    role: z.enum(['member', 'teacher', 'student']).optional(),
    backend: name,
    device: z.string(),
    pid: z.number().int().positive(),
    host: z.string(),
  }),
  /** Coordinator → worker: the join is accepted; train from `startStep` with these peers. */
  welcome: z.object({
    type: z.literal('welcome'),
    runId: name,
    member: name,
    /** Names of every cohort member and teacher, this one included. */
    members: z.array(name),
    startStep: count,
    /** The run config (JSON-safe); the worker validates it again with the same schema. */
    config: z.unknown(),
    /** A global checkpoint folder to restore from before `startStep` (absent: fresh weights). */
    resume: z.string().optional(),
    /**
     * Elastic rejoin: the step `resume` holds (0 with no `resume`: initial weights), which may be
     * older than `startStep`; the worker restores it and continues at `startStep`.
     */
    checkpointStep: count.optional(),
    /** The run's rollback generation: messages of an older generation are stale and ignored. */
    generation: count.optional(),
  }),
  /** Coordinator → worker: the join is refused; the worker should exit with `reason`. */
  reject: z.object({
    type: z.literal('reject'),
    reason: z.string(),
    /** The worker may ask again later (its name is taken by a process that has not been declared lost yet). */
    retryable: z.boolean().optional(),
  }),
  /**
   * Worker → coordinator: this step's predictions, one row per sample of the batch, as
   * probabilities at the run's temperature, softmax(z / T), computed on the worker's backend (so
   * the coordinator only averages: no exponentials on its one thread), plus what DML's loss value
   * needs from them.
   */
  predictions: z
    .object({
      type: z.literal('predictions'),
      step: count,
      epoch: count,
      /** Index of the batch within the epoch. */
      batch: count,
      /** Dataset indices of the batch's samples, shape [batchSize]. */
      indices: tensor('int32', 'uint32'),
      /** softmax(z / T), shape [batchSize, classes]. */
      probs: tensor('float32'),
      /** Batch mean of sum_c p_c log p_c of `probs`. */
      negEntropy: float,
      /** This worker's training loss of the previous step. */
      loss: float.optional(),
      generation: count.optional(),
    })
    .refine((m) => m.indices.shape.length === 1 && m.probs.shape.length === 2 && m.probs.shape[0] === m.indices.shape[0], {
      message: 'indices must have shape [batchSize] and probs [batchSize, classes]',
    }),
  /** Coordinator → worker: what to learn from at `step`, e.g. the mean of the peers' probabilities. */
  teaching: z.object({
    type: z.literal('teaching'),
    step: count,
    teaching: tensor('float32'),
    /** Mean negative entropy of the peers' predictions, for entropy-regularised DML (DML_e). */
    peerNegEntropy: float.optional(),
    /** How many peers `teaching` was computed from. */
    peerCount: count,
    generation: count.optional(),
  }),
  /** Coordinator → teachers: every student has finished `step`; a teacher may run `teacherWindow` steps ahead of it. */
  advance: z.object({ type: z.literal('advance'), step: count }),
  /** Worker → coordinator: its test-set logits for one evaluation batch, for the cohort ensemble's metrics. */
  evalLogits: z
    .object({
      type: z.literal('evalLogits'),
      epoch: count,
      /** A mid-epoch evaluation (evalEverySteps): the steps done. */
      step: count.optional(),
      batch: count,
      indices: tensor('int32', 'uint32'),
      labels: tensor('int32'),
      logits: tensor('float32'),
      generation: count.optional(),
    })
    .refine((m) => m.indices.shape.length === 1 && m.labels.shape[0] === m.indices.shape[0] && m.logits.shape.length === 2 && m.logits.shape[0] === m.indices.shape[0], {
      message: 'indices and labels must have shape [batchSize] and logits [batchSize, classes]',
    }),
  /** Worker → coordinator: it has trained and evaluated every epoch; it waits for `shutdown`. */
  done: z.object({ type: z.literal('done'), member: name, generation: count.optional() }),
  /** Worker → coordinator: its part of the global checkpoint whose next step is `step` is on disk. */
  checkpointed: z.object({ type: z.literal('checkpointed'), step: count, generation: count.optional() }),
  /**
   * Coordinator → workers: a worker was lost; restore the global checkpoint `checkpoint` (or the
   * initial weights when absent), continue from `step`, and tag later messages with `generation`.
   */
  rollback: z.object({ type: z.literal('rollback'), step: count, checkpoint: z.string().optional(), generation: count, reason: z.string() }),
  /**
   * Either way: still alive. A worker's heartbeat thread (its own socket, worker/heartbeat-thread.ts)
   * names its member and process, which the coordinator maps to the joined worker.
   */
  heartbeat: z.object({ type: z.literal('heartbeat'), member: name.optional(), pid: count.optional() }),
  /** Worker → coordinator: evaluation results at the end of `epoch`, e.g. {accuracy, nll, ece}. */
  eval: z.object({
    type: z.literal('eval'),
    epoch: count,
    /** A mid-epoch evaluation (evalEverySteps): the steps done. */
    step: count.optional(),
    metrics: z.record(z.string(), float),
    /** The test set's reliability diagram: per confidence bin, its count, accuracy and mean confidence (null when empty). */
    reliability: z
      .array(z.object({ lower: float, upper: float, count, accuracy: float.nullable(), confidence: float.nullable() }))
      .max(1000)
      .optional(),
    generation: count.optional(),
  }),
  /** Worker → coordinator, every `progressEvery` steps: what the live display and the step records show. */
  progress: z.object({
    type: z.literal('progress'),
    epoch: count,
    /** The global step just finished. */
    step: count,
    totalSteps: count,
    /** This step's training loss (members). */
    loss: float.optional(),
    /** Running accuracy over this epoch's training batches so far (members). */
    accuracy: float.optional(),
    imagesPerSecond: float,
    /** Mean wall time per step since the previous progress message. */
    stepMs: float,
    lr: float.optional(),
    /** The worker's backend memory (tf.memory()), GPU bytes on webgpu. */
    memory: workerMemorySchema.optional(),
    generation: count.optional(),
  }),
  /**
   * Coordinator → workers: a graceful stop. Members save their part of the global checkpoint
   * whose next step is `step` (after training step `step` - 1, instead of going on) and then
   * wait for `shutdown`; teachers wait for `shutdown`.
   */
  stop: z.object({ type: z.literal('stop'), step: count, reason: z.string() }),
  /** Coordinator → worker: stop cleanly. */
  shutdown: z.object({ type: z.literal('shutdown'), reason: z.string() }),
  /** Either way: a fatal problem on the sender's side. */
  error: z.object({ type: z.literal('error'), message: z.string() }),
};

export type MessageType = keyof typeof messageSchemas;
export type Message = { [K in MessageType]: z.infer<(typeof messageSchemas)[K]> }[MessageType];
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

export function isMessageType(type: unknown): type is MessageType {
  return typeof type === 'string' && Object.hasOwn(messageSchemas, type);
}
