/**
 * Functional-API building blocks shared by the ImageNet-family models: convolution +
 * batch-norm (+ activation) with PyTorch's symmetric padding (k // 2 on every side, so output
 * sizes and receptive fields match torchvision, unlike tfjs' 'same' padding, which pads more on
 * the bottom/right at stride 2), and the classifier head.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import type { SeededInitializers } from './initializers.js';
import { seededDropout } from './seeded-dropout.js';

export type SymbolicTensor = tfl.SymbolicTensor;

export interface ConvBnOptions {
  filters: number;
  kernel: number;
  stride?: number;
  /** Depthwise (one filter per channel; `filters` must equal the input channels). */
  depthwise?: boolean;
  activation?: 'relu' | 'relu6' | 'linear';
  name: string;
}

/** PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here; eps 1e-5). */
export function batchNorm(name: string): tfl.layers.Layer {
  return tfl.layers.batchNormalization({ axis: -1, momentum: 0.9, epsilon: 1e-5, name });
}

export function convBn(x: SymbolicTensor, o: ConvBnOptions, init: SeededInitializers): SymbolicTensor {
  const stride = o.stride ?? 1;
  const pad = Math.floor(o.kernel / 2);
  let y = x;
  if (pad > 0) y = tfl.layers.zeroPadding2d({ padding: pad, name: `${o.name}_pad` }).apply(y) as SymbolicTensor;
  const conv = o.depthwise
    ? tfl.layers.depthwiseConv2d({
        kernelSize: o.kernel,
        strides: stride,
        useBias: false,
        depthwiseInitializer: init.heFanOut(),
        name: `${o.name}_dwconv`,
      })
    : tfl.layers.conv2d({
        filters: o.filters,
        kernelSize: o.kernel,
        strides: stride,
        useBias: false,
        kernelInitializer: init.heFanOut(),
        name: `${o.name}_conv`,
      });
  y = conv.apply(y) as SymbolicTensor;
  y = batchNorm(`${o.name}_bn`).apply(y) as SymbolicTensor;
  const activation = o.activation ?? 'relu';
  if (activation !== 'linear') y = tfl.layers.activation({ activation, name: `${o.name}_${activation}` }).apply(y) as SymbolicTensor;
  return y;
}

/** Global average pooling: the features a classifier (or a BYOT hint) reads. */
export function globalPool(x: SymbolicTensor, name: string): SymbolicTensor {
  return tfl.layers.globalAveragePooling2d({ name }).apply(x) as SymbolicTensor;
}

export function classifier(features: SymbolicTensor, classes: number, init: SeededInitializers, name: string, dropout = 0): SymbolicTensor {
  let y = features;
  if (dropout > 0) y = seededDropout({ rate: dropout, seed: init.dropoutSeed(), name: `${name}_dropout` }).apply(y) as SymbolicTensor;
  return tfl.layers.dense({ units: classes, kernelInitializer: init.glorot(), name }).apply(y) as SymbolicTensor;
}
