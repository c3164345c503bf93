/**
 * Cohort's wasm convolution gradient kernels against the cpu backend on random shapes:
 * strides 1-2, same/valid padding, dilation, batch 1-64, odd sizes. Relative error < 1e-4.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { limits } from '../shared/engine/wasm-training/conv-gradients.js';
import { randomValues, relativeError, seeded, useWasm, valuesOn } from './helpers/backends.js';

const TOLERANCE = 1e-4;

interface ConvCase {
  x: [number, number, number, number];
  filter: [number, number, number, number]; // [fh, fw, inC, outC] (depthwise: [fh, fw, C, M])
  strides: [number, number];
  dilations: [number, number];
  pad: 'same' | 'valid';
}

function randomCase(rng: ReturnType<typeof seeded>, depthwise: boolean): ConvCase {
  const strided = rng.random() < 0.5;
  const strides: [number, number] = strided ? [rng.int(1, 2), rng.int(1, 2)] : [1, 1];
  const dilations: [number, number] = strided ? [1, 1] : [rng.int(1, 2), rng.int(1, 2)];
  const fh = rng.int(1, 4);
  const fw = rng.int(1, 4);
  const batch = rng.pick([1, 2, 3, 5, 8, 17, 64]);
  const small = batch > 8; // keep the cpu reference fast
  const minH = (fh - 1) * dilations[0] + 1;
  const minW = (fw - 1) * dilations[1] + 1;
  const h = rng.int(minH, minH + (small ? 6 : 12));
  const w = rng.int(minW, minW + (small ? 6 : 12));
  const inC = rng.int(1, small ? 4 : 7);
  const outC = depthwise ? rng.int(1, 3) : rng.pick([1, 3, 8, 33, rng.int(1, 16)]);
  return { x: [batch, h, w, inC], filter: [fh, fw, inC, outC], strides, dilations, pad: rng.pick(['same', 'valid']) };
}

/** The zero-inserted filter whose undilated convolution equals the dilated one. */
function dilateFilter(values: Float32Array, [fh, fw, c, k]: number[], [dh, dw]: number[]): { values: Float32Array; shape: number[] } {
  const eh = (fh - 1) * dh + 1;
  const ew = (fw - 1) * dw + 1;
  const out = new Float32Array(eh * ew * c * k);
  for (let i = 0; i < fh; i++) for (let j = 0; j < fw; j++) out.set(values.subarray((i * fw + j) * c * k, (i * fw + j + 1) * c * k), (i * dh * ew + j * dw) * c * k);
  return { values: out, shape: [eh, ew, c, k] };
}

/** Every dh-th, dw-th tap of a gradient computed for the zero-inserted filter. */
function undilateFilter(values: Float32Array, [fh, fw, c, k]: number[], [dh, dw]: number[]): Float32Array {
  const ew = (fw - 1) * dw + 1;
  const out = new Float32Array(fh * fw * c * k);
  for (let i = 0; i < fh; i++) for (let j = 0; j < fw; j++) out.set(values.subarray((i * dh * ew + j * dw) * c * k, (i * dh * ew + j * dw + 1) * c * k), (i * fw + j) * c * k);
  return out;
}

function outputShape(c: ConvCase, depthwise: boolean): number[] {
  return tf.tidy(() => {
    const x = tf.zeros(c.x) as tf.Tensor4D;
    const f = tf.zeros(c.filter) as tf.Tensor4D;
    return depthwise ? tf.depthwiseConv2d(x, f, c.strides, c.pad, 'NHWC', c.dilations).shape : tf.conv2d(x, f, c.strides, c.pad, 'NHWC', c.dilations).shape;
  });
}

function describeCase(c: ConvCase): string {
  return `x=${c.x} filter=${c.filter} strides=${c.strides} dilations=${c.dilations} pad=${c.pad}`;
}

before(async () => {
  await useWasm();
});

for (const depthwise of [false, true]) {
  const kind = depthwise ? 'DepthwiseConv2dNative' : 'Conv2D';
  describe(`${kind} gradients on wasm match cpu`, () => {
    const rng = seeded(depthwise ? 2024 : 1312);
    const cases = Array.from({ length: 24 }, () => randomCase(rng, depthwise));
    // The reference CNN's own layers, always covered.
    if (!depthwise) {
      cases.push({ x: [64, 28, 28, 1], filter: [3, 3, 1, 32], strides: [1, 1], dilations: [1, 1], pad: 'valid' });
      cases.push({ x: [16, 13, 13, 32], filter: [3, 3, 32, 64], strides: [1, 1], dilations: [1, 1], pad: 'valid' });
    }
    for (const c of cases) {
      test(describeCase(c), async () => {
        const dyShape = outputShape(c, depthwise);
        const xv = randomValues(tf.util.sizeFromShape(c.x), rng.random);
        const fv = randomValues(tf.util.sizeFromShape(c.filter), rng.random);
        const dyv = randomValues(tf.util.sizeFromShape(dyShape), rng.random);
        const dilated = c.dilations[0] > 1 || c.dilations[1] > 1;
        const names = depthwise ? ['DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput'] : ['Conv2DBackpropFilter', 'Conv2DBackpropInput'];
        const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', dilations: c.dilations };
        const filterGrad = (filterShape: number[], dil: number[]) => () =>
          tf
            .engine()
            .runKernel(names[0], { x: tf.tensor4d(xv, c.x), dy: tf.tensor(dyv, dyShape) }, { ...attrs, dilations: dil, filterShape } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const inputGrad = (filter: { values: Float32Array; shape: number[] }, dil: number[]) => () =>
          tf.engine().runKernel(names[1], { dy: tf.tensor(dyv, dyShape), filter: tf.tensor(filter.values, filter.shape) }, {
            ...attrs,
            dilations: dil,
            inputShape: c.x,
          } as unknown as tf.NamedAttrMap) as tf.Tensor;

        // cpu reference: tfjs' cpu gradient kernels ignore dilation, so a dilated case is
        // checked through the equivalent undilated convolution with a zero-inserted filter.
        const wasmFilter = await valuesOn('wasm', filterGrad(c.filter, c.dilations));
        const wasmInput = await valuesOn('wasm', inputGrad({ values: fv, shape: c.filter }, c.dilations));
        // Conv2D's gradients have a second path, for when their matrix-product form would need
        // too large an intermediate (patches or dy x filter^T): forced here by a zero limit.
        const savedLimit = limits.intermediateBytes;
        limits.intermediateBytes = 0;
        const wasmFilterByConv = await valuesOn('wasm', filterGrad(c.filter, c.dilations));
        const wasmInputByConv = await valuesOn('wasm', inputGrad({ values: fv, shape: c.filter }, c.dilations));
        limits.intermediateBytes = savedLimit;
        let cpuFilter: Float32Array;
        let cpuInput: Float32Array;
        if (dilated) {
          const big = dilateFilter(fv, c.filter, c.dilations);
          cpuFilter = undilateFilter(await valuesOn('cpu', filterGrad(big.shape, [1, 1])), c.filter, c.dilations);
          cpuInput = await valuesOn('cpu', inputGrad(big, [1, 1]));
        } else {
          cpuFilter = await valuesOn('cpu', filterGrad(c.filter, c.dilations));
          cpuInput = await valuesOn('cpu', inputGrad({ values: fv, shape: c.filter }, c.dilations));
        }
        const errFilter = relativeError(wasmFilter, cpuFilter);
        const errInput = relativeError(wasmInput, cpuInput);
        assert.ok(errFilter < TOLERANCE, `filter gradient relative error ${errFilter}`);
        assert.ok(errInput < TOLERANCE, `input gradient relative error ${errInput}`);
        const errFilterByConv = relativeError(wasmFilterByConv, cpuFilter);
        const errInputByConv = relativeError(wasmInputByConv, cpuInput);
        assert.ok(errFilterByConv < TOLERANCE, `filter gradient (convolution path) relative error ${errFilterByConv}`);
        assert.ok(errInputByConv < TOLERANCE, `input gradient (convolution path) relative error ${errInputByConv}`);
      });
    }
  });
}

test('autodiff through a conv net on wasm gives the cpu gradients', async () => {
  const rng = seeded(7);
  const xv = randomValues(4 * 12 * 12 * 2, rng.random);
  const f1 = randomValues(3 * 3 * 2 * 5, rng.random);
  const f2 = randomValues(3 * 3 * 5 * 1, rng.random);
  const grads = (backend: 'wasm' | 'cpu') =>
    valuesOn(backend, () => {
      const x = tf.tensor4d(xv, [4, 12, 12, 2]);
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
        const h = tf.relu(tf.conv2d(x, a as tf.Tensor4D, 2, 'same'));
        const d = tf.depthwiseConv2d(h, tf.reshape(b, [3, 3, 5, 1]) as tf.Tensor4D, 1, 'valid');
        return tf.sum(tf.square(tf.maxPool(d, 2, 1, 'same')));
      })([tf.tensor4d(f1, [3, 3, 2, 5]), tf.tensor(f2, [3 * 3 * 5])]);
      return tf.concat([tf.reshape(g[0], [-1]), tf.reshape(g[1], [-1])]);
    });
  const err = relativeError(await grads('wasm'), await grads('cpu'));
  assert.ok(err < TOLERANCE, `relative error ${err}`);
});

test('transposed matrix products on wasm match cpu', async () => {
  const rng = seeded(99);
  for (const [m, k, n] of [
    [7, 33, 5],
    [128, 1600, 128],
    [1, 9, 64],
  ]) {
    const av = randomValues(m * k, rng.random);
    const bv = randomValues(k * n, rng.random);
    for (const [ta, tb] of [
      [true, false],
      [false, true],
      [true, true],
    ] as const) {
      const run = (backend: 'wasm' | 'cpu') => valuesOn(backend, () => tf.matMul(tf.tensor2d(av, ta ? [k, m] : [m, k]), tf.tensor2d(bv, tb ? [n, k] : [k, n]), ta, tb));
      const err = relativeError(await run('wasm'), await run('cpu'));
      assert.ok(err < TOLERANCE, `[${m},${k}]x[${k},${n}] transposeA=${ta} transposeB=${tb}: relative error ${err}`);
    }
  }
});
