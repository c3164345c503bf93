/**
 * ResNet-18/34/50 (He et al. 2016) as in torchvision (v1.5: a bottleneck block strides in its
 * 3x3 convolution), in NHWC. Two stems: 'imagenet' (conv7x7/2 + maxpool3x3/2, for 224x224) and
 * 'small' (conv3x3/1, no pooling, for 32x32 inputs, as CIFAR ResNets and BYOT use).
 * `resnetTrunk` returns each stage's output so the multi-exit (BYOT) network can branch off.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { classifier, convBn, globalPool, type SymbolicTensor } from './conv-blocks.js';
import { seededInitializers, type SeededInitializers } from './initializers.js';

export type ResNetDepth = 18 | 34 | 50;
export type Stem = 'imagenet' | 'small';

interface Architecture {
  block: 'basic' | 'bottleneck';
  blocks: [number, number, number, number];
}

export const RESNET_ARCHITECTURES: Record<ResNetDepth, Architecture> = {
  18: { block: 'basic', blocks: [2, 2, 2, 2] },
  34: { block: 'basic', blocks: [3, 4, 6, 3] },
  50: { block: 'bottleneck', blocks: [3, 4, 6, 3] },
};

const STAGE_WIDTHS = [64, 128, 256, 512];

/** Output channels of stage s (0-based). */
export function stageChannels(depth: ResNetDepth, stage: number): number {
  return STAGE_WIDTHS[stage] * (RESNET_ARCHITECTURES[depth].block === 'bottleneck' ? 4 : 1);
}

/** How much the network shrinks its input before global pooling. */
export function resnetDownsampling(stem: Stem): number {
  return stem === 'imagenet' ? 32 : 8;
}

export interface ResNetOptions {
  depth: ResNetDepth;
  inputShape: [number, number, number];
  classes: number;
  stem: Stem;
  seed?: number;
}

function block(x: SymbolicTensor, kind: Architecture['block'], width: number, stride: number, name: string, init: SeededInitializers): SymbolicTensor {
  const inChannels = x.shape[3] as number;
  const outChannels = kind === 'bottleneck' ? width * 4 : width;
  let y: SymbolicTensor;
  if (kind === 'basic') {
    y = convBn(x, { filters: width, kernel: 3, stride, name: `${name}_1` }, init);
    y = convBn(y, { filters: width, kernel: 3, activation: 'linear', name: `${name}_2` }, init);
  } else {
    y = convBn(x, { filters: width, kernel: 1, name: `${name}_1` }, init);
    y = convBn(y, { filters: width, kernel: 3, stride, name: `${name}_2` }, init);
    y = convBn(y, { filters: outChannels, kernel: 1, activation: 'linear', name: `${name}_3` }, init);
  }
  const shortcut = stride !== 1 || inChannels !== outChannels ? convBn(x, { filters: outChannels, kernel: 1, stride, activation: 'linear', name: `${name}_down` }, init) : x;
  const sum = tfl.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as SymbolicTensor;
  return tfl.layers.activation({ activation: 'relu', name: `${name}_out` }).apply(sum) as SymbolicTensor;
}

/** The input and the output of each of the four stages. */
export function resnetTrunk(o: Omit<ResNetOptions, 'classes'>, init: SeededInitializers): { input: SymbolicTensor; stages: SymbolicTensor[] } {
  const arch = RESNET_ARCHITECTURES[o.depth];
  const input = tfl.input({ shape: o.inputShape, name: 'image' });
  let x: SymbolicTensor;
  if (o.stem === 'imagenet') {
    x = convBn(input, { filters: 64, kernel: 7, stride: 2, name: 'stem' }, init);
    x = tfl.layers.zeroPadding2d({ padding: 1, name: 'stem_pool_pad' }).apply(x) as SymbolicTensor;
    x = tfl.layers.maxPooling2d({ poolSize: 3, strides: 2, name: 'stem_pool' }).apply(x) as SymbolicTensor;
  } else {
    x = convBn(input, { filters: 64, kernel: 3, name: 'stem' }, init);
  }
  const stages: SymbolicTensor[] = [];
  arch.blocks.forEach((count, s) => {
    for (let b = 0; b < count; b++) {
      x = block(x, arch.block, STAGE_WIDTHS[s], b === 0 && s > 0 ? 2 : 1, `stage${s + 1}_block${b + 1}`, init);
    }
    stages.push(x);
  });
  return { input, stages };
}

export function resnet(o: ResNetOptions): tfl.LayersModel {
  const init = seededInitializers(o.seed);
  const { input, stages } = resnetTrunk(o, init);
  const logits = classifier(globalPool(stages[3], 'pool'), o.classes, init, 'fc');
  return tfl.model({ inputs: input, outputs: logits, name: `resnet${o.depth}` });
}
