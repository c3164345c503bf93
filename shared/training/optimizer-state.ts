/**
 * An optimizer's whole state as named tensors and back, exactly, for every optimizer
 * `makeOptimizer` builds (Adam, SGD with momentum, plain SGD).
 *
 * tfjs's getWeights/setWeights are not exact for Adam: training keeps the bias-correction
 * powers beta1^t, beta2^t as running float32 products (accBeta *= beta at every step), but
 * setWeights recomputes them with pow(beta, iterations + 1), which differs from the product in
 * the last bits; every later update divides by 1 - accBeta, and a cohort amplifies the difference
 * (a rolled-back DML run ended 0.049 away from the undisturbed one). So Adam's state carries its
 * two running products as they are (`cohort/accBeta1`, `cohort/accBeta2`), and restoring sets
 * them back. A state saved without them (a checkpoint from before) gets them by the training's
 * own float32 multiplications, replayed. Momentum's and SGD's tfjs state is exact as it is.
 *
 * Adam's running products are private fields of tfjs-core's AdamOptimizer (`accBeta1`,
 * `accBeta2`), pinned by the tfjs-core version in package.json and checked here when used.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CohortError } from '../errors.js';
import type { NamedTensor } from '../io/model-files.js';

const ACC_BETA_NAMES = ['cohort/accBeta1', 'cohort/accBeta2'] as const;

interface AdamInternals {
  beta1: number;
  beta2: number;
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
}

/** Adam's private running products, or undefined for another optimizer. */
function adamInternals(optimizer: tf.Optimizer): AdamInternals | undefined {
  if (optimizer.getClassName() !== 'Adam') return undefined;
  const o = optimizer as unknown as Partial<AdamInternals>;
  if (!(o.accBeta1 instanceof tf.Variable) || !(o.accBeta2 instanceof tf.Variable) || typeof o.beta1 !== 'number' || typeof o.beta2 !== 'number') {
    throw new CohortError(
      `this tfjs-core (${tf.version_core}) keeps Adam's bias corrections elsewhere than accBeta1/accBeta2; Cohort's exact optimizer checkpoints need tfjs-core 4.22`,
      { code: 'UNSUPPORTED_VERSION' },
    );
  }
  return o as AdamInternals;
}

/** beta^(iterations + 1) as training computes it: float32 products, one per step. */
function runningPower(beta: number, iterations: number): number {
  const b = Math.fround(beta);
  let acc = b;
  for (let i = 0; i < iterations; i++) acc = Math.fround(acc * b);
  return acc;
}

/** The optimizer's state, every tensor a new one the caller disposes: tfjs's getWeights, then Adam's running products. */
export async function optimizerState(optimizer: tf.Optimizer): Promise<NamedTensor[]> {
  // getWeights returns a new iterations scalar and the live state variables: clone those.
  const weights = (await optimizer.getWeights()).map((w, i) => (i === 0 ? w : { name: w.name, tensor: w.tensor.clone() }));
  const adam = adamInternals(optimizer);
  if (!adam) return weights;
  return [...weights, { name: ACC_BETA_NAMES[0], tensor: adam.accBeta1.clone() }, { name: ACC_BETA_NAMES[1], tensor: adam.accBeta2.clone() }];
}

/**
 * Sets the optimizer's state to `state` (from optimizerState, saved and read back), exactly.
 * The optimizer's previous state is disposed; `state` stays the caller's to dispose.
 */
export async function restoreOptimizerState(optimizer: tf.Optimizer, state: NamedTensor[]): Promise<void> {
  const adam = adamInternals(optimizer);
  const saved = new Map(state.filter((s) => (ACC_BETA_NAMES as readonly string[]).includes(s.name)).map((s) => [s.name, s.tensor]));
  const previous = await optimizer.getWeights();
  await optimizer.setWeights(state.filter((s) => !saved.has(s.name)));
  tf.dispose(previous.map((p) => p.tensor)); // replaced: tfjs's setWeights does not free them
  if (!adam) return;
  const iterations = optimizer.iterations;
  const pairs = [
    [adam.accBeta1, saved.get(ACC_BETA_NAMES[0]), adam.beta1],
    [adam.accBeta2, saved.get(ACC_BETA_NAMES[1]), adam.beta2],
  ] as const;
  for (const [variable, value, beta] of pairs) {
    if (value) variable.assign(value);
    else tf.tidy(() => variable.assign(tf.scalar(runningPower(beta, iterations))));
  }
}
