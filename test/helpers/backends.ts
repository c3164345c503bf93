/**
 * Test helpers for comparing a kernel on the wasm backend with the pure-JS cpu backend:
 * both see identical inputs (built from plain arrays) and results are read with await data().
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '../../shared/engine/backend.js';
import { mulberry32 } from '../../shared/data/sampler.js';

let ready: Promise<unknown> | undefined;

/** Loads wasm with Cohort's training kernels (once per test process). */
export function useWasm(): Promise<unknown> {
  ready ??= initBackend({ backend: 'wasm' });
  return ready;
}

/** Runs `f` on `backend` and returns its output values; tensors made inside are freed. */
export async function valuesOn(backend: 'wasm' | 'cpu', f: () => tf.Tensor): Promise<Float32Array> {
  await tf.setBackend(backend);
  const out = tf.tidy(f);
  const values = (await out.data()) as Float32Array;
  out.dispose();
  return values;
}

/** ||a - b|| / ||b|| */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** Seeded random normal values (Box-Muller), so failures reproduce. */
export function randomValues(count: number, random: () => number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const u = Math.max(random(), 1e-12);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  }
  return out;
}

export function seeded(seed: number): { random: () => number; int: (lo: number, hi: number) => number; pick: <T>(xs: T[]) => T } {
  const random = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  return { random, int, pick: (xs) => xs[int(0, xs.length - 1)] };
}
