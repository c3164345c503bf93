/**
 * The records of a run's metrics file, `RUN/metrics.jsonl`: one JSON object per line, written
 * by the coordinator, read by `cohort report` and by anyone's own scripts. This schema is the
 * one definition of that file (README, "Metrics files"). Every record has `kind` and `time`
 * (ISO 8601):
 *
 * - `run`: written once when a run starts (and again when it resumes): its name, algorithm and
 *   workers, so a metrics file describes itself.
 * - `step`: every `progressEvery` steps per member or teacher: its loss and running accuracy
 *   over this epoch's training batches so far, throughput and mean step time since its last
 *   record, learning rate.
 * - `eval`: every `evalEvery` epochs per member and teacher, and for the cohort ensemble
 *   (`worker: 'ensemble'`): test accuracy, NLL, ECE, the reliability diagram's bins, and for
 *   members the running training-batch metrics of the epoch.
 * - `event`: what happened to the run, as it happened (`event` says what): a worker's process
 *   started or stopped by its launcher, a worker admitted,
 *   lost (with a reason code) or given up on, a rollback, the cohort continuing without a lost
 *   worker (elastic), a checkpoint complete, a resume, the run finished (or failed, with its
 *   error code). Tests and tools follow a run through these, never through its log lines.
 *
 * Accuracies and ECE are fractions (0.9 = 90%); NLL in nats; times in ms.
 */
import { z } from 'zod';
import { workerMemorySchema } from '../protocol/messages.js';

const fraction = z.number().min(0).max(1);
const count = z.int().nonnegative();
/** NaN is written as null by JSON.stringify: empty bins have no accuracy or confidence. */
const maybeNumber = z.number().nullable();

export const reliabilityBinSchema = z.object({
  lower: fraction,
  upper: fraction,
  count,
  /** Fraction right among the bin's samples (null when empty). */
  accuracy: maybeNumber,
  /** Mean confidence of the bin's samples (null when empty). */
  confidence: maybeNumber,
});

export const runRecordSchema = z.object({
  kind: z.literal('run'),
  time: z.string(),
  run: z.string(),
  algorithm: z.string(),
  members: z.array(z.object({ name: z.string(), model: z.string() })),
  teachers: z.array(z.object({ name: z.string(), model: z.string() })),
  epochs: count,
  stepsPerEpoch: count.optional(),
  batchSize: count,
  /** The step the run (re)starts at: 0, or a checkpoint's on resume. */
  startStep: count,
});

export const stepRecordSchema = z.object({
  kind: z.literal('step'),
  time: z.string(),
  worker: z.string(),
  role: z.enum(['member', 'teacher']),
  /** 0-based epoch and global step (the step just finished: step + 1 steps done). */
  epoch: count,
  step: count,
  /** The training loss of this step (members). */
  loss: z.number().optional(),
  /** Running accuracy over this epoch's training batches so far (members). */
  accuracy: fraction.optional(),
  imagesPerSecond: z.number().nonnegative(),
  /** Mean wall time per step since the previous record. */
  stepMs: z.number().nonnegative(),
  lr: z.number().optional(),
  /** The worker's backend memory at this record (GPU bytes on webgpu). */
  memory: workerMemorySchema.optional(),
});

export const evalRecordSchema = z.object({
  kind: z.literal('eval'),
  time: z.string(),
  worker: z.string(),
  role: z.enum(['member', 'teacher', 'ensemble']),
  epoch: count,
  /** A mid-epoch evaluation (evalEverySteps): the steps done when it ran; absent at an epoch's end. */
  step: count.optional(),
  accuracy: fraction,
  nll: z.number(),
  ece: fraction,
  count: count.optional(),
  entropy: z.number().optional(),
  trainAccuracy: fraction.optional(),
  trainNll: z.number().optional(),
  trainEce: fraction.optional(),
  reliability: z.array(reliabilityBinSchema).optional(),
});

/** Why a worker was lost: its process exited (its launcher saw it), a send to it failed, it was silent for livenessMs, or it joined again after losing contact. */
export const LOSS_REASONS = ['exited', 'unreachable', 'silent', 'rejoined'] as const;
export type LossReason = (typeof LOSS_REASONS)[number];

const event = <E extends string, S extends z.ZodRawShape>(name: E, shape: S) => z.object({ kind: z.literal('event'), time: z.string(), event: z.literal(name), ...shape });
const generation = count;

export const eventSchemas = {
  /** A worker's process joined and was welcomed; `rejoin`: an elastic return (it restores `checkpointStep` and continues at `startStep`). */
  'worker-admitted': event('worker-admitted', {
    worker: z.string(),
    role: z.enum(['member', 'teacher']),
    host: z.string(),
    pid: count,
    startStep: count,
    generation,
    rejoin: z.boolean(),
    checkpointStep: count.optional(),
  }),
  /**
   * A worker was lost; `step`: the first step not yet done; `pid`: its process (0 when unknown); `stopped`: the launcher was asked to stop a process that may still run;
   * `counted` false: it used no restart (it rejoined from the same process); `sameIncident`: an earlier loss of the same incident already rolled the cohort back.
   */
  'worker-lost': event('worker-lost', {
    worker: z.string(),
    reason: z.enum(LOSS_REASONS),
    detail: z.string(),
    pid: count,
    step: count,
    generation,
    restarts: count,
    stopped: z.boolean(),
    silentMs: count.optional(),
    counted: z.boolean().optional(),
    sameIncident: z.boolean().optional(),
  }),
  /** A launcher started a worker's process (`attempt` 0, then 1, 2, ... for its replacements, after `delayMs`); `pid` is local (for ssh: the ssh client's). */
  'worker-started': event('worker-started', { worker: z.string(), pid: count, host: z.string().optional(), attempt: count, delayMs: count }),
  /** A launcher stopped the process `pid` of a worker the coordinator declared lost (hung). */
  'worker-stopped': event('worker-stopped', { worker: z.string(), pid: count }),
  /** The cohort rolled back to `step` (from the checkpoint `checkpoint`, or the initial weights) in a new generation, because `worker` was lost. */
  rollback: event('rollback', { worker: z.string(), step: count, checkpoint: z.string().optional(), generation }),
  /** Elastic: the others continue without the lost `worker` from `step`. */
  'continue-without': event('continue-without', { worker: z.string(), step: count, others: z.array(z.string()) }),
  /** Elastic: lost workers that did not come back; the run finishes without them. */
  'given-up': event('given-up', { workers: z.array(z.string()) }),
  /** Every member saved its part of the checkpoint of `step` and its manifest is written. */
  'checkpoint-complete': event('checkpoint-complete', { step: count, dir: z.string() }),
  /** The coordinator's own loop did not turn for `gapMs` (a stall of its process or machine): nobody's silence. */
  'coordinator-stalled': event('coordinator-stalled', { gapMs: count }),
  /** The run resumed from the checkpoint of `step`. */
  resumed: event('resumed', { step: count, dir: z.string() }),
  /** A graceful stop was asked for (`signal`: SIGTERM, SIGINT, ...): the members checkpoint at `step` (the step barrier after the step in flight), then the workers are shut down. */
  'stop-requested': event('stop-requested', { signal: z.string(), step: count }),
  /** The run ended: `complete`, `stopped` (a graceful stop: `checkpointStep` is the checkpoint to resume from), or `failed` with its error's code and message. */
  'run-finished': event('run-finished', {
    outcome: z.enum(['complete', 'stopped', 'failed']),
    checkpointStep: count.optional(),
    steps: count,
    restarts: count,
    code: z.string().optional(),
    message: z.string().optional(),
  }),
};

export const eventRecordSchema = z.discriminatedUnion('event', Object.values(eventSchemas) as unknown as [(typeof eventSchemas)[keyof typeof eventSchemas]]);

export const metricsRecordSchema = z.discriminatedUnion('kind', [runRecordSchema, stepRecordSchema, evalRecordSchema, eventRecordSchema]);

export type ReliabilityBin = z.infer<typeof reliabilityBinSchema>;
export type RunRecord = z.infer<typeof runRecordSchema>;
export type StepRecord = z.infer<typeof stepRecordSchema>;
export type EvalRecord = z.infer<typeof evalRecordSchema>;
export type EventName = keyof typeof eventSchemas;
/** One event record; `EventRecord<'rollback'>` is that event's. */
export type EventRecord<E extends EventName = EventName> = z.infer<(typeof eventSchemas)[E]>;
export type MetricsRecord = RunRecord | StepRecord | EvalRecord | EventRecord;

/** What is wrong with a line that is not a record: not JSON, an object without `kind` (a line of an old format), or anything else. */
export type ProblemKind = 'not-json' | 'no-kind' | 'invalid';

/** Parses a metrics file's text: its records, a message per line that is not one (numbered from 1), and each such line's kind of problem (in the same order). */
export function parseMetricsLines(text: string): { records: MetricsRecord[]; problems: string[]; problemKinds: ProblemKind[] } {
  const records: MetricsRecord[] = [];
  const problems: string[] = [];
  const problemKinds: ProblemKind[] = [];
  const problem = (kind: ProblemKind, message: string) => {
    problems.push(message);
    problemKinds.push(kind);
  };
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      problem('not-json', `line ${i + 1}: not JSON`);
      return;
    }
    const parsed = metricsRecordSchema.safeParse(value);
    if (parsed.success) records.push(parsed.data);
    else {
      const kindless = typeof value === 'object' && value !== null && !('kind' in value);
      problem(kindless ? 'no-kind' : 'invalid', `line ${i + 1}: ${parsed.error.issues.map((x) => `${x.path.join('.') || 'record'}: ${x.message}`).join('; ')}`);
    }
  });
  return { records, problems, problemKinds };
}
