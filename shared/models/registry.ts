/**
 * The model zoo's one entry point: a network from a name and options (the `model` section of a
 * run config), with defaults filled in and bad options rejected with a message naming them.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { CohortError } from '../errors.js';
import { mlp } from './mlp.js';
import { mobileNetV2, mobileNetV2Downsampling } from './mobilenet-v2.js';
import { multiExitResNet, RESNET_EXITS } from './multi-exit-resnet.js';
import { referenceCnn } from './reference-cnn.js';
import { resnet, resnetDownsampling, type ResNetDepth, type Stem } from './resnet.js';
import { CNN_STUDENT, CNN_TEACHER, smallCnn } from './small-cnn.js';
import { isTorchvisionModel, loadTorchvisionWeights, TORCHVISION_MODELS } from './torchvision-weights.js';

interface ZooEntry {
  /** 'grey28': Fashion-MNIST-sized inputs; 'imagenet': RGB ResNet/MobileNet family. */
  family: 'grey28' | 'imagenet';
  describe: string;
  /** Default dropout (before the classifier, or on hidden layers for MLPs). */
  dropout: number;
  /** Smallest input side the network accepts for a given stem. */
  minSide: (stem: Stem) => number;
  exits: number;
  /** Its weights fix its input size (a dense layer on the flattened features): saved weights load only at the size they were trained at. */
  fixedInputSize: boolean;
  build: (c: ResolvedModelConfig) => tfl.LayersModel;
}

const resnetEntry = (depth: ResNetDepth, multiExit: boolean): ZooEntry => ({
  family: 'imagenet',
  describe: multiExit ? `ResNet-${depth} with an exit after every stage (BYOT)` : `ResNet-${depth} (torchvision)`,
  dropout: 0,
  minSide: resnetDownsampling,
  exits: multiExit ? RESNET_EXITS : 1,
  fixedInputSize: false,
  build: (c) => (multiExit ? multiExitResNet : resnet)({ depth, inputShape: c.inputShape, classes: c.classes, stem: c.stem, seed: c.seed }),
});

const ZOO = {
  'reference-cnn': {
    family: 'grey28',
    describe: 'the benchmark CNN: conv(32)-pool-conv(64)-pool-dense(128), valid padding',
    dropout: 0,
    minSide: () => 10,
    exits: 1,
    fixedInputSize: true,
    build: (c) => referenceCnn({ inputShape: c.inputShape, classes: c.classes, seed: c.seed }),
  },
  'cnn-teacher': {
    family: 'grey28',
    describe: 'small CNN teacher: conv(32)-conv(64)-conv(128), each + pool, dense(256), dropout',
    dropout: CNN_TEACHER.dropout,
    minSide: () => 8,
    exits: 1,
    fixedInputSize: true,
    build: (c) => smallCnn({ ...CNN_TEACHER, inputShape: c.inputShape, classes: c.classes, dropout: c.dropout, pooling: c.pooling, seed: c.seed, name: 'cnn_teacher' }),
  },
  'cnn-student': {
    family: 'grey28',
    describe: 'small CNN student: conv(16)-conv(32), each + pool, dense(64)',
    dropout: CNN_STUDENT.dropout,
    minSide: () => 4,
    exits: 1,
    fixedInputSize: true,
    build: (c) => smallCnn({ ...CNN_STUDENT, inputShape: c.inputShape, classes: c.classes, dropout: c.dropout, pooling: c.pooling, seed: c.seed, name: 'cnn_student' }),
  },
  'mlp-teacher': {
    family: 'grey28',
    describe: "Hinton's teacher MLP: 1200-1200, dropout 0.2 on the input and 0.5 on hidden layers",
    dropout: 0.5,
    minSide: () => 1,
    exits: 1,
    fixedInputSize: true,
    build: (c) =>
      mlp({ inputShape: c.inputShape, classes: c.classes, hidden: 1200, inputDropout: c.dropout > 0 ? 0.2 : 0, hiddenDropout: c.dropout, seed: c.seed, name: 'mlp_teacher' }),
  },
  'mlp-student': {
    family: 'grey28',
    describe: "Hinton's student MLP: 800-800, no dropout",
    dropout: 0,
    minSide: () => 1,
    exits: 1,
    fixedInputSize: true,
    build: (c) => mlp({ inputShape: c.inputShape, classes: c.classes, hidden: 800, inputDropout: 0, hiddenDropout: c.dropout, seed: c.seed, name: 'mlp_student' }),
  },
  resnet18: resnetEntry(18, false),
  resnet34: resnetEntry(34, false),
  resnet50: resnetEntry(50, false),
  mobilenetv2: {
    family: 'imagenet',
    describe: 'MobileNetV2 (torchvision, width 1.0)',
    dropout: 0.2,
    minSide: mobileNetV2Downsampling,
    exits: 1,
    fixedInputSize: false,
    build: (c) => mobileNetV2({ inputShape: c.inputShape, classes: c.classes, stem: c.stem, dropout: c.dropout, seed: c.seed }),
  },
  'multi-exit-resnet18': resnetEntry(18, true),
  'multi-exit-resnet34': resnetEntry(34, true),
  'multi-exit-resnet50': resnetEntry(50, true),
} satisfies Record<string, ZooEntry>;

export type ModelName = keyof typeof ZOO;
export const MODEL_NAMES = Object.keys(ZOO) as ModelName[];

/** A model as a run config names it. Omitted fields take the defaults of the model's family. */
export interface ModelConfig {
  name: ModelName;
  /** Number of classes (default 10 for 28x28 models, 1000 for the ImageNet family). */
  classes?: number;
  /** [height, width, channels] (default [28, 28, 1]; [224, 224, 3], or [32, 32, 3] with stem 'small'). */
  inputShape?: [number, number, number];
  /** ImageNet family only: 'imagenet' (224 inputs) or 'small' (32x32); default by input size (>= 128: imagenet). */
  stem?: Stem;
  /** Overrides the model's dropout rate (0 turns it off). */
  dropout?: number;
  /**
   * cnn-teacher and cnn-student: the max-pools' padding. 'valid' (default) floors odd sides
   * (a 14x14 student's 7x7 map pools to 3x3, losing its last row and column); 'same' keeps them
   * (7 -> 4), so a low-resolution student keeps all of its features.
   */
  pooling?: 'valid' | 'same';
  /** Seed of the weight initialisers: equal seeds give bit-identical weights. */
  seed?: number;
  /** torchvision weights (a state dict saved as safetensors) loaded after building: resnet18/34/50 and mobilenetv2, 'imagenet' stem. */
  weights?: string;
}

export type ResolvedModelConfig = Required<Omit<ModelConfig, 'seed' | 'weights'>> & { seed?: number; weights?: string };

/** A built network and how to read its outputs. */
export interface CohortModel {
  model: tfl.LayersModel;
  config: ResolvedModelConfig;
  /** Number of exits: 1, or 4 for a multi-exit network (outputs: E logits, then E features). */
  exits: number;
}

function fail(message: string): never {
  throw new CohortError(`model: ${message}`, { code: 'MODEL_INVALID' });
}

function isPositiveInteger(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x > 0;
}

/** Fills in defaults and checks every option; throws a CohortError naming the bad one. */
export function resolveModelConfig(config: ModelConfig): ResolvedModelConfig {
  const entry: ZooEntry | undefined = (ZOO as Record<string, ZooEntry>)[config?.name];
  if (!entry) fail(`unknown model '${String(config?.name)}'; known models: ${MODEL_NAMES.join(', ')}`);
  const grey = entry.family === 'grey28';
  if (grey && config.stem !== undefined) fail(`'stem' applies only to ResNet and MobileNetV2 models, not '${config.name}'`);
  if (config.stem !== undefined && config.stem !== 'imagenet' && config.stem !== 'small') {
    fail(`stem must be 'imagenet' or 'small', got '${String(config.stem)}'`);
  }
  const inputShape = config.inputShape ?? (grey ? [28, 28, 1] : config.stem === 'small' ? [32, 32, 3] : [224, 224, 3]);
  if (!Array.isArray(inputShape) || inputShape.length !== 3 || !inputShape.every(isPositiveInteger)) {
    fail(`inputShape must be [height, width, channels] of positive integers, got ${JSON.stringify(config.inputShape)}`);
  }
  if (config.weights !== undefined) {
    if (typeof config.weights !== 'string' || config.weights.length === 0) fail(`weights must be the path of a safetensors file, got ${JSON.stringify(config.weights)}`);
    if (!isTorchvisionModel(config.name)) fail(`weights (torchvision's) load into ${TORCHVISION_MODELS.join(', ')} only, not '${config.name}'`);
    if (config.stem === 'small') fail(`weights (torchvision's) need the 'imagenet' stem, got stem 'small'`);
  }
  const stem: Stem = config.stem ?? (config.weights !== undefined || Math.min(inputShape[0], inputShape[1]) >= 128 ? 'imagenet' : 'small');
  const minSide = entry.minSide(stem);
  if (Math.min(inputShape[0], inputShape[1]) < minSide) {
    fail(`'${config.name}'${grey ? '' : ` with the '${stem}' stem`} needs inputs of at least ${minSide}x${minSide}, got ${inputShape[0]}x${inputShape[1]}`);
  }
  const classes = config.classes ?? (grey ? 10 : 1000);
  if (!Number.isInteger(classes) || classes < 2) fail(`classes must be an integer >= 2, got ${String(config.classes)}`);
  const dropout = config.dropout ?? entry.dropout;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) fail(`dropout must be in [0, 1), got ${String(config.dropout)}`);
  if (config.seed !== undefined && !Number.isInteger(config.seed)) fail(`seed must be an integer, got ${String(config.seed)}`);
  const pooling = config.pooling ?? 'valid';
  if (pooling !== 'valid' && pooling !== 'same') fail(`pooling must be 'valid' or 'same', got '${String(config.pooling)}'`);
  if (config.pooling !== undefined && config.name !== 'cnn-teacher' && config.name !== 'cnn-student')
    fail(`'pooling' applies only to cnn-teacher and cnn-student, not '${config.name}'`);
  return {
    name: config.name,
    classes,
    inputShape: inputShape as [number, number, number],
    stem,
    dropout,
    pooling,
    seed: config.seed,
    ...(config.weights === undefined ? {} : { weights: config.weights }),
  };
}

/** Builds the network a config names (weights freshly initialised from its seed, or torchvision's from `weights`). */
export function buildModel(config: ModelConfig): CohortModel {
  const resolved = resolveModelConfig(config);
  const entry: ZooEntry = ZOO[resolved.name];
  const model = entry.build(resolved);
  if (resolved.weights !== undefined) loadTorchvisionWeights(model, resolved.weights, resolved.name);
  return { model, config: resolved, exits: entry.exits };
}

/** One exit of a multi-exit network as a model of its own (1-based; default the deepest): the
 * layers of the other exits are not part of it, so inference pays only for this exit. */
export function exitModel(built: CohortModel, exit = built.exits): tfl.LayersModel {
  if (!Number.isInteger(exit) || exit < 1 || exit > built.exits) {
    fail(`exit must be an integer from 1 to ${built.exits} for '${built.config.name}', got ${String(exit)}`);
  }
  if (built.exits === 1) return built.model;
  const { model } = built;
  return tfl.model({ inputs: model.inputs, outputs: model.outputs[exit - 1], name: `${model.name}_exit${exit}` });
}

/** Trainable parameters (what PyTorch's parameters() counts; batch-norm running statistics are not). */
export function trainableParameterCount(model: tfl.LayersModel): number {
  return model.trainableWeights.reduce((n, w) => n + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
}

/** Whether the model's saved weights fix its input size (see ZooEntry.fixedInputSize). */
export function fixesInputSize(name: ModelName): boolean {
  return ZOO[name].fixedInputSize;
}

/** One line per model, for `--help` and error messages. */
export function describeModels(): string[] {
  return MODEL_NAMES.map((name) => `${name}: ${(ZOO as Record<string, ZooEntry>)[name].describe}`);
}
