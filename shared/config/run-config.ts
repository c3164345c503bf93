/**
 * The run config: one YAML or JSON file describes a run (algorithm, cohort members and
 * teachers, dataset, schedule, distillation weights, evaluation and checkpoint cadence, run
 * directory). The zod schema below is its one definition: the TypeScript types are inferred
 * from it, and `loadRunConfig` reports every bad key with what was expected there.
 */
import { readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { algorithmEntry, ALGORITHMS, type Algorithm, type RoleCount } from '../algorithms/registry.js';
import { datasetSchema, downscaleSchema } from '../data/datasets.js';
import { BACKEND_CHOICES } from '../engine/backend.js';
import { CohortError } from '../errors.js';
import { TF_KD_VIRTUAL_DEFAULTS } from '../losses/tf-kd.js';
import { fixesInputSize, MODEL_NAMES, resolveModelConfig, type ModelConfig } from '../models/registry.js';
import { checkTeacherSource, onnxTeacherKeys } from './onnx-teacher.js';
import { parseConfig } from './parse.js';
import { cyclesMomentum } from '../training/objective.js';

export { ALGORITHMS, type Algorithm };

const name = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected 1-64 letters, digits, _ . or -');

const modelSchema = z
  .strictObject({
    name: z.enum(MODEL_NAMES),
    classes: z.int().min(2).optional(),
    inputShape: z.tuple([z.int().positive(), z.int().positive(), z.int().positive()]).optional(),
    stem: z.enum(['imagenet', 'small']).optional(),
    dropout: z.number().min(0).lt(1).optional(),
    pooling: z.enum(['valid', 'same']).optional(),
    seed: z.int().optional(),
    /** torchvision weights: a state dict saved as safetensors (resnet18/34/50, mobilenetv2). */
    weights: z.string().min(1).optional(),
  })
  .superRefine((model, ctx) => {
    try {
      resolveModelConfig(model as ModelConfig);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  });

const optimizerSchema = z.strictObject({
  /** adamw: PyTorch's AdamW (decoupled weight decay; OneCycle cycles its beta1). */
  name: z.enum(['adam', 'adamw', 'sgd']).default('adam'),
  lr: z.number().positive().default(1e-3),
  /** SGD only. */
  momentum: z.number().min(0).lt(1).default(0.9),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  /** AdamW only: decoupled weight decay (default 0.01, PyTorch's). */
  weightDecay: z.number().min(0).optional(),
});

const scheduleSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('constant') }),
  /** lr * gamma^(number of milestones passed), milestones in epochs. */
  z.strictObject({ kind: z.literal('step'), milestones: z.array(z.int().positive()).min(1), gamma: z.number().positive().default(0.1) }),
  /** Cosine decay from lr to minLr over the run, per step. */
  z.strictObject({ kind: z.literal('cosine'), minLr: z.number().min(0).default(0) }),
  /** PyTorch OneCycleLR (cosine, per step): lr / divFactor up to lr over pctStart of the run, then down to lr / divFactor / finalDivFactor. */
  z.strictObject({
    kind: z.literal('onecycle'),
    pctStart: z.number().gt(0).lt(1).default(0.1),
    divFactor: z.number().gt(1).default(25),
    finalDivFactor: z.number().gt(1).default(1e4),
    /** Cycle the momentum inversely to the rate, as PyTorch does by default (AdamW's beta1, SGD's momentum); default: on where the optimizer can (not tfjs's Adam). */
    cycleMomentum: z.boolean().optional(),
    baseMomentum: z.number().gt(0).lt(1).default(0.85),
    maxMomentum: z.number().gt(0).lt(1).default(0.95),
  }),
]);

const workerSchema = z.strictObject({
  name,
  model: modelSchema,
  optimizer: optimizerSchema.default({ name: 'adam', lr: 1e-3, momentum: 0.9, beta1: 0.9, beta2: 0.999 }),
  schedule: scheduleSchema.default({ kind: 'constant' }),
  backend: z.enum(BACKEND_CHOICES).default('auto'),
  /** GPU index this worker is pinned to (CUDA_VISIBLE_DEVICES). */
  gpu: z.int().min(0).optional(),
  /** Cross-quality: this worker sees the images downscaled. */
  downscale: downscaleSchema.optional(),
  /** Own augmentation seed (image-folder): other crops and flips of the same samples. */
  augmentSeed: z.int().optional(),
});

const teacherSchema = workerSchema
  .extend({
    /** A zoo network, or (instead) an `onnx` model file. */
    model: modelSchema.optional(),
    /** A saved member (its run directory's checkpoint) whose weights this forward-only teacher loads. */
    checkpoint: z.string().min(1).optional(),
    ...onnxTeacherKeys,
  })
  .superRefine((teacher, ctx) => checkTeacherSource(teacher, (path, message) => ctx.addIssue({ code: 'custom', path, message })));

export const runConfigSchema = z
  .strictObject({
    name: name.default('run'),
    algorithm: z.enum(ALGORITHMS),
    dataset: datasetSchema,
    members: z.array(workerSchema).min(1),
    teachers: z.array(teacherSchema).default([]),
    epochs: z.int().positive().default(1),
    batchSize: z.int().positive().default(128),
    seed: z.int().default(42),
    /** Use only the first N training samples of each epoch (smoke runs). */
    trainLimit: z.int().positive().optional(),
    /** Default by algorithm (its entry in shared/algorithms/registry.ts). */
    temperature: z.number().positive().optional(),
    alpha: z.number().min(0).max(1).optional(),
    /** A second loss weight (BYOT: the feature hint's); default by algorithm. */
    beta: z.number().min(0).optional(),
    /** Epochs over which an algorithm's KD terms are warmed up linearly from 0 (default by algorithm; 0: none). */
    warmupEpochs: z.number().min(0).optional(),
    labelSmoothing: z.number().min(0).lt(1).default(0),
    /** Tf-KD_virtual: the virtual teacher's probability on the true class, and whether it is softened by T. */
    virtualTeacher: z
      .strictObject({ a: z.number().gt(0).lt(1).default(TF_KD_VIRTUAL_DEFAULTS.a), smooth: z.boolean().default(TF_KD_VIRTUAL_DEFAULTS.smoothTeacher) })
      .default({ a: TF_KD_VIRTUAL_DEFAULTS.a, smooth: TF_KD_VIRTUAL_DEFAULTS.smoothTeacher }),
    /** Cross-quality KD: feed the teacher the student's downscaled images (distillistic) instead of full resolution. */
    teacherSeesDownscaled: z.boolean().default(false),
    evalEvery: z.int().positive().default(1),
    /** Members also evaluate on the test set every this many steps (accuracy, NLL, ECE, and the ensemble's): often enough to see a run fluctuate. */
    evalEverySteps: z.int().positive().optional(),
    /** Steps between a worker's progress reports (the live display and the step records of metrics.jsonl). */
    progressEvery: z.int().positive().default(20),
    /** Global checkpoints (all members at the same step) every `everySteps` steps; the newest `keep` are kept. */
    checkpoint: z.strictObject({ everySteps: z.int().positive().default(200), keep: z.int().positive().default(3) }).default({ everySteps: 200, keep: 3 }),
    /**
     * What happens when a worker dies or stops answering for `livenessMs`: `restart` rolls the
     * cohort back to the last global checkpoint while the launcher (or the cluster) restarts the
     * worker, at most `maxRestarts` times; `elastic` lets the others keep training (DML averages
     * over the live peers) while the worker is restarted, restored from its last checkpoint and
     * rejoins at the current step; `fail` stops the run.
     */
    recovery: z
      .strictObject({
        policy: z.enum(['restart', 'elastic', 'fail']).default('restart'),
        maxRestarts: z.int().min(0).default(3),
        /** Delay before the launcher respawns a worker, doubled after each restart. */
        backoffMs: z.int().min(0).default(1000),
        /** A worker silent this long is declared lost (workers send a heartbeat every `heartbeatMs`). */
        livenessMs: z.int().positive().default(20_000),
        heartbeatMs: z.int().positive().default(1000),
      })
      .default({ policy: 'restart', maxRestarts: 3, backoffMs: 1000, livenessMs: 20_000, heartbeatMs: 1000 }),
    runDir: z.string().min(1).default('runs'),
    exchange: z
      .strictObject({
        /** Send logits and teaching signals as float16 (half the bytes). */
        float16: z.boolean().default(false),
        /** How many steps forward-only teachers may run ahead of the students. */
        teacherWindow: z.int().positive().default(4),
        /** How long the coordinator waits for any message before giving up on the run. */
        timeoutMs: z.int().positive().default(60_000),
        /** Larger messages are dropped (with a log line); ZeroMQ disconnects a peer past twice this. */
        maxMessageMiB: z.number().positive().default(256),
      })
      .default({ float16: false, teacherWindow: 4, timeoutMs: 60_000, maxMessageMiB: 256 }),
  })
  .superRefine((run, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    const names = [...run.members, ...run.teachers].map((w) => w.name);
    names.forEach((n, i) => {
      if (names.indexOf(n) !== i)
        issue(i < run.members.length ? ['members', i, 'name'] : ['teachers', i - run.members.length, 'name'], `'${n}' is used twice; worker names must be unique`);
    });
    const entry = algorithmEntry(run.algorithm);
    checkRole(run, 'members', entry.roles.members, issue);
    checkRole(run, 'teachers', entry.roles.teachers, issue);
    entry.check(run, issue);
    if (run.teacherSeesDownscaled) checkTeachersSeeDownscaled(run, issue);
    run.members.forEach((m, i) => checkOptimizer(m, ['members', i], issue));
  });

type ParsedRun = z.output<typeof runConfigSchema>;
type Issue = (path: (string | number)[], message: string) => void;

/** weightDecay belongs to AdamW; OneCycle's cycleMomentum: true needs an optimizer whose momentum can move (not tfjs's Adam). */
function checkOptimizer(worker: z.output<typeof workerSchema>, path: (string | number)[], issue: Issue): void {
  if (worker.optimizer.weightDecay !== undefined && worker.optimizer.name !== 'adamw') {
    issue([...path, 'optimizer', 'weightDecay'], `weightDecay (decoupled) applies to adamw only, not ${worker.optimizer.name}`);
  }
  if (worker.schedule.kind === 'onecycle' && worker.schedule.cycleMomentum === true && !cyclesMomentum(worker.optimizer)) {
    issue(
      [...path, 'schedule', 'cycleMomentum'],
      `${worker.optimizer.name}${worker.optimizer.name === 'sgd' ? ' without momentum' : ''} has no momentum to cycle (tfjs's Adam fixes beta1): use optimizer adamw, or sgd with momentum`,
    );
  }
}

/** The algorithm's count of members or teachers (one member is the schema's own minimum). */
function checkRole(run: ParsedRun, role: 'members' | 'teachers', count: RoleCount, issue: Issue): void {
  const n = run[role].length;
  const noun = (k: number) => `${role === 'members' ? 'member' : 'teacher'}${k > 1 ? 's' : ''}`;
  if (n < count.min && (role === 'teachers' || count.min > 1)) issue([role], `${run.algorithm} needs at least ${count.min} ${noun(count.min)} (${count.why}), got ${n}`);
  if (n > count.max)
    issue([role], count.max === 0 ? `${run.algorithm} takes no ${role} (${count.why})` : `${run.algorithm} takes at most ${count.max} ${noun(count.max)} (${count.why}), got ${n}`);
}

/**
 * With teacherSeesDownscaled a teacher takes the students' downscaled view. A teacher whose
 * saved weights fix its input size (the small CNNs and MLPs) cannot take a view smaller than the
 * images they were trained on (no upsample back): refused here rather than when it loads them.
 */
function checkTeachersSeeDownscaled(run: ParsedRun, issue: Issue): void {
  const view = run.members.find((m) => m.downscale)?.downscale;
  for (const t of run.teachers) {
    const seen = t.downscale ?? view;
    if (!seen || seen.upsample !== 'none' || !t.checkpoint || !t.model || t.model.inputShape || !fixesInputSize(t.model.name)) continue;
    issue(
      ['teacherSeesDownscaled'],
      `teacher '${t.name}' (${t.model!.name}) loads weights whose dense layer is sized by full-resolution images and cannot take the ${seen.size}x${seen.size} view (upsample: none): ` +
        `upsample it back (the student's downscale.upsample: nearest or bilinear), or set teacherSeesDownscaled: false`,
    );
  }
}

/** What users write. */
export type RunConfigInput = z.input<typeof runConfigSchema>;
/** A config as the schema parses it, before the algorithm's defaults are filled in. */
export type ParsedRunConfig = ParsedRun;
/** A validated run config with every default filled in. */
export type RunConfig = ParsedRun & { temperature: number; alpha: number; beta: number; warmupEpochs: number };
export type WorkerConfig = z.output<typeof workerSchema>;
export type TeacherConfig = z.output<typeof teacherSchema>;

/** The folder of a run: RUNDIR/NAME (config, metrics, checkpoints, final weights, keys). */
export function runDirectory(config: Pick<RunConfig, 'runDir' | 'name'>): string {
  return join(config.runDir, config.name);
}

/** Validates a parsed config object and fills the algorithm's defaults. */
export function resolveRunConfig(value: unknown): RunConfig {
  const run = parseConfig(runConfigSchema, value, 'config');
  const defaults = algorithmEntry(run.algorithm).defaults;
  return {
    ...run,
    temperature: run.temperature ?? defaults.temperature,
    alpha: run.alpha ?? defaults.alpha,
    beta: run.beta ?? defaults.beta,
    warmupEpochs: run.warmupEpochs ?? defaults.warmupEpochs(run.epochs),
  };
}

/** Reads a .yaml/.yml/.json run config file. */
export function loadRunConfig(path: string): RunConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CohortError(code === 'ENOENT' ? `config file not found: ${path}` : `cannot read config ${path}: ${(error as Error).message}`, {
      code: 'FILE_UNREADABLE',
      cause: error,
    });
  }
  let value: unknown;
  try {
    value = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new CohortError(`${path}: not valid ${extname(path).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(error as Error).message.split('\n')[0]}`, {
      code: 'CONFIG_INVALID',
      cause: error,
    });
  }
  try {
    return resolveRunConfig(value);
  } catch (error) {
    if (error instanceof CohortError) throw new CohortError(`${path}: ${error.message}`, { code: error.code, cause: error });
    throw error;
  }
}
