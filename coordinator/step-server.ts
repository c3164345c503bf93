/**
 * Serving steps: the predictions of each step as they arrive, checked to be of the same
 * samples, summed in config order, and the teaching signal each member is sent once its
 * algorithm's teaching rule (shared/algorithms/registry.ts) can be applied: the leave-one-out
 * mean of its peers' probabilities (DML, DML_e), the teachers' mean (KD-style), or nothing.
 * Sends go through the `send` given to serve(), so the rules are tested without sockets.
 */
import type { TeachingRule } from '../shared/algorithms/registry.js';
import { CohortError } from '../shared/errors.js';
import type { Message, MessageOf, TensorFrame } from '../shared/protocol/messages.js';
import type { Role } from './membership.js';
import { PredictionSums } from './teaching.js';

export interface StepPredictions {
  indices: Uint32Array | Int32Array;
  probs: Float32Array;
  negEntropy: number;
  classes: number;
}

interface StepState {
  members: Map<string, StepPredictions>;
  teachers: Map<string, StepPredictions>;
  served: Set<string>;
  /** Running sums of the members' (DML) or the teachers' (KD) predictions. */
  sums?: PredictionSums;
  /** How many workers of the summing order (config order) the sums have passed. */
  summed: number;
}

/** What became of predictions handed to add(). */
export type Arrival = { kind: 'added' } | { kind: 'duplicate' } | { kind: 'already-done' } | { kind: 'other-shape'; why: string };

export interface StepServerOptions {
  members: readonly string[];
  teachers: readonly string[];
  rule: TeachingRule;
  /** Whether a worker is live (the elastic policy serves steps without the lost ones). */
  isLive: (name: string) => boolean;
}

export function float32(frame: TensorFrame): Float32Array {
  if (frame.dtype !== 'float32') throw new CohortError(`expected a float32 tensor, got ${frame.dtype}`, { code: 'PROTOCOL_MISMATCH' });
  return frame.data;
}

function sameSamples(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const preview = (a: ArrayLike<number>) => `[${Array.from(a).slice(0, 4).join(', ')}${a.length > 4 ? ', ...' : ''}]`;

export class StepServer {
  private readonly steps = new Map<number, StepState>();
  /** Steps every member has been served (since the last rollback). */
  private readonly servedSteps = new Set<number>();
  /** Sums of finished steps, reset and reused by later ones (each holds a WebAssembly memory). */
  private readonly spareSums: PredictionSums[] = [];
  private readonly sumOrder: readonly string[];
  /** The first step not yet done by every live member. */
  nextStep = 0;
  /** Steps served in all. */
  served = 0;
  /** The highest step any member has been served (since the last rollback; -1: none): a graceful stop's barrier follows it. */
  highestServed = -1;
  /** Each member's last reported loss. */
  readonly lastLoss = new Map<string, number>();

  constructor(private readonly options: StepServerOptions) {
    const { rule, members, teachers } = options;
    this.sumOrder = rule.kind === 'peers-leave-one-out' ? members : rule.kind === 'teachers-mean' ? teachers : [];
  }

  /** Whether every live member has been served `step`. */
  isServed(step: number): boolean {
    return this.servedSteps.has(step);
  }

  /** The steps with predictions waiting, in order. */
  pending(): number[] {
    return [...this.steps.keys()].sort((a, b) => a - b);
  }

  /**
   * Takes a worker's predictions for a step. Throws when they are of other samples than the
   * step's first (the workers do not read the same data); ignores a step already served and a
   * batch of another shape.
   */
  add(name: string, role: Role, m: MessageOf<'predictions'>): Arrival {
    if (this.servedSteps.has(m.step)) return { kind: 'already-done' };
    const state = this.stateOf(m.step);
    const entry: StepPredictions = { indices: m.indices.data as Uint32Array | Int32Array, probs: float32(m.probs), negEntropy: m.negEntropy, classes: m.probs.shape[1] };
    // The first predictions of this step, which every later one must match.
    const first = [...state.members, ...state.teachers][0];
    if (first && !sameSamples(first[1].indices, entry.indices)) {
      throw new CohortError(
        `step ${m.step}: ${name}'s batch holds samples ${preview(entry.indices)} but ${first[0]}'s ${preview(first[1].indices)}; workers must read the same data with the same seed and batch size`,
        { code: 'SAMPLES_MISMATCH' },
      );
    }
    if (first && first[1].probs.length !== entry.probs.length) {
      const { probs, classes } = first[1];
      return { kind: 'other-shape', why: `shape ${m.probs.shape.join('x')}, the others sent ${probs.length / classes}x${classes}` };
    }
    const group = role === 'member' ? state.members : state.teachers;
    if (group.has(name)) return { kind: 'duplicate' };
    group.set(name, entry);
    // Sum as predictions arrive, overlapping the wait for the others.
    this.accumulate(state);
    if (role === 'member' && m.loss !== undefined) this.lastLoss.set(name, m.loss);
    return { kind: 'added' };
  }

  /**
   * Sends each waiting member of `step` its teaching signal once the rule can be applied;
   * returns whether the step is now done (every live member served).
   */
  async serve(step: number, generation: number, send: (name: string, message: Message) => Promise<void>): Promise<boolean> {
    const state = this.steps.get(step);
    if (!state) return false;
    const { rule } = this.options;
    const liveMembers = this.options.members.filter(this.options.isLive);
    const waiting = liveMembers.filter((n) => state.members.has(n) && !state.served.has(n));
    if (rule.kind === 'peers-leave-one-out') {
      // Every live member's predictions, and at least one peer for each.
      if (waiting.length < liveMembers.length || waiting.length < 2) return false;
      this.accumulate(state, true);
      // Each member's signal goes out as soon as it is computed, so ZeroMQ's I/O thread sends
      // it while the next one is computed (sends never reject: a failure marks the worker lost).
      for (const n of waiting) {
        state.served.add(n);
        const own = state.members.get(n)!;
        // own.probs is not read again once the step is served: its teaching signal is written
        // over it (no new buffer per member and step: at 256x1000 a fresh 1 MB costs page faults).
        const teaching = state.sums!.leaveOneOut(own.probs, own.negEntropy, own.probs);
        await send(n, {
          type: 'teaching',
          step,
          teaching: { dtype: 'float32', shape: [own.probs.length / own.classes, own.classes], data: teaching.meanProbs },
          ...(rule.negEntropy ? { peerNegEntropy: teaching.meanNegEntropy } : {}),
          peerCount: waiting.length - 1,
          generation,
        });
      }
    } else if (rule.kind === 'teachers-mean') {
      const liveTeachers = this.options.teachers.filter(this.options.isLive);
      if (waiting.length === 0 || state.teachers.size === 0 || !liveTeachers.every((n) => state.teachers.has(n))) return false;
      this.accumulate(state, true);
      const probs = state.sums!.mean();
      const classes = [...state.teachers.values()][0].classes;
      await Promise.all(
        waiting.map((n) => {
          state.served.add(n);
          return send(n, {
            type: 'teaching',
            step,
            teaching: { dtype: 'float32', shape: [probs.length / classes, classes], data: probs },
            peerCount: state.teachers.size,
            generation,
          });
        }),
      );
    } else {
      for (const n of waiting) state.served.add(n);
    }
    if (waiting.length > 0) this.highestServed = Math.max(this.highestServed, step);
    if (!liveMembers.every((n) => state.served.has(n))) return false;
    this.steps.delete(step);
    this.servedSteps.add(step);
    while (this.servedSteps.has(this.nextStep)) this.nextStep++;
    if (state.sums && this.spareSums.length < 4) this.spareSums.push(state.sums); // reused by a later step: less garbage
    this.served++;
    return true;
  }

  /** Elastic: the steps in flight drop a lost worker's predictions (the others' sums are added again). */
  drop(name: string, role: Role): void {
    for (const state of this.steps.values()) {
      if (!(role === 'member' ? state.members : state.teachers).delete(name)) continue;
      // The sums of the others, added again (not a subtraction, which would round differently).
      state.sums = undefined;
      state.summed = 0;
      this.accumulate(state);
    }
  }

  /** A rollback: every step in flight or served is forgotten; the cohort continues at `step`. */
  rollBack(step: number): void {
    this.steps.clear();
    this.servedSteps.clear();
    this.nextStep = step;
    this.highestServed = step - 1;
  }

  private newSums(size: number): PredictionSums {
    const spare = this.spareSums.findIndex((s) => s.size === size);
    return spare >= 0 ? this.spareSums.splice(spare, 1)[0].reset() : new PredictionSums(size);
  }

  private stateOf(step: number): StepState {
    let state = this.steps.get(step);
    if (!state) this.steps.set(step, (state = { members: new Map(), teachers: new Map(), served: new Set(), summed: 0 }));
    return state;
  }

  /**
   * Adds a step's predictions to its sums in config order, whatever order they arrive in, so a
   * run's arithmetic does not depend on timing (float sums depend on their order): as far as
   * the config-order prefix has arrived, or, with `complete` (the step is being served), all
   * that are there.
   */
  private accumulate(state: StepState, complete = false): void {
    const group = this.options.rule.kind === 'peers-leave-one-out' ? state.members : state.teachers;
    for (; state.summed < this.sumOrder.length; state.summed++) {
      const entry = group.get(this.sumOrder[state.summed]);
      if (entry) (state.sums ??= this.newSums(entry.probs.length)).add(entry.probs, entry.negEntropy);
      else if (!complete) break;
    }
  }
}
