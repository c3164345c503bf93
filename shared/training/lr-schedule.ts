/**
 * Learning-rate schedules as pure functions of the step (tfjs has none): constant, step decay
 * at epoch milestones, cosine decay, and PyTorch's OneCycleLR (cosine annealing, the default
 * three-phase=false form) that distillistic steps per batch.
 */
export type Schedule =
  | { kind: 'constant' }
  | { kind: 'step'; milestones: number[]; gamma: number }
  | { kind: 'cosine'; minLr: number }
  | { kind: 'onecycle'; pctStart: number; divFactor: number; finalDivFactor: number };

export interface ScheduleClock {
  /** Steps taken before this one (0 for the first step). */
  step: number;
  stepsPerEpoch: number;
  totalSteps: number;
}

const cosineBetween = (from: number, to: number, fraction: number) => to + ((from - to) * (1 + Math.cos(Math.PI * fraction))) / 2;

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
      const warmEnd = schedule.pctStart * totalSteps - 1;
      const lastStep = totalSteps - 1;
      if (step <= warmEnd) return cosineBetween(initial, lr, warmEnd > 0 ? step / warmEnd : 1);
      return cosineBetween(lr, final, Math.min(1, (step - warmEnd) / Math.max(1e-12, lastStep - warmEnd)));
    }
  }
}
