/**
 * Validation of the loss options, so that a bad temperature or weight is a clear error naming
 * the option, not a silent NaN.
 */
import { CohortError } from '../errors.js';

export interface DistillationOptions {
  /** Temperature T > 0 of the softened distributions. */
  T?: number;
  /** Weight alpha in [0, 1] of the soft (distillation) term; 1 - alpha weighs the hard CE. */
  alpha?: number;
}

export function checkTemperature(T: number, where: string): number {
  if (!Number.isFinite(T) || T <= 0) throw new CohortError(`${where}: temperature T must be a positive number, got ${T}`, { code: 'INVALID_ARGUMENT' });
  return T;
}

export function checkFraction(value: number, name: string, where: string): number {
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    throw new CohortError(`${where}: ${name} must be in [0, 1], got ${value}`, { code: 'INVALID_ARGUMENT' });
  }
  return value;
}

export function checkNonNegative(value: number, name: string, where: string): number {
  if (!Number.isFinite(value) || value < 0) throw new CohortError(`${where}: ${name} must be a non-negative number, got ${value}`, { code: 'INVALID_ARGUMENT' });
  return value;
}

/** T and alpha with their defaults, validated. */
export function distillationOptions(options: DistillationOptions, where: string, defaults: { T: number; alpha: number }) {
  return {
    T: checkTemperature(options.T ?? defaults.T, where),
    alpha: checkFraction(options.alpha ?? defaults.alpha, 'alpha', where),
  };
}
