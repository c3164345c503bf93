/**
 * The WebGPU backend (shared/engine/webgpu.ts) on Mesa llvmpipe, a real WebGPU adapter in
 * software (COHORT_WEBGPU_SOFTWARE=1): adapter choice and pinning, the one-line errors, every
 * kernel a training step of each zoo model runs (forward and backward) against the `cpu`
 * backend with the same operands, one training step of each zoo model against `cpu`, and
 * memory over 100 training steps. Without an adapter these tests skip locally and fail under
 * CI=true (.ci/run installs Mesa's EGL packages).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { backendMemory, initBackend, shutdownBackend } from '../shared/engine/backend.js';
import { chooseAdapter, displayDevicesByBus, driPrimeTag, isSoftwareAdapter, parseAdapterList, probeAdapters, type AdapterProbe } from '../shared/engine/webgpu.js';
import { CohortError } from '../shared/errors.js';
import { crossEntropy } from '../shared/losses/index.js';
import { buildModel, MODEL_NAMES, type ModelName } from '../shared/models/registry.js';
import { makeOptimizer } from '../shared/training/objective.js';
import { trainStep } from '../shared/training/train-step.js';
import { runCli } from './helpers/cli.js';
import { randomValues, relativeError, seeded } from './helpers/backends.js';
import { replay, traceKernels, type KernelCall } from './helpers/kernel-trace.js';
import { requiredHere } from './helpers/requirements.js';

/**
 * COHORT_WEBGPU_TEST_HARDWARE=1 (a GPU machine: bench/gpu/run.sh): the kernel, step and memory
 * tests run on the hardware adapter, and the llvmpipe-specific ones skip.
 */
const onHardware = process.env.COHORT_WEBGPU_TEST_HARDWARE === '1';
if (!onHardware) process.env.COHORT_WEBGPU_SOFTWARE = '1';

function softwareProbe(): { probe?: AdapterProbe; missing: string | false } {
  try {
    if (onHardware) {
      const probe = probeAdapters('hardware');
      return { probe, missing: probe.adapters.some((a) => !a.software) ? false : `COHORT_WEBGPU_TEST_HARDWARE=1 but no hardware WebGPU adapter (Dawn: ${probe.reason})` };
    }
    const probe = probeAdapters('software');
    if (probe.adapters.some((a) => a.software)) return { probe, missing: false };
    return {
      probe,
      missing: `no software WebGPU adapter (Mesa llvmpipe over EGL: apt-get install libegl1 libegl-mesa0 libegl-dev libgl1-mesa-dri)${probe.reason ? `; Dawn: ${probe.reason}` : ''}`,
    };
  } catch (error) {
    return { missing: `listing WebGPU adapters failed: ${(error as Error).message}` };
  }
}
const { missing } = softwareProbe();
/** Skips locally without an adapter; under CI=true the tests run and fail (test/helpers/requirements.ts). */
const needsAdapter = { skip: missing && !requiredHere() ? missing : false };
/** The tests of llvmpipe itself (and of the CLI, which the GPU bundle does not carry). */
const onLlvmpipe = onHardware ? { skip: 'on the hardware adapter (COHORT_WEBGPU_TEST_HARDWARE=1)' } : needsAdapter;

// --- adapter choice, without an adapter -------------------------------------------------------

test("Dawn's adapter list is parsed from its rejection, and software adapters are recognised by name", () => {
  const message =
    "no adapter with backend 'vulkan' and name 'x' found\nAvailable adapters:\n * backend: 'vulkan', name: 'NVIDIA H200'\n * backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)'";
  assert.deepEqual(parseAdapterList(message), [
    { backend: 'vulkan', name: 'NVIDIA H200' },
    { backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)' },
  ]);
  assert.deepEqual(parseAdapterList('no suitable backends found'), []);
  for (const name of ['llvmpipe (LLVM 15.0.6, 256 bits)', 'SwiftShader Device (Subzero)', 'lavapipe', 'softpipe']) assert.equal(isSoftwareAdapter(name), true, name);
  for (const name of ['NVIDIA H200', 'AMD Radeon Pro W7900', 'Intel(R) Arc(tm) A770 Graphics (DG2)']) assert.equal(isSoftwareAdapter(name), false, name);
});

const adapters = (...names: string[]): AdapterProbe => ({ adapters: names.map((name) => ({ backend: 'vulkan', name, software: isSoftwareAdapter(name) })), reason: '' });

test('--gpu N picks the N-th hardware adapter: by name when unique, through Mesa device-select by PCI bus when names repeat', () => {
  const mixed = adapters('llvmpipe (LLVM 15.0.6, 256 bits)', 'NVIDIA A100', 'NVIDIA H200');
  const first = chooseAdapter('hardware', mixed, undefined, []);
  assert.equal(first.name, 'NVIDIA A100');
  assert.deepEqual(first.flags, ['backend=vulkan', 'adapter=NVIDIA A100']);
  assert.deepEqual(first.env, {});
  assert.equal(first.seen, 2);
  assert.equal(chooseAdapter('hardware', mixed, 1, []).name, 'NVIDIA H200');

  const twins = adapters('NVIDIA H200', 'NVIDIA H200');
  const pci = [
    { address: '0000:1a:00.0', vendor: '0x10de' },
    { address: '0000:3b:00.0', vendor: '0x10de' },
  ];
  const second = chooseAdapter('hardware', twins, 1, pci);
  assert.deepEqual(second.flags, ['backend=vulkan']);
  assert.deepEqual(second.env, { DRI_PRIME: 'pci-0000_3b_00_0', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' });
  assert.equal(driPrimeTag('0000:3b:00.0'), 'pci-0000_3b_00_0');
});

test('a GPU index that does not exist, and no adapter at all, are CohortErrors that say how many there are and why', () => {
  assert.throws(
    () => chooseAdapter('hardware', adapters('NVIDIA H200', 'llvmpipe (LLVM 15.0.6, 256 bits)'), 2, []),
    (error: unknown) =>
      error instanceof CohortError && error.code === 'GPU_INDEX_OUT_OF_RANGE' && /--gpu 2: this machine has 1 hardware WebGPU adapter \(0: NVIDIA H200\)/.test(error.message),
  );
  assert.throws(
    () =>
      chooseAdapter(
        'hardware',
        { adapters: [{ backend: 'opengles', name: 'llvmpipe (LLVM 15.0.6, 256 bits)', software: true }], reason: 'vkCreateInstance: Found no drivers!' },
        undefined,
        [],
      ),
    (error: unknown) =>
      error instanceof CohortError &&
      error.code === 'WEBGPU_NO_ADAPTER' &&
      /no hardware GPU adapter \(only llvmpipe .*\): Dawn says: vkCreateInstance: Found no drivers!; install the GPU driver with its Vulkan ICD/.test(error.message),
  );
});

test('display devices are read from sysfs in PCI bus order (the order nvidia-smi numbers GPUs in)', () => {
  const root = mkdtempSync(join(tmpdir(), 'cohort-pci-'));
  try {
    const device = (address: string, cls: string, vendor: string) => {
      mkdirSync(join(root, address));
      writeFileSync(join(root, address, 'class'), `${cls}\n`);
      writeFileSync(join(root, address, 'vendor'), `${vendor}\n`);
    };
    device('0000:3b:00.0', '0x030200', '0x10de');
    device('0000:00:1f.2', '0x010601', '0x8086'); // a SATA controller: not a display device
    device('0000:1a:00.0', '0x030200', '0x10de');
    assert.deepEqual(displayDevicesByBus(root), [
      { address: '0000:1a:00.0', vendor: '0x10de' },
      { address: '0000:3b:00.0', vendor: '0x10de' },
    ]);
    assert.deepEqual(displayDevicesByBus(join(root, 'absent')), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

// --- on the software adapter -------------------------------------------------------------------

test(
  "asking for webgpu where no hardware adapter exists is one error line naming Dawn's reason and what to install",
  onHardware ? onLlvmpipe : { skip: missing && !requiredHere() ? missing : probeAdapters('hardware').adapters.some((a) => !a.software) && 'this machine has a hardware adapter' },
  async () => {
    const result = await runCli(['eval', 'no-such-run', '--backend', 'webgpu'], { COHORT_WEBGPU_SOFTWARE: '' });
    assert.equal(result.code, 2, result.stderr);
    const lines = result.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('cohort:'));
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], /^cohort: error: backend 'webgpu' found no hardware GPU adapter.*install the GPU driver with its Vulkan ICD/);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
  },
);

test('auto never picks a software adapter', onLlvmpipe, async () => {
  const result = await runCli(['eval', 'no-such-run', '--backend', 'auto'], { COHORT_WEBGPU_SOFTWARE: '1' });
  assert.match(result.stdout, /backend: wasm on CPU/, result.stdout + result.stderr);
});

test('backend webgpu on llvmpipe: the adapter is described, --gpu 1 names the one adapter there is, and teardown lets the process exit', onLlvmpipe, async () => {
  const pinned = await runCli(['eval', 'no-such-run', '--backend', 'webgpu', '--gpu', '1']);
  assert.equal(pinned.code, 2);
  assert.match(pinned.stderr, /cohort: error: --gpu 1: this machine has 1 software WebGPU adapter \(0: llvmpipe/);
  // eval gets its backend, then fails on the missing run: the process must still exit (the device is destroyed).
  const opened = await runCli(['eval', 'no-such-run', '--backend', 'webgpu'], {}, 60_000);
  assert.match(opened.stdout, /backend: webgpu on GPU llvmpipe .*Dawn opengles, software adapter: for tests only/);
  assert.equal(opened.code, 2, opened.stderr);
});

const imagenetFamily = (name: ModelName) => /resnet|mobilenet/.test(name);

/** Small shapes for each zoo model's kernel trace: the smallest input its stem takes, batch 2, 10 classes, no dropout. */
function smallModel(name: ModelName, side = imagenetFamily(name) ? 8 : 16) {
  return buildModel({ name, inputShape: imagenetFamily(name) ? [side, side, 3] : [side, side, 1], classes: 10, dropout: 0, seed: 11 });
}

/**
 * The whole step is compared where it is well conditioned, measured as how far cpu's own
 * gradients move when the images move by one part in 1e6. At batch 2 and 8x8 the ResNets'
 * and MobileNetV2's last batch norms average two values (1x1 maps) and that is 6e-2 to 10; at
 * batch 8 it is 1.4e-5 to 5.5e-3 for resnet18 (by the draw), 5.4e-5 for resnet34 and up to 1.3e-2
 * for multi-exit-resnet18 (kernel by kernel only, with resnet34: resnet18's blocks), while
 * MobileNetV2's ReLU6 kinks put it anywhere from 2.7e-4 to 1.6e-2 depending on the draw, so
 * MobileNetV2 is checked kernel by kernel (its depthwise kernels included). ResNet-50's bottlenecks stay at 2e-2 to 4e-2 up to batch 32 at 8x8, and
 * larger inputs cost minutes per step on the pure-JS cpu backend and llvmpipe: resnet50 and the
 * multi-exit 34/50 are checked kernel by kernel only (every configuration they run, above), and
 * so is resnet34 (resnet18's blocks, deeper: no configuration of its own; its whole step agreed
 * to 3.2e-5 at conditioning 5.7e-5 when measured, and takes 4.5 minutes).
 */
const STEP_SHAPE: Partial<Record<ModelName, { side: number; batch: number }>> = {
  'reference-cnn': { side: 16, batch: 2 },
  'cnn-teacher': { side: 16, batch: 2 },
  'cnn-student': { side: 16, batch: 2 },
  'mlp-teacher': { side: 16, batch: 2 },
  'mlp-student': { side: 16, batch: 2 },
  resnet18: { side: 8, batch: 8 },
};

/**
 * A kernel call's configuration: the kernel, its operands' ranks and dtypes, its attributes.
 * Each configuration is replayed once across all the models (the ResNets share most of theirs).
 */
function configurationKey(call: KernelCall): string {
  const operands = Object.entries(call.inputs).map(([k, v]) => `${k}:${v.dtype}${v.shape.length}`);
  return `${call.name}(${operands.join(' ')}) ${JSON.stringify(call.attrs)}`;
}
const replayed = new Set<string>();

/** Mean cross-entropy over every exit (one for most models, four for multi-exit ResNets). */
function lossOf(model: ReturnType<typeof smallModel>, x: tf.Tensor4D, y: tf.Tensor1D): tf.Scalar {
  const out = model.model.apply(x, { training: true }) as tf.Tensor | tf.Tensor[];
  const logits = (Array.isArray(out) ? out : [out]).slice(0, model.exits) as tf.Tensor2D[];
  return tf.div(tf.addN(logits.map((z) => crossEntropy(z, y))), logits.length) as tf.Scalar;
}

/**
 * Kernels that are linear in each operand (sums, products, convolutions): where their output
 * cancels (the batch-norm gradients' sums are zero by construction), fp32 is judged as against
 * float64, by the magnitude of what was summed: the kernel applied to the operands' absolute
 * values (the componentwise condition |A||B|).
 */
const LINEAR_KERNELS = new Set([
  'Sum',
  'Mean',
  'Add',
  'AddN',
  'Sub',
  'Multiply',
  'BatchMatMul',
  'Conv2D',
  'Conv2DBackpropFilter',
  'Conv2DBackpropInput',
  'DepthwiseConv2dNative',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
]);

const absolute = (call: KernelCall): KernelCall => ({
  ...call,
  inputs: Object.fromEntries(Object.entries(call.inputs).map(([k, v]) => [k, v.dtype === 'float32' ? { ...v, values: v.values.map(Math.abs) as tf.TypedArray } : v])),
});

/**
 * MaxPoolGrad routes each gradient to the window's maximum; a ReLU before the pool leaves ties
 * (zeros) whose winner is the backend's choice, and every choice is right. Its replay uses the
 * same shapes and attributes with tie-free operands: x random, y = MaxPool(x), dy random.
 */
async function tieFree(call: KernelCall, rng: ReturnType<typeof seeded>): Promise<KernelCall> {
  if (call.name !== 'MaxPoolGrad') return call;
  const { input, output, dy } = call.inputs;
  const x = { ...input, values: randomValues(input.values.length, rng.random) };
  const attrs = call.attrs as { filterSize: [number, number]; strides: [number, number]; pad: 'valid' | 'same' | number; dimRoundingMode?: 'floor' | 'round' | 'ceil' };
  const y = await tf.maxPool(tf.tensor4d(x.values, x.shape as [number, number, number, number]), attrs.filterSize, attrs.strides, attrs.pad, attrs.dimRoundingMode).data();
  const tied: KernelCall = { ...call, inputs: { input: x, output: { ...output, values: y }, dy: { ...dy, values: randomValues(dy.values.length, rng.random) } } };
  return { ...tied, outputs: (await replay(tied)).map((values, i) => ({ ...call.outputs[i], values })) };
}

/** ||a - b|| / scale, scale = ||b||, or for LINEAR_KERNELS the norm of the absolute-operand output when larger. */
function relativeTo(got: tf.TypedArray, want: tf.TypedArray, scale: tf.TypedArray | undefined): number {
  let num = 0;
  let den = 0;
  let abs = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
    if (scale) abs += scale[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(Math.max(den, abs)), 1e-30);
}

async function gradientsOn(backend: 'cpu' | 'webgpu', model: ReturnType<typeof smallModel>, images: Float32Array, labels: Int32Array, shape: [number, number, number, number]) {
  await tf.setBackend(backend);
  const { value, grads } = tf.variableGrads(() => lossOf(model, tf.tensor4d(images, shape), tf.tensor1d(labels, 'int32')));
  const keys = Object.keys(grads).sort();
  const flat = Float32Array.from((await Promise.all(keys.map((k) => grads[k].data()))).flatMap((v) => Array.from(v)));
  const loss = (await value.data())[0];
  tf.dispose([value, ...Object.values(grads)]);
  return { loss, flat };
}

const models = (process.env.COHORT_WEBGPU_MODELS?.split(',') as ModelName[] | undefined) ?? MODEL_NAMES;
for (const name of models) {
  const step = STEP_SHAPE[name];
  test(
    `${name}: every kernel of a training step, forward and backward, matches cpu on webgpu${step ? ', and so does the whole step' : ''}`,
    { ...needsAdapter, timeout: 900_000 },
    async (t) => {
      const started = Date.now();
      await initBackend({ backend: 'webgpu' });
      await initBackend({ backend: 'cpu' });
      const rng = seeded(5);
      {
        const model = smallModel(name);
        const [h, w, c] = model.config.inputShape;
        const images = randomValues(2 * h * w * c, rng.random);
        // The step on cpu, recording every distinct kernel call with its operands.
        const { result, calls: traced } = traceKernels(() => tf.variableGrads(() => lossOf(model, tf.tensor4d(images, [2, h, w, c]), tf.tensor1d([3, 7], 'int32'))));
        tf.dispose([result.value, ...Object.values(result.grads)]);
        const fresh = traced.filter((call) => !replayed.has(configurationKey(call)));
        fresh.forEach((call) => replayed.add(configurationKey(call)));
        const calls = await Promise.all(fresh.map((call) => tieFree(call, rng)));
        const scales = await Promise.all(calls.map((call) => (LINEAR_KERNELS.has(call.name) ? replay(absolute(call)) : undefined)));
        await tf.setBackend('webgpu');
        const failures: string[] = [];
        for (const [i, call] of calls.entries()) {
          const outputs = await replay(call);
          outputs.forEach((got, o) => {
            const want = call.outputs[o];
            const error = want.dtype === 'float32' ? relativeTo(got, want.values, scales[i]?.[o]) : got.every((v, j) => v === want.values[j]) ? 0 : Infinity;
            if (!(error < 1e-4)) failures.push(`${call.name} output ${o} ${JSON.stringify(want.shape)}: relative error ${error.toExponential(2)}`);
          });
        }
        const kernels = [...new Set(traced.map((c) => c.name))].sort();
        t.diagnostic(`${kernels.length} kernels in the step (${kernels.join(' ')}); ${calls.length} configurations not seen in an earlier model replayed`);
        assert.deepEqual(failures, []);
        assert.ok(
          traced.some((c) => c.name === 'BatchMatMul' || c.name === 'Conv2DBackpropFilter'),
          'the trace holds backward kernels',
        );
        model.model.dispose();
      }
      if (!step) return;
      const model = smallModel(name, step.side);
      const shape = [step.batch, ...model.config.inputShape] as [number, number, number, number];
      const images = randomValues(
        shape.reduce((a, b) => a * b),
        rng.random,
      );
      const labels = Int32Array.from({ length: step.batch }, (_, i) => (i * 3) % 10);
      const cpu = await gradientsOn('cpu', model, images, labels, shape);
      // The step's own conditioning: how far cpu's gradients move when the images move by one
      // part in 1e6 (MobileNetV2's ReLU6 kinks make it 1e-3 even at batch 8). fp32 on one backend
      // against fp32 on another is judged against that, with 1e-4 as the floor.
      const moved = await gradientsOn(
        'cpu',
        model,
        images.map((v, i) => v * (1 + (i % 2 ? 1e-6 : -1e-6))),
        labels,
        shape,
      );
      const conditioning = relativeError(moved.flat, cpu.flat);
      assert.ok(conditioning < 1e-2, `the step is too ill-conditioned to compare: gradients move ${conditioning.toExponential(1)} for 1e-6 in the images`);
      const tolerance = Math.max(1e-4, 10 * conditioning);
      const gpu = await gradientsOn('webgpu', model, images, labels, shape);
      const error = relativeError(gpu.flat, cpu.flat);
      t.diagnostic(
        `whole step at batch ${step.batch}, ${step.side}x${step.side}: loss ${gpu.loss} vs ${cpu.loss}, all gradients relative error ${error.toExponential(2)} (conditioning ${conditioning.toExponential(1)}, tolerance ${tolerance.toExponential(1)})`,
      );
      assert.ok(Math.abs(gpu.loss - cpu.loss) <= 1e-5 * Math.abs(cpu.loss), `loss ${gpu.loss} on webgpu, ${cpu.loss} on cpu`);
      assert.ok(error < tolerance, `gradients: relative error ${error.toExponential(2)} (tolerance ${tolerance.toExponential(1)})`);
      model.model.dispose();
      t.diagnostic(`${((Date.now() - started) / 1000).toFixed(0)} s`);
    },
  );
}

test('memory on webgpu: tensors and GPU bytes stay flat over 100 training steps', needsAdapter, async () => {
  await initBackend({ backend: 'webgpu' });
  const model = buildModel({ name: 'reference-cnn', inputShape: [12, 12, 1], classes: 10, seed: 3 });
  const optimizer = makeOptimizer({ name: 'adam', lr: 1e-3, momentum: 0.9, beta1: 0.9, beta2: 0.999 });
  const rng = seeded(9);
  const x = tf.tensor4d(randomValues(8 * 144, rng.random), [8, 12, 12, 1]);
  const y = tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7], 'int32');
  const samples: ReturnType<typeof backendMemory>[] = [];
  for (let step = 0; step < 100; step++) {
    const { loss, logits } = trainStep(model.model, optimizer, x, y);
    await loss.data(); // read as training does: asynchronously
    tf.dispose([loss, logits]);
    if (step === 9 || step === 99) samples.push(backendMemory());
  }
  const [early, late] = samples;
  assert.ok(late.gpuBytes !== undefined && late.gpuBytes > 0, 'webgpu reports the GPU bytes in use');
  assert.equal(late.tensors, early.tensors, 'tensors');
  assert.equal(late.gpuBytes, early.gpuBytes, 'GPU bytes in use');
  assert.ok(late.gpuBytesAllocated! <= early.gpuBytesAllocated! * 1.05, `GPU bytes allocated ${early.gpuBytesAllocated} -> ${late.gpuBytesAllocated}`);
  tf.dispose([x, y]);
  optimizer.dispose();
  model.model.dispose();
  shutdownBackend();
});
