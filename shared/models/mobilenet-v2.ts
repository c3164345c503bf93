/**
 * MobileNetV2 (Sandler et al. 2018) as in torchvision, width 1.0, in NHWC: inverted residual
 * blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection; ReLU6), a 1280-channel last
 * convolution, dropout 0.2 and a linear classifier. The 'small' stem (for 32x32 inputs) makes
 * the first convolution and the first 24-channel block stride 1, so the last feature map is
 * 4x4 instead of 1x1.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { classifier, convBn, globalPool, type SymbolicTensor } from './conv-blocks.js';
import { seededInitializers, type SeededInitializers } from './initializers.js';
import type { Stem } from './resnet.js';

/** (expansion t, channels c, repeats n, first stride s), from the paper's Table 2. */
export const INVERTED_RESIDUALS: [number, number, number, number][] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

export interface MobileNetV2Options {
  inputShape: [number, number, number];
  classes: number;
  stem: Stem;
  dropout: number;
  seed?: number;
}

export function mobileNetV2Downsampling(stem: Stem): number {
  return stem === 'imagenet' ? 32 : 8;
}

function invertedResidual(x: SymbolicTensor, expansion: number, out: number, stride: number, name: string, init: SeededInitializers): SymbolicTensor {
  const inChannels = x.shape[3] as number;
  const hidden = inChannels * expansion;
  let y = x;
  if (expansion !== 1) y = convBn(y, { filters: hidden, kernel: 1, activation: 'relu6', name: `${name}_expand` }, init);
  y = convBn(y, { filters: hidden, kernel: 3, stride, depthwise: true, activation: 'relu6', name: `${name}_dw` }, init);
  y = convBn(y, { filters: out, kernel: 1, activation: 'linear', name: `${name}_project` }, init);
  if (stride === 1 && inChannels === out) y = tfl.layers.add({ name: `${name}_add` }).apply([x, y]) as SymbolicTensor;
  return y;
}

export function mobileNetV2(o: MobileNetV2Options): tfl.LayersModel {
  const init = seededInitializers(o.seed);
  const input = tfl.input({ shape: o.inputShape, name: 'image' });
  const small = o.stem === 'small';
  let x = convBn(input, { filters: 32, kernel: 3, stride: small ? 1 : 2, activation: 'relu6', name: 'stem' }, init);
  INVERTED_RESIDUALS.forEach(([t, c, n, s], g) => {
    const firstStride = small && c === 24 ? 1 : s;
    for (let i = 0; i < n; i++) x = invertedResidual(x, t, c, i === 0 ? firstStride : 1, `block${g + 1}_${i + 1}`, init);
  });
  x = convBn(x, { filters: 1280, kernel: 1, activation: 'relu6', name: 'head' }, init);
  const logits = classifier(globalPool(x, 'pool'), o.classes, init, 'fc', o.dropout);
  return tfl.model({ inputs: input, outputs: logits, name: 'mobilenet_v2' });
}
