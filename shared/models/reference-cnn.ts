/**
 * The reference CNN of the benchmarks and the first training run:
 * conv3x3(32)-relu-maxpool2, conv3x3(64)-relu-maxpool2, dense(128)-relu, dense(10), valid
 * padding (as PyTorch's default), input 28x28x1 (NHWC). Outputs logits.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { seededInitializers } from './initializers.js';

export interface ReferenceCnnOptions {
  inputShape?: [number, number, number];
  classes?: number;
  /** Seed for the weight initialisers, so two processes can build identical models. */
  seed?: number;
}

export function referenceCnn(options: ReferenceCnnOptions = {}): tfl.Sequential {
  const { inputShape = [28, 28, 1], classes = 10, seed } = options;
  const init = seededInitializers(seed).glorot;
  return tfl.sequential({
    name: 'reference_cnn',
    layers: [
      tfl.layers.conv2d({ inputShape, filters: 32, kernelSize: 3, activation: 'relu', kernelInitializer: init() }),
      tfl.layers.maxPooling2d({ poolSize: 2 }),
      tfl.layers.conv2d({ filters: 64, kernelSize: 3, activation: 'relu', kernelInitializer: init() }),
      tfl.layers.maxPooling2d({ poolSize: 2 }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: 128, activation: 'relu', kernelInitializer: init() }),
      tfl.layers.dense({ units: classes, kernelInitializer: init() }),
    ],
  });
}
