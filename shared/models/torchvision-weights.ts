/**
 * torchvision weights into the zoo: a state dict of torchvision's ResNet-18/34/50 or
 * MobileNetV2, saved as safetensors, loaded into the Cohort network of the same architecture.
 * Every parameter and batch-norm buffer is mapped by name (`layer1.0.conv1.weight` is
 * `stage1_block1_1_conv`'s kernel) and converted to tfjs' layout: convolutions OIHW -> HWIO,
 * depthwise convolutions [C, 1, kh, kw] -> [kh, kw, C, 1], linear [out, in] -> [in, out]. The
 * networks end in global average pooling, so NCHW-trained weights read NHWC feature maps
 * unchanged; the zoo pads symmetrically as PyTorch does, and its batch norms have torchvision's
 * epsilon (1e-5) and momentum (0.1 there, 0.9 in Keras' convention). A missing or unexpected
 * tensor or a wrong shape is a CohortError naming the tensor.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { CohortError } from '../errors.js';
import { readSafetensors, type SafeTensor } from '../io/safetensors.js';
import { INVERTED_RESIDUALS } from './mobilenet-v2.js';

/** The zoo models that have a torchvision counterpart (with the 'imagenet' stem). */
export const TORCHVISION_MODELS = ['resnet18', 'resnet34', 'resnet50', 'mobilenetv2'] as const;

type Layout = 'conv' | 'depthwise' | 'linear' | 'vector';

/** One tfjs weight and the torchvision tensor it comes from. */
interface Mapped {
  variable: tfl.LayerVariable;
  key: string;
  layout: Layout;
}

const BN_SUFFIXES = ['weight', 'bias', 'running_mean', 'running_var'];

/** torchvision's module path of a zoo convolution/batch-norm pair named `prefix` (without `_conv`/`_bn`). */
function resnetModule(prefix: string): { conv: string; bn: string } | undefined {
  if (prefix === 'stem') return { conv: 'conv1', bn: 'bn1' };
  const m = /^stage(\d)_block(\d+)_(\d|down)$/.exec(prefix);
  if (!m) return undefined;
  const block = `layer${m[1]}.${Number(m[2]) - 1}`;
  return m[3] === 'down' ? { conv: `${block}.downsample.0`, bn: `${block}.downsample.1` } : { conv: `${block}.conv${m[3]}`, bn: `${block}.bn${m[3]}` };
}

/** features.N of torchvision's MobileNetV2 for zoo block `block{g}_{i}` (1-based). */
function mobilenetFeature(group: number, repeat: number): number {
  return 1 + INVERTED_RESIDUALS.slice(0, group - 1).reduce((n, [, , count]) => n + count, 0) + (repeat - 1);
}

function mobilenetModule(prefix: string): { conv: string; bn: string } | undefined {
  if (prefix === 'stem') return { conv: 'features.0.0', bn: 'features.0.1' };
  if (prefix === 'head')
    return { conv: `features.${mobilenetFeature(INVERTED_RESIDUALS.length + 1, 1)}.0`, bn: `features.${mobilenetFeature(INVERTED_RESIDUALS.length + 1, 1)}.1` };
  const m = /^block(\d)_(\d+)_(expand|dw|project)$/.exec(prefix);
  if (!m) return undefined;
  const group = Number(m[1]);
  const base = `features.${mobilenetFeature(group, Number(m[2]))}.conv`;
  // Without expansion (the first group) the block is [dw conv+bn, project conv, project bn].
  const expands = INVERTED_RESIDUALS[group - 1][0] !== 1;
  const position = { expand: 0, dw: expands ? 1 : 0, project: expands ? 2 : 1 }[m[3] as 'expand' | 'dw' | 'project'];
  return m[3] === 'project' ? { conv: `${base}.${position}`, bn: `${base}.${position + 1}` } : { conv: `${base}.${position}.0`, bn: `${base}.${position}.1` };
}

/** Every weight of `model` (a zoo network `name`) with its torchvision key; throws for a layer with no counterpart. */
export function torchvisionMapping(model: tfl.LayersModel, name: (typeof TORCHVISION_MODELS)[number]): Mapped[] {
  const moduleOf = name === 'mobilenetv2' ? mobilenetModule : resnetModule;
  const classifier = name === 'mobilenetv2' ? 'classifier.1' : 'fc';
  const mapped: Mapped[] = [];
  for (const layer of model.layers) {
    const weights = layer.weights as tfl.LayerVariable[];
    if (weights.length === 0) continue;
    const unmapped = (): never => {
      throw new CohortError(`torchvision weights: layer '${layer.name}' of ${name} has no torchvision counterpart`, { code: 'MODEL_INVALID' });
    };
    if (layer.name === 'fc') {
      mapped.push({ variable: weights[0], key: `${classifier}.weight`, layout: 'linear' }, { variable: weights[1], key: `${classifier}.bias`, layout: 'vector' });
      continue;
    }
    const m = /^(.*)_(conv|dwconv|bn)$/.exec(layer.name) ?? unmapped();
    const module = moduleOf(m[1]) ?? unmapped();
    if (m[2] === 'bn') weights.forEach((variable, i) => mapped.push({ variable, key: `${module.bn}.${BN_SUFFIXES[i]}`, layout: 'vector' }));
    else mapped.push({ variable: weights[0], key: `${module.conv}.weight`, layout: m[2] === 'dwconv' ? 'depthwise' : 'conv' });
  }
  return mapped;
}

/** The torchvision shape of a tfjs weight of shape `shape`. */
function torchShape(shape: number[], layout: Layout): number[] {
  switch (layout) {
    case 'conv':
      return [shape[3], shape[2], shape[0], shape[1]];
    case 'depthwise':
      return [shape[2] * shape[3], 1, shape[0], shape[1]];
    case 'linear':
      return [shape[1], shape[0]];
    case 'vector':
      return shape;
  }
}

/** The tensor in tfjs' layout. */
function toTfjs(t: SafeTensor, layout: Layout): tf.Tensor {
  const x = tf.tensor(t.data, t.shape, 'float32');
  if (layout === 'vector') return x;
  const perm = layout === 'conv' ? [2, 3, 1, 0] : layout === 'depthwise' ? [2, 3, 0, 1] : [1, 0];
  const y = tf.transpose(x, perm);
  x.dispose();
  return y;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/**
 * Checks `tensors` (a torchvision state dict) against `model` and writes them into it.
 * `classes` names the classifier's expected width in the error when only that differs.
 */
export function applyTorchvisionWeights(model: tfl.LayersModel, name: (typeof TORCHVISION_MODELS)[number], tensors: Map<string, SafeTensor>, what: string): void {
  const mapped = torchvisionMapping(model, name);
  const expected = new Set(mapped.map((m) => m.key));
  for (const key of tensors.keys()) {
    const buffer = /^(.*)\.num_batches_tracked$/.exec(key);
    if (buffer && expected.has(`${buffer[1]}.running_mean`)) continue; // a batch-norm counter: not used in eval or by Keras' momentum
    if (!expected.has(key)) throw new CohortError(`${what}: unexpected tensor '${key}' for ${name} (weights of another architecture?)`, { code: 'WEIGHTS_MISMATCH' });
  }
  const classifier = name === 'mobilenetv2' ? 'classifier.1' : 'fc';
  for (const { variable, key, layout } of mapped) {
    const t = tensors.get(key);
    if (!t) throw new CohortError(`${what}: missing tensor '${key}' for ${name}`, { code: 'WEIGHTS_MISMATCH' });
    if (!FLOAT_DTYPES.has(t.dtype)) throw new CohortError(`${what}: tensor '${key}' is ${t.dtype}, expected a floating-point tensor`, { code: 'WEIGHTS_MISMATCH' });
    const want = torchShape(variable.shape as number[], layout);
    if (t.shape.join() !== want.join()) {
      const head = key.startsWith(`${classifier}.`) ? `; the model has ${model.outputs[0].shape[1]} classes (model.classes)` : '';
      throw new CohortError(`${what}: tensor '${key}' has shape [${t.shape.join(', ')}], ${name} expects [${want.join(', ')}]${head}`, { code: 'WEIGHTS_MISMATCH' });
    }
  }
  for (const { variable, key, layout } of mapped) {
    const value = toTfjs(tensors.get(key) as SafeTensor, layout);
    variable.write(value);
    value.dispose();
  }
}

/** Whether zoo model `name` can take torchvision weights. */
export function isTorchvisionModel(name: string): name is (typeof TORCHVISION_MODELS)[number] {
  return (TORCHVISION_MODELS as readonly string[]).includes(name);
}

/**
 * Loads torchvision weights from the safetensors file `path` into `model`, a zoo ResNet-18/34/50
 * or MobileNetV2 (told apart by its name, or given as `name`).
 */
export function loadTorchvisionWeights(model: tfl.LayersModel, path: string, name?: string): void {
  const zooName = name ?? { resnet18: 'resnet18', resnet34: 'resnet34', resnet50: 'resnet50', mobilenet_v2: 'mobilenetv2' }[model.name];
  if (!zooName || !isTorchvisionModel(zooName)) {
    throw new CohortError(`torchvision weights load into ${TORCHVISION_MODELS.join(', ')} only, not '${name ?? model.name}'`, { code: 'MODEL_INVALID' });
  }
  applyTorchvisionWeights(model, zooName, readSafetensors(path), path);
}
