/**
 * Dropout whose masks are a function of (layer seed, training step): the same in every process
 * and after a restore from a checkpoint, where the step is the whole random state. tfjs's own
 * Dropout layer draws an unseeded mask at every call (or, given a seed, the same mask at every
 * call), so a run with dropout could not be reproduced bit for bit after a crash. The worker
 * names the step before each training step (setDropoutStep). The layer serialises as a plain
 * Keras/tfjs `Dropout`, so saved models load in tfjs without this class (dropout is the
 * identity at inference).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

let step = 0;

/** The training step whose masks the next forward passes draw (0 until set). */
export function setDropoutStep(trainingStep: number): void {
  step = trainingStep;
}

/** Mixes a layer seed and a step into one 32-bit seed (splitmix-style). */
function maskSeed(seed: number, at: number): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(at + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  return (z ^ (z >>> 15)) >>> 0;
}

export interface SeededDropoutArgs {
  rate: number;
  /** The layer's own seed (unseeded models draw one). */
  seed?: number;
  name?: string;
}

export class SeededDropout extends tfl.layers.Layer {
  /** Saved as a standard Dropout layer. */
  static className = 'Dropout';
  readonly rate: number;
  readonly seed: number;

  constructor(args: SeededDropoutArgs) {
    super({ name: args.name });
    if (!(args.rate >= 0 && args.rate < 1)) throw new RangeError(`dropout rate must be in [0, 1), got ${args.rate}`);
    this.rate = args.rate;
    this.seed = args.seed ?? Math.floor(Math.random() * 2 ** 32);
    this.supportsMasking = true;
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape | tfl.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    if (!kwargs.training || this.rate === 0) return x;
    return tf.tidy(() => {
      const keep = tf.greaterEqual(tf.randomUniform(x.shape, 0, 1, 'float32', maskSeed(this.seed, step)), this.rate);
      return tf.mul(x, tf.div(tf.cast(keep, x.dtype), 1 - this.rate));
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate };
  }
}

export function seededDropout(args: SeededDropoutArgs): SeededDropout {
  return new SeededDropout(args);
}
