/**
 * The model zoo: parameter counts against the published torchvision counts (ImageNet family)
 * or counts computed by hand (MLPs, small CNNs, BYOT exits), output shapes from real forward
 * passes, seeded initialisation, removable exits, clear config errors, and one SGD step on
 * the wasm backend that lowers the loss of a fixed batch for every model.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { buildModel, exitModel, MODEL_NAMES, trainableParameterCount, type ModelConfig, type ModelName } from '../shared/models/index.js';
import { byotLoss, crossEntropy } from '../shared/losses/index.js';
import { CohortError } from '../shared/errors.js';
import { randomValues, seeded, useWasm } from './helpers/backends.js';

/** conv or dense layer parameters: weights + bias. */
const layer = (fanIn: number, units: number, bias = true) => fanIn * units + (bias ? units : 0);

const params = (config: ModelConfig) => {
  const built = buildModel(config);
  const n = trainableParameterCount(built.model);
  built.model.dispose();
  return n;
};

async function forward(model: { predict: (x: tf.Tensor) => tf.Tensor | tf.Tensor[] }, shape: number[]): Promise<tf.Tensor[]> {
  const x = tf.tensor(
    randomValues(
      shape.reduce((a, b) => a * b),
      seeded(7).random,
    ),
    shape,
  );
  const out = model.predict(x);
  x.dispose();
  return Array.isArray(out) ? out : [out];
}

before(useWasm);

describe('published parameter counts at 1000 classes (torchvision)', () => {
  const published: [ModelName, number][] = [
    ['resnet18', 11_689_512],
    ['resnet34', 21_797_672],
    ['resnet50', 25_557_032],
    ['mobilenetv2', 3_504_872],
  ];
  for (const [name, count] of published) {
    test(`${name}: ${count.toLocaleString('en')} trainable parameters, both stems`, () => {
      assert.equal(params({ name, stem: 'imagenet' }), count);
      // The small stem changes strides and ResNet's first kernel (7x7x3x64 -> 3x3x3x64).
      const smallStemDelta = name.startsWith('resnet') ? 3 * 64 * (9 - 49) : 0;
      assert.equal(params({ name, stem: 'small' }), count + smallStemDelta);
    });
  }
});

describe('hand-counted parameters', () => {
  test("Hinton's MLPs: 784-1200-1200-10 and 784-800-800-10", () => {
    assert.equal(params({ name: 'mlp-teacher' }), layer(784, 1200) + layer(1200, 1200) + layer(1200, 10));
    assert.equal(params({ name: 'mlp-student' }), layer(784, 800) + layer(800, 800) + layer(800, 10));
  });
  test('small CNNs at 28x28 and at the 14x14 of a cross-quality student', () => {
    const teacher = (side: number) => {
      const pooled = Math.floor(Math.floor(Math.floor(side / 2) / 2) / 2);
      return layer(9, 32) + layer(9 * 32, 64) + layer(9 * 64, 128) + layer(pooled * pooled * 128, 256) + layer(256, 10);
    };
    const student = (side: number) => {
      const pooled = Math.floor(Math.floor(side / 2) / 2);
      return layer(9, 16) + layer(9 * 16, 32) + layer(pooled * pooled * 32, 64) + layer(64, 10);
    };
    assert.equal(params({ name: 'cnn-teacher' }), teacher(28));
    assert.equal(params({ name: 'cnn-student' }), student(28));
    assert.equal(params({ name: 'cnn-student', inputShape: [14, 14, 1] }), student(14));
    assert.equal(params({ name: 'reference-cnn' }), layer(9, 32) + layer(9 * 32, 64) + layer(5 * 5 * 64, 128) + layer(128, 10));
  });
  test('multi-exit ResNets: the plain ResNet plus, per shallow exit, a 1x1 bottleneck, its batch-norm and a classifier', () => {
    for (const [depth, channels] of [
      [18, [64, 128, 256, 512]],
      [50, [256, 512, 1024, 2048]],
    ] as const) {
      const classes = 100;
      const exits = channels.slice(0, 3).reduce((n, c) => n + layer(c, channels[3], false) + 2 * channels[3] + layer(channels[3], classes), 0);
      assert.equal(params({ name: `multi-exit-resnet${depth}`, classes, stem: 'small' }), params({ name: `resnet${depth}`, classes, stem: 'small' }) + exits);
    }
  });
});

describe('output shapes from real forward passes (wasm)', () => {
  test('ImageNet stem at 224x224: [batch, 1000]', async () => {
    for (const name of ['resnet18', 'mobilenetv2'] as const) {
      const built = buildModel({ name });
      const [out] = await forward(built.model, [1, 224, 224, 3]);
      assert.deepEqual(out.shape, [1, 1000], name);
      assert.ok((await out.data()).every(Number.isFinite));
      tf.dispose(out);
      built.model.dispose();
    }
  });
  test('every model at its default small input', async () => {
    for (const name of MODEL_NAMES) {
      const built = buildModel({ name, classes: 10, ...(built28(name) ? {} : { stem: 'small' as const }) });
      const [h, w, c] = built.config.inputShape;
      const outs = await forward(built.model, [2, h, w, c]);
      assert.equal(outs.length, built.exits === 1 ? 1 : 2 * built.exits, name);
      for (let e = 0; e < built.exits; e++) assert.deepEqual(outs[e].shape, [2, 10], name);
      tf.dispose(outs);
      built.model.dispose();
    }
  });
});

function built28(name: ModelName): boolean {
  return name.startsWith('mlp') || name.includes('cnn');
}

describe('initialisation and exits', () => {
  test('the same seed gives bit-identical weights; another seed does not', async () => {
    const weights = async (seed: number) => {
      const { model } = buildModel({ name: 'cnn-student', seed });
      const values = await Promise.all(model.getWeights().map((w) => w.data()));
      model.dispose();
      return values.flatMap((v) => Array.from(v));
    };
    const [a, b, c] = [await weights(3), await weights(3), await weights(4)];
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test('exitModel: the deepest exit alone is the plain ResNet, computes the same logits, and drops the other exits', async () => {
    const built = buildModel({ name: 'multi-exit-resnet18', classes: 10, stem: 'small', seed: 1 });
    const deepest = exitModel(built);
    const shallowest = exitModel(built, 1);
    assert.equal(trainableParameterCount(deepest), params({ name: 'resnet18', classes: 10, stem: 'small' }));
    assert.equal(trainableParameterCount(shallowest), 3 * 9 * 64 + 2 * 64 + 2 * 2 * (9 * 64 * 64 + 2 * 64) + layer(64, 512, false) + 2 * 512 + layer(512, 10));
    const full = await forward(built.model, [2, 32, 32, 3]);
    const [deep] = await forward(deepest, [2, 32, 32, 3]);
    const [shallow] = await forward(shallowest, [2, 32, 32, 3]);
    assert.deepEqual(await deep.data(), await full[3].data());
    assert.deepEqual(await shallow.data(), await full[0].data());
    assert.throws(() => exitModel(built, 5), /exit must be an integer from 1 to 4/);
    tf.dispose([...full, deep, shallow]);
    built.model.dispose();
  });
});

describe('config errors name the problem', () => {
  const cases: [string, ModelConfig, RegExp][] = [
    ['unknown name', { name: 'resnet101' as ModelName }, /unknown model 'resnet101'; known models: reference-cnn, .*resnet18/],
    ['classes', { name: 'resnet18', classes: 1 }, /classes must be an integer >= 2, got 1/],
    ['too small for the stem', { name: 'resnet50', inputShape: [16, 16, 3], stem: 'imagenet' }, /'resnet50' with the 'imagenet' stem needs inputs of at least 32x32, got 16x16/],
    ['stem on a grey model', { name: 'cnn-student', stem: 'small' }, /'stem' applies only to ResNet and MobileNetV2/],
    ['bad shape', { name: 'mlp-student', inputShape: [28, 28] as unknown as [number, number, number] }, /inputShape must be \[height, width, channels\]/],
    ['dropout', { name: 'mobilenetv2', dropout: 1 }, /dropout must be in \[0, 1\), got 1/],
  ];
  for (const [what, config, message] of cases) {
    test(what, () => {
      assert.throws(
        () => buildModel(config),
        (e: unknown) => e instanceof CohortError && message.test(e.message),
      );
    });
  }
});

describe('one small gradient step on wasm lowers the loss of a fixed batch', () => {
  // Plain SGD with a small step: descent is guaranteed when the gradients are right. (Adam's
  // sign-like first step of 1e-3 per weight, and SGD at 1e-2, overshoot the BYOT loss of the
  // deep multi-exit ResNets at batch 4, on the cpu backend too.) Dropout is turned off so that
  // the loss before and after the step sees the same network function; batch-norm runs in
  // training mode (batch statistics) both times.
  for (const name of MODEL_NAMES) {
    test(name, async () => {
      const built = buildModel({ name, classes: 10, dropout: 0, seed: 5, ...(built28(name) ? {} : { stem: 'small' as const }) });
      const [h, w, c] = built.config.inputShape;
      const batch = 4;
      const rng = seeded(11);
      const x = tf.tensor4d(randomValues(batch * h * w * c, rng.random), [batch, h, w, c]);
      const y = tf.tensor1d(
        Array.from({ length: batch }, () => rng.int(0, 9)),
        'int32',
      );
      const loss = () => {
        const outs = built.model.apply(x, { training: true }) as tf.Tensor2D | tf.Tensor2D[];
        if (!Array.isArray(outs)) return crossEntropy(outs, y);
        return byotLoss(outs.slice(0, built.exits), outs.slice(built.exits), y);
      };
      const optimizer = tf.train.sgd(1e-3);
      const before = optimizer.minimize(loss, true)!;
      const after = tf.tidy(loss);
      const [b, a] = [(await before.data())[0], (await after.data())[0]];
      assert.ok(Number.isFinite(b) && a < b, `${name}: loss ${b} -> ${a}`);
      tf.dispose([x, y, before, after]);
      optimizer.dispose();
      built.model.dispose();
    });
  }
});

test("pooling: 'same' keeps a 14x14 cnn-student's last row and column (7 -> 4, not 3); other models refuse the option", () => {
  const flat = (pooling: 'valid' | 'same') => {
    const built = buildModel({ name: 'cnn-student', inputShape: [14, 14, 1], pooling, seed: 1 });
    const shape = built.model.layers.find((l) => l.getClassName() === 'Flatten')!.outputShape as number[];
    built.model.dispose();
    return shape[1];
  };
  assert.equal(flat('valid'), 3 * 3 * 32);
  assert.equal(flat('same'), 4 * 4 * 32);
  assert.throws(() => buildModel({ name: 'resnet18', pooling: 'same' }), /'pooling' applies only to cnn-teacher and cnn-student, not 'resnet18'/);
});
