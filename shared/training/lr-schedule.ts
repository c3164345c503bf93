/**
 * Learning-rate schedules as pure functions of the step (tfjs has none): constant, step decay
 * at epoch milestones, cosine decay, and PyTorch's OneCycleLR (cosine annealing, the default
 * three-phase=false form) that distillistic steps per batch.
 */
export type Schedule =
  | { kind: 'constant' }
  | { kind: 'step'; milestones: number[]; gamma: number }
  | { kind: 'cosine'; minLr: number }
  | { kind: 'onecycle'; pctStart: number; divFactor: number; finalDivFactor: number; cycleMomentum?: boolean; baseMomentum?: number; maxMomentum?: number };

export interface ScheduleClock {
  /** Steps taken before this one (0 for the first step). */
  step: number;
  stepsPerEpoch: number;
  totalSteps: number;
}

const cosineBetween = (from: number, to: number, fraction: number) => to + ((from - to) * (1 + Math.cos(Math.PI * fraction))) / 2;

/** OneCycle's two phases (three_phase=False): the step where the warm-up ends and the last step. */
function oneCyclePhases(schedule: { pctStart: number }, totalSteps: number): { warmEnd: number; lastStep: number } {
  return { warmEnd: schedule.pctStart * totalSteps - 1, lastStep: totalSteps - 1 };
}

/**
 * The momentum of step `clock.step` under OneCycle with cycle_momentum (PyTorch's default):
 * maxMomentum down to baseMomentum over the warm-up while the rate rises, back up after (0.95
 * -> 0.85 -> 0.95 by default); for Adam-type optimizers PyTorch cycles beta1. Undefined for
 * other schedules, or when cycling is off.
 */
export function momentumAt(schedule: Schedule, clock: ScheduleClock): number | undefined {
  if (schedule.kind !== 'onecycle' || schedule.cycleMomentum === false) return undefined;
  const base = schedule.baseMomentum ?? 0.85;
  const max = schedule.maxMomentum ?? 0.95;
  const { warmEnd, lastStep } = oneCyclePhases(schedule, clock.totalSteps);
  const { step } = clock;
  if (step <= warmEnd) return cosineBetween(max, base, warmEnd > 0 ? step / warmEnd : 1);
  return cosineBetween(base, max, Math.min(1, (step - warmEnd) / Math.max(1e-12, lastStep - warmEnd)));
}

/** The learning rate of step `clock.step` for a schedule whose peak (or constant) rate is `lr`. */
export function learningRateAt(schedule: Schedule, lr: number, clock: ScheduleClock): number {
  const { step, stepsPerEpoch, totalSteps } = clock;
  switch (schedule.kind) {
    case 'constant':
      return lr;
    case 'step': {
      const epoch = Math.floor(step / stepsPerEpoch);
      return lr * schedule.gamma ** schedule.milestones.filter((m) => epoch >= m).length;
    }
    case 'cosine':
      return cosineBetween(lr, schedule.minLr, Math.min(1, step / Math.max(1, totalSteps)));
    case 'onecycle': {
      // torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps, pct_start, anneal_strategy='cos').
      const initial = lr / schedule.divFactor;
      const final = initial / schedule.finalDivFactor;
      const { warmEnd, lastStep } = oneCyclePhases(schedule, totalSteps);
      if (step <= warmEnd) return cosineBetween(initial, lr, warmEnd > 0 ? step / warmEnd : 1);
      return cosineBetween(lr, final, Math.min(1, (step - warmEnd) / Math.max(1e-12, lastStep - warmEnd)));
    }
  }
}
