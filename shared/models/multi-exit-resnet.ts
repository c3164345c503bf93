/**
 * The multi-exit ResNet of "Be Your Own Teacher" (BYOT, Zhang et al. 2019): a ResNet whose
 * every stage feeds an exit. A shallow exit is a bottleneck (1x1 conv to the deepest stage's
 * channel count + batch-norm + ReLU; the paper uses a stack of strided separable convolutions,
 * we keep the cheapest form that gives every exit features of the same size) followed by global
 * pooling and a classifier; the deepest exit is the ResNet's own head. So the deepest exit is
 * exactly the plain ResNet, and `exitModel` removes the others for inference.
 *
 * Model outputs, in order: logits of exits 1..E (shallow to deepest), then their pooled
 * features 1..E (the inputs of byotLoss' hint term).
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { classifier, convBn, globalPool, type SymbolicTensor } from './conv-blocks.js';
import { seededInitializers } from './initializers.js';
import { resnetTrunk, stageChannels, type ResNetOptions } from './resnet.js';

export const RESNET_EXITS = 4;

export function multiExitResNet(o: ResNetOptions): tfl.LayersModel {
  const init = seededInitializers(o.seed);
  const { input, stages } = resnetTrunk(o, init);
  const width = stageChannels(o.depth, 3);
  const logits: SymbolicTensor[] = [];
  const features: SymbolicTensor[] = [];
  stages.forEach((stage, s) => {
    const deepest = s === stages.length - 1;
    const mapped = deepest ? stage : convBn(stage, { filters: width, kernel: 1, name: `exit${s + 1}_bottleneck` }, init);
    const pooled = globalPool(mapped, deepest ? 'pool' : `exit${s + 1}_pool`);
    features.push(pooled);
    logits.push(classifier(pooled, o.classes, init, deepest ? 'fc' : `exit${s + 1}_fc`));
  });
  return tfl.model({ inputs: input, outputs: [...logits, ...features], name: `multi_exit_resnet${o.depth}` });
}
