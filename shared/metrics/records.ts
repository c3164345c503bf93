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

export const metricsRecordSchema = z.discriminatedUnion('kind', [runRecordSchema, stepRecordSchema, evalRecordSchema]);

export type ReliabilityBin = z.infer<typeof reliabilityBinSchema>;
export type RunRecord = z.infer<typeof runRecordSchema>;
export type StepRecord = z.infer<typeof stepRecordSchema>;
export type EvalRecord = z.infer<typeof evalRecordSchema>;
export type MetricsRecord = z.infer<typeof metricsRecordSchema>;

/** Parses a metrics file's text: its records, and a message per line that is not one (numbered from 1). */
export function parseMetricsLines(text: string): { records: MetricsRecord[]; problems: string[] } {
  const records: MetricsRecord[] = [];
  const problems: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      problems.push(`line ${i + 1}: not JSON`);
      return;
    }
    const parsed = metricsRecordSchema.safeParse(value);
    if (parsed.success) records.push(parsed.data);
    else problems.push(`line ${i + 1}: ${parsed.error.issues.map((x) => `${x.path.join('.') || 'record'}: ${x.message}`).join('; ')}`);
  });
  return { records, problems };
}
