/**
 * Cohort's native (C -> WebAssembly SIMD) kernels on the wasm backend against the cpu backend:
 * MaxPoolGrad on random shapes (batch 1-64, odd sizes, channels 1-32, filters 2-3, strides 1-3,
 * same/valid), exactly on inputs full of ties (the first maximum of a window must win), and
 * Sum over leading axes (native) and other axes (delegated to the backend's own kernel). Also
 * checks that the module has no data segment, since it runs on the backend's own heap.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { randomValues, relativeError, seeded, useWasm } from './helpers/backends.js';
import { nativeKernelBytes } from '../shared/engine/wasm-training/native/native-kernels.js';
import { leadingAxesCount } from '../shared/engine/wasm-training/sum.js';

type Rng = ReturnType<typeof seeded>;

/** Runs `f` on `backend`; returns the output's shape and values (tensors made inside are freed). */
async function runOn(backend: 'wasm' | 'cpu', f: () => tf.Tensor): Promise<{ shape: number[]; values: Float32Array }> {
  await tf.setBackend(backend);
  const out = tf.tidy(f);
  const values = Float32Array.from((await out.data()) as ArrayLike<number>);
  const shape = out.shape;
  out.dispose();
  return { shape, values };
}

/** Largest |a - b|, NaN-aware (NaN only matches NaN). */
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) || Number.isNaN(b[i])) {
      if (!(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return Infinity;
      continue;
    }
    if (a[i] === b[i]) continue; // also equal infinities
    m = Math.max(m, Math.abs(a[i] - b[i]));
  }
  return m;
}

before(async () => {
  await useWasm();
});

test('the native module has no data segment and imports only env.memory', () => {
  const bytes = nativeKernelBytes();
  assert.deepEqual([...bytes.subarray(0, 8)], [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
  const leb = (at: number, from: Uint8Array = bytes): [number, number] => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = from[at++];
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) return [value, at];
    }
  };
  const sections: number[] = [];
  let importSection: Uint8Array | undefined;
  for (let at = 8; at < bytes.length;) {
    const id = bytes[at];
    const [size, start] = leb(at + 1);
    if (id === 2) importSection = bytes.subarray(start, start + size);
    sections.push(id);
    at = start + size;
  }
  assert.ok(!sections.includes(11), 'a Data section (id 11) would write into the backend heap');
  assert.ok(!sections.includes(12), 'no DataCount section (id 12) either');
  assert.ok(importSection != null, 'the module imports the backend memory');
  const [count, first] = leb(0, importSection);
  assert.equal(count, 1, 'exactly one import');
  const name = (at: number): [string, number] => {
    const [length, start] = leb(at, importSection);
    return [new TextDecoder().decode(importSection.subarray(start, start + length)), start + length];
  };
  const [moduleName, afterModule] = name(first);
  const [fieldName, afterField] = name(afterModule);
  assert.equal(`${moduleName}.${fieldName}`, 'env.memory');
  assert.equal(importSection[afterField], 2, 'the import is a memory');
});

interface PoolCase {
  x: [number, number, number, number];
  filter: [number, number];
  strides: [number, number];
  pad: 'same' | 'valid';
}

function randomPoolCase(rng: Rng): PoolCase {
  const filter: [number, number] = [rng.int(2, 3), rng.int(2, 3)];
  const strides: [number, number] = rng.random() < 0.15 ? [3, 3] : [rng.int(1, 2), rng.int(1, 2)];
  const batch = rng.pick([1, 2, 3, 5, 8, 17, 64]);
  const small = batch > 8;
  const h = rng.int(filter[0], filter[0] + (small ? 6 : 13));
  const w = rng.int(filter[1], filter[1] + (small ? 6 : 13));
  const channels = rng.pick([1, 3, 4, 6, 32]);
  return { x: [batch, h, w, channels], filter, strides, pad: rng.pick(['same', 'valid']) };
}

function poolOutShape(c: PoolCase): number[] {
  const info = tf.backend_util.computePool2DInfo(c.x, c.filter, c.strides, 1, c.pad);
  return info.outShape;
}

function maxPoolGrad(c: PoolCase, xv: Float32Array, dyv: Float32Array): () => tf.Tensor {
  return () => {
    const x = tf.tensor4d(xv, c.x);
    const dy = tf.tensor(dyv, poolOutShape(c));
    return tf.engine().runKernel('MaxPoolGrad', { dy, input: x, output: x }, { filterSize: c.filter, strides: c.strides, pad: c.pad } as unknown as tf.NamedAttrMap) as tf.Tensor;
  };
}

function describePool(c: PoolCase): string {
  return `x=${c.x} filter=${c.filter} strides=${c.strides} pad=${c.pad}`;
}

describe('MaxPoolGrad on wasm (native) matches cpu', () => {
  const rng = seeded(4242);
  const cases = Array.from({ length: 36 }, () => randomPoolCase(rng));
  // The reference CNN's pooling layers and some edge shapes, always covered.
  cases.push({ x: [128, 26, 26, 32], filter: [2, 2], strides: [2, 2], pad: 'valid' });
  cases.push({ x: [16, 11, 11, 64], filter: [2, 2], strides: [2, 2], pad: 'valid' });
  cases.push({ x: [3, 7, 9, 5], filter: [3, 3], strides: [2, 2], pad: 'same' });
  cases.push({ x: [2, 8, 7, 4], filter: [2, 3], strides: [3, 3], pad: 'same' });
  cases.push({ x: [1, 2, 2, 1], filter: [3, 3], strides: [1, 1], pad: 'same' });

  for (const c of cases) {
    test(`random values, ${describePool(c)}`, async () => {
      const xv = randomValues(tf.util.sizeFromShape(c.x), rng.random);
      const dyv = randomValues(tf.util.sizeFromShape(poolOutShape(c)), rng.random);
      const wasm = await runOn('wasm', maxPoolGrad(c, xv, dyv));
      const cpu = await runOn('cpu', maxPoolGrad(c, xv, dyv));
      assert.deepEqual(wasm.shape, cpu.shape);
      const err = relativeError(wasm.values, cpu.values);
      assert.ok(err < 1e-6, `relative error ${err}`);
    });

    test(`ties (first maximum wins), ${describePool(c)}`, async () => {
      // Values in {0, 1, 2}: most windows have several maxima. Integer gradients make every
      // sum exact, so any difference is a wrongly chosen position.
      const xv = Float32Array.from({ length: tf.util.sizeFromShape(c.x) }, () => Math.floor(rng.random() * 3));
      const dyv = Float32Array.from({ length: tf.util.sizeFromShape(poolOutShape(c)) }, () => rng.int(-8, 8));
      const wasm = await runOn('wasm', maxPoolGrad(c, xv, dyv));
      const cpu = await runOn('cpu', maxPoolGrad(c, xv, dyv));
      assert.equal(maxAbsDiff(wasm.values, cpu.values), 0);
    });
  }

  test('NaN and -Infinity inputs are treated as the cpu backend treats them', async () => {
    for (const c of [
      { x: [4, 9, 9, 8], filter: [2, 2], strides: [2, 2], pad: 'valid' },
      { x: [4, 9, 9, 7], filter: [3, 3], strides: [1, 1], pad: 'same' },
    ] as PoolCase[]) {
      const xv = Float32Array.from({ length: tf.util.sizeFromShape(c.x) }, () => {
        const u = rng.random();
        return u < 0.3 ? NaN : u < 0.6 ? -Infinity : Math.floor(rng.random() * 3);
      });
      const dyv = Float32Array.from({ length: tf.util.sizeFromShape(poolOutShape(c)) }, () => rng.int(-8, 8));
      const wasm = await runOn('wasm', maxPoolGrad(c, xv, dyv));
      const cpu = await runOn('cpu', maxPoolGrad(c, xv, dyv));
      assert.equal(maxAbsDiff(wasm.values, cpu.values), 0, describePool(c));
    }
  });

  test('the pooled gradient through autodiff matches cpu', async () => {
    const xv = randomValues(6 * 10 * 10 * 8, rng.random);
    const grad = (backend: 'wasm' | 'cpu') =>
      runOn(backend, () => tf.grad((x: tf.Tensor) => tf.sum(tf.square(tf.maxPool(x as tf.Tensor4D, 3, 2, 'same'))))(tf.tensor4d(xv, [6, 10, 10, 8])));
    const err = relativeError((await grad('wasm')).values, (await grad('cpu')).values);
    assert.ok(err < 1e-6, `relative error ${err}`);
  });
});

describe('Sum on wasm matches cpu', () => {
  const rng = seeded(77);

  test('leadingAxesCount recognises exactly the leading axes', () => {
    assert.equal(leadingAxesCount([0, 1, 2], [2, 3, 4, 5]), 3);
    assert.equal(leadingAxesCount([1, 0], [2, 3, 4]), 2);
    assert.equal(leadingAxesCount(0, [2, 3]), 1);
    assert.equal(leadingAxesCount([-3, -2], [2, 3, 4]), 2);
    assert.equal(leadingAxesCount([0, 1, 2], [2, 3, 4]), 0); // every axis
    assert.equal(leadingAxesCount([1], [2, 3, 4]), 0);
    assert.equal(leadingAxesCount([0, 2], [2, 3, 4]), 0);
    assert.equal(leadingAxesCount([], [2, 3]), 0);
    assert.equal(leadingAxesCount(null, [2, 3]), 0);
  });

  const shapes = [
    [7, 5],
    [1, 33],
    [40, 1],
    [3, 4, 5],
    [2, 9, 17],
    [5, 3, 2, 6],
    [2, 3, 4, 5, 3],
    [64, 13, 13, 32],
  ];
  for (const shape of shapes) {
    const rank = shape.length;
    const axesList: number[][] = [];
    for (let k = 1; k < rank; k++) axesList.push([...Array(k).keys()]); // leading: native
    axesList.push([rank - 1], rank > 2 ? [0, rank - 1] : [1], [...Array(rank).keys()]); // others: delegated
    if (rank > 2) axesList.push([-rank, -rank + 1], [1, 0]); // leading, negative / unordered
    for (const axes of axesList) {
      for (const keepDims of [false, true]) {
        const native = leadingAxesCount(axes, shape) > 0;
        test(`x=[${shape}] axes=[${axes}] keepDims=${keepDims} (${native ? 'native' : 'delegated'})`, async () => {
          const xv = randomValues(tf.util.sizeFromShape(shape), rng.random);
          const f = () => tf.sum(tf.tensor(xv, shape), axes, keepDims);
          const wasm = await runOn('wasm', f);
          const cpu = await runOn('cpu', f);
          assert.deepEqual(wasm.shape, cpu.shape);
          const err = relativeError(wasm.values, cpu.values);
          // Delegated cases are the backend's own float32 sums: a full reduction of 346k values
          // is only good to ~1e-4 there (the cpu backend sums in float64).
          const tolerance = native ? 1e-5 : 1e-3;
          assert.ok(err < tolerance, `relative error ${err}`);
        });
      }
    }
  }

  test('int32 tensors and empty tensors', async () => {
    const iv = Int32Array.from({ length: 6 * 7 }, () => rng.int(-100, 100));
    for (const f of [
      () => tf.sum(tf.tensor(iv, [6, 7], 'int32'), 0),
      () => tf.sum(tf.zeros([0, 3]), 0),
      () => tf.sum(tf.zeros([4, 0]), 0),
      () => tf.sum(tf.zeros([0, 2, 3]), [0, 1], true),
    ]) {
      const wasm = await runOn('wasm', f);
      const cpu = await runOn('cpu', f);
      assert.deepEqual(wasm.shape, cpu.shape);
      assert.deepEqual(wasm.values, cpu.values);
    }
  });

  test('conv bias gradient shape: [128,26,26,32] over [0,1,2] within 1e-5 of a float64 sum', async () => {
    const shape = [128, 26, 26, 32];
    const xv = randomValues(tf.util.sizeFromShape(shape), rng.random);
    for (let i = 0; i < xv.length; i++) xv[i] += 0.1 * (i % 7); // a nonzero mean per column
    const reference = new Float64Array(32);
    for (let i = 0; i < xv.length; i++) reference[i % 32] += xv[i];
    const wasm = await runOn('wasm', () => tf.sum(tf.tensor(xv, shape), [0, 1, 2]));
    assert.deepEqual(wasm.shape, [32]);
    const err = relativeError(wasm.values, reference);
    assert.ok(err < 1e-5, `relative error ${err}`);
  });
});
