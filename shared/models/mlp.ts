/**
 * Hinton et al. (2015)'s MNIST networks: a multilayer perceptron with two hidden ReLU layers.
 * The teacher has 1200 units per layer and dropout (20% on the input, 50% on the hidden
 * layers); the student has 800 units and no dropout. Outputs logits.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { seededInitializers } from './initializers.js';
import { seededDropout } from './seeded-dropout.js';

export interface MlpOptions {
  inputShape: number[];
  classes: number;
  hidden: number;
  /** Dropout on the flattened input. */
  inputDropout: number;
  /** Dropout after each hidden layer. */
  hiddenDropout: number;
  seed?: number;
  name: string;
}

export function mlp(o: MlpOptions): tfl.Sequential {
  const seeds = seededInitializers(o.seed);
  const init = seeds.glorot;
  const layers: tfl.layers.Layer[] = [tfl.layers.flatten({ inputShape: o.inputShape })];
  if (o.inputDropout > 0) layers.push(seededDropout({ rate: o.inputDropout, seed: seeds.dropoutSeed() }));
  for (let i = 0; i < 2; i++) {
    layers.push(tfl.layers.dense({ units: o.hidden, activation: 'relu', kernelInitializer: init() }));
    if (o.hiddenDropout > 0) layers.push(seededDropout({ rate: o.hiddenDropout, seed: seeds.dropoutSeed() }));
  }
  layers.push(tfl.layers.dense({ units: o.classes, kernelInitializer: init() }));
  return tfl.sequential({ name: o.name, layers });
}
