/**
 * The algorithms Cohort trains, one typed entry each: who takes part (members, teachers), what
 * the coordinator sends each member at a step (its teaching rule), the defaults of T, alpha and
 * beta, the config checks of its own, the loss a member minimises, and how a run of it is
 * staged (one run, or TAKD's chain of KD runs). The run config (validation, defaults), the
 * worker's objective, the coordinator's serving and the launchers all read this table; an
 * entry that leaves a field out does not compile. Adding an algorithm: one loss in
 * shared/losses/ and one entry here (see the README, "Adding an algorithm").
 */
import { join } from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import type { ParsedRunConfig, RunConfig } from '../config/run-config.js';
import { CohortError } from '../errors.js';
import {
  BYOT_DEFAULTS,
  byotLoss,
  crossEntropy,
  DKD_DEFAULTS,
  dkdLoss,
  DML_DEFAULTS,
  dmlLossFromPeerSummary,
  KD_DEFAULTS,
  kdLoss,
  TF_KD_VIRTUAL_DEFAULTS,
  tfKdVirtualLoss,
} from '../losses/index.js';

/** The algorithms' names (a run config's `algorithm`), in the table's order. */
export const ALGORITHMS = ['baseline', 'kd', 'dml', 'dml_e', 'tfkd_virtual', 'cross_quality_kd', 'byot', 'takd', 'dkd'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** How many workers of a role a run takes, and why (the config's error messages say it). */
export interface RoleCount {
  /** At least this many (members: every run has at least one; the schema says so). */
  min: number;
  /** At most this many (Infinity: no limit; 0: the role is not used). */
  max: number;
  why: string;
}

/**
 * What the coordinator sends each member at a step: nothing (each member trains alone); the
 * mean of the other members' probabilities, and with `negEntropy` their mean negative entropy
 * (DML's exact KL); or the teachers' mean probabilities.
 */
export type TeachingRule = { kind: 'none' } | { kind: 'peers-leave-one-out'; negEntropy: boolean } | { kind: 'teachers-mean' };

/** What a member's step hands its algorithm's loss. */
export interface LossInput {
  /** The model's outputs: logits, or for multi-exit models E logits then E features. */
  outputs: tf.Tensor | tf.Tensor[];
  /** The deepest exit's logits [B, C]. */
  logits: tf.Tensor2D;
  labels: tf.Tensor1D;
  /** Exits of the model (1, or 4 for a multi-exit network). */
  exits: number;
  /** The coordinator's teaching signal (undefined when the rule is 'none'). */
  teaching: Teaching | undefined;
  /** Epochs done once this step is (fractional: (step + 1) / steps per epoch); warm-ups read it. */
  epoch: number;
}

/** What the coordinator sends a member at a step. */
export interface Teaching {
  /** [batch, classes] probabilities: the peers' mean (DML, DML_e) or the teachers' (KD). */
  probs: tf.Tensor2D;
  /** DML: batch mean of the peers' mean sum_c p log p. */
  peerNegEntropy?: number;
}

/** The config a loss reads. */
export type LossConfig = Pick<RunConfig, 'algorithm' | 'temperature' | 'alpha' | 'beta' | 'labelSmoothing' | 'virtualTeacher' | 'warmupEpochs'>;

/** Reports a config problem at a key path (under `config.`). */
export type ConfigIssue = (path: (string | number)[], message: string) => void;

export interface AlgorithmEntry {
  describe: string;
  roles: { members: RoleCount; teachers: RoleCount };
  teaching: TeachingRule;
  /** Used where the config does not set them. */
  defaults: {
    temperature: number;
    alpha: number;
    /** BYOT's feature-hint weight, DKD's NCKD weight; 0 where unused. */
    beta: number;
    /** Epochs over which the KD terms are warmed up linearly, given the run's epochs (0: none). */
    warmupEpochs: (epochs: number) => number;
  };
  /** Rules of its own beyond the roles (called with the parsed config). */
  check: (run: ParsedRunConfig, issue: ConfigIssue) => void;
  /** What a member minimises at a step. */
  loss: (input: LossInput, config: LossConfig) => tf.Scalar;
  /** 'one run', or the runs it is made of, in order (TAKD: a chain of KD runs). */
  stages: 'one run' | { algorithm: Algorithm; of: (config: RunConfig) => RunConfig[] };
}

const alone = { members: { min: 1, max: Infinity, why: 'each member trains alone' }, teachers: { min: 0, max: 0, why: 'each member trains alone' } };
const peers = { members: { min: 2, max: Infinity, why: 'peers learn from each other' }, teachers: { min: 0, max: 0, why: 'the peers teach each other' } };
const taught = { members: { min: 1, max: Infinity, why: 'the students' }, teachers: { min: 1, max: Infinity, why: 'the student learns from it' } };
const noWarmup = () => 0;
const noChecks = () => {};

function signal(input: LossInput, algorithm: string): Teaching {
  if (!input.teaching) throw new Error(`${algorithm}: a step needs the coordinator's teaching signal`);
  return input.teaching;
}

/** KD from the teachers' (or the peers') mean probabilities. */
const kdFromSignal: AlgorithmEntry['loss'] = (input, c) =>
  kdLoss(input.logits, signal(input, c.algorithm).probs, input.labels, { T: c.temperature, alpha: c.alpha, teacherIsProbs: true });

/** DML's and DML_e's. */
const dmlDefaults = { temperature: DML_DEFAULTS.T, alpha: DML_DEFAULTS.alpha, beta: 0, warmupEpochs: noWarmup };

/** KD from the teachers' mean probabilities, with KD's defaults: KD, cross-quality KD, TAKD. */
const kdFromTeachers = {
  roles: taught,
  teaching: { kind: 'teachers-mean' },
  defaults: { temperature: KD_DEFAULTS.T, alpha: KD_DEFAULTS.alpha, beta: 0, warmupEpochs: noWarmup },
  loss: kdFromSignal,
} satisfies Pick<AlgorithmEntry, 'roles' | 'teaching' | 'defaults' | 'loss'>;

/** A linear warm-up of KD terms: 0 -> 1 over the first `warmupEpochs` epochs (1 with none). */
export function warmupWeight(epoch: number, warmupEpochs: number): number {
  return warmupEpochs > 0 ? Math.min(1, epoch / warmupEpochs) : 1;
}

/** The KD stages of a TAKD run: stage i trains members[i] from stage i - 1's member (stage 0: the teachers). */
export function takdStages(config: RunConfig): RunConfig[] {
  const stageName = (i: number) => `${config.name}-stage${i + 1}`;
  return config.members.map((member, i) => {
    const previous = config.members[i - 1];
    // The previous stage's member, from its final weights (RUNDIR/NAME/MEMBER/final).
    const teachers = i === 0 ? config.teachers : [{ ...previous, checkpoint: join(config.runDir, stageName(i - 1), previous.name, 'final') }];
    return { ...config, name: stageName(i), algorithm: 'kd', members: [member], teachers };
  });
}

/** Every algorithm has an entry, and every entry every field. */
const ENTRIES: Record<Algorithm, AlgorithmEntry> = {
  baseline: {
    describe: 'each member alone, cross-entropy (with optional label smoothing)',
    roles: alone,
    teaching: { kind: 'none' },
    defaults: { temperature: 1, alpha: 0, beta: 0, warmupEpochs: noWarmup },
    check: noChecks,
    loss: (input, c) => crossEntropy(input.logits, input.labels, { labelSmoothing: c.labelSmoothing }),
    stages: 'one run',
  },
  kd: {
    describe: "knowledge distillation (Hinton et al. 2015) from the teachers' mean probabilities",
    ...kdFromTeachers,
    check: noChecks,
    stages: 'one run',
  },
  dml: {
    describe: 'deep mutual learning (Zhang et al. 2018): each member from each of its peers',
    roles: peers,
    teaching: { kind: 'peers-leave-one-out', negEntropy: true },
    defaults: dmlDefaults,
    check: noChecks,
    loss: (input, c) => {
      const t = signal(input, c.algorithm);
      return dmlLossFromPeerSummary(input.logits, { meanProbs: t.probs, meanNegEntropy: t.peerNegEntropy ?? 0 }, input.labels, { T: c.temperature, alpha: c.alpha });
    },
    stages: 'one run',
  },
  dml_e: {
    describe: "DML with an ensemble target: each member from its peers' mean probabilities",
    roles: peers,
    teaching: { kind: 'peers-leave-one-out', negEntropy: false },
    defaults: dmlDefaults,
    check: noChecks,
    loss: kdFromSignal,
    stages: 'one run',
  },
  tfkd_virtual: {
    describe: 'teacher-free KD (Yuan et al. 2020) from a virtual teacher',
    roles: alone,
    teaching: { kind: 'none' },
    defaults: { temperature: TF_KD_VIRTUAL_DEFAULTS.T, alpha: TF_KD_VIRTUAL_DEFAULTS.alpha, beta: 0, warmupEpochs: noWarmup },
    check: noChecks,
    loss: (input, c) => tfKdVirtualLoss(input.logits, input.labels, { a: c.virtualTeacher.a, smoothTeacher: c.virtualTeacher.smooth, T: c.temperature, alpha: c.alpha }),
    stages: 'one run',
  },
  cross_quality_kd: {
    describe: 'KD of a low-resolution student from a full-resolution teacher',
    ...kdFromTeachers,
    check: (run, issue) => {
      if (!run.members.some((m) => m.downscale)) issue(['members'], 'cross_quality_kd needs at least one member with a downscale (the low-resolution student)');
    },
    stages: 'one run',
  },
  byot: {
    describe: 'be your own teacher (Zhang et al. 2019): a multi-exit network distils into its shallower exits',
    roles: alone,
    teaching: { kind: 'none' },
    defaults: { temperature: BYOT_DEFAULTS.T, alpha: BYOT_DEFAULTS.alpha, beta: BYOT_DEFAULTS.beta, warmupEpochs: noWarmup },
    check: (run, issue) => {
      run.members.forEach((m, i) => {
        if (!m.model.name.startsWith('multi-exit-')) issue(['members', i, 'model', 'name'], `byot needs a multi-exit model (multi-exit-resnet18/34/50), got '${m.model.name}'`);
      });
    },
    loss: (input, c) => {
      const all = input.outputs as tf.Tensor[];
      return byotLoss(all.slice(0, input.exits) as tf.Tensor2D[], all.slice(input.exits), input.labels, { T: c.temperature, alpha: c.alpha, beta: c.beta });
    },
    stages: 'one run',
  },
  takd: {
    describe: 'teacher-assistant KD (Mirzadeh et al. 2020): a chain of KD runs, teacher -> assistant(s) -> student',
    ...kdFromTeachers,
    check: noChecks,
    stages: { algorithm: 'kd', of: takdStages },
  },
  dkd: {
    describe: 'decoupled KD (Zhao et al. 2022): target-class and non-target-class KD, weighted apart',
    roles: taught,
    teaching: { kind: 'teachers-mean' },
    // The paper warms up over 20 of its 240 epochs: 20 epochs, or the same 1/12 of a shorter run
    // (a 4-epoch run over its first third of an epoch), so that short runs distil too.
    defaults: { temperature: DKD_DEFAULTS.T, alpha: DKD_DEFAULTS.alpha, beta: DKD_DEFAULTS.beta, warmupEpochs: (epochs) => Math.min(20, (20 / 240) * epochs) },
    check: noChecks,
    loss: (input, c) => {
      const w = warmupWeight(input.epoch, c.warmupEpochs);
      return dkdLoss(input.logits, signal(input, c.algorithm).probs, input.labels, { T: c.temperature, alpha: w * c.alpha, beta: w * c.beta, teacherIsProbs: true });
    },
    stages: 'one run',
  },
};

/**
 * Refuses a run made of stages where only one run can be served (`cohort coordinator`, `cohort
 * launch`): one CohortError naming what to do instead (`instead`: how to run each stage there).
 */
export function requireOneRun(config: Pick<RunConfig, 'algorithm'>, instead: string): void {
  const plan = ENTRIES[config.algorithm].stages;
  if (plan === 'one run') return;
  throw new CohortError(
    `${config.algorithm} runs as a chain of ${plan.algorithm.toUpperCase()} stages: start it with \`cohort train\`, or ${instead.replace('STAGE', plan.algorithm)}`,
    { code: 'USAGE' },
  );
}

/** The entry of an algorithm. */
export function algorithmEntry(algorithm: Algorithm): AlgorithmEntry {
  return ENTRIES[algorithm];
}
