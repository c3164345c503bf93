/**
 * Times training steps (and, with --forward=1, forward passes: what a teacher runs) of one
 * model on one backend, in its own process, and prints one JSON line: {backend, device,
 * msPerStep (median), steps, forwardMs, kernels, ...}. Spawned by bench/step.ts.
 *   --model=reference-cnn (28x28x1) | resnet18-small32 (32x32x3, small stem) | resnet18-imagenet224
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../shared/engine/backend.js';
import { CohortError } from '../shared/errors.js';
import { buildModel } from '../shared/models/registry.js';
import { shutdownBackend } from '../shared/engine/backend.js';
import { trainStep } from '../shared/training/train-step.js';
import { median } from './stats.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const backend = (args.backend ?? 'wasm') as BackendChoice;
const steps = Number(args.steps ?? 20);
const warmup = Number(args.warmup ?? 3);
const batch = Number(args.batch ?? 128);
const profile = args.profile === '1';
const modelName = args.model ?? 'reference-cnn';
const forward = args.forward === '1';
const MODELS = {
  'reference-cnn': { name: 'reference-cnn', inputShape: [28, 28, 1], classes: 10 },
  'resnet18-small32': { name: 'resnet18', inputShape: [32, 32, 3], classes: 10, stem: 'small' },
  'resnet18-imagenet224': { name: 'resnet18', inputShape: [224, 224, 3], classes: 1000, stem: 'imagenet' },
} as const;
const spec = MODELS[modelName as keyof typeof MODELS];
if (!spec) throw new Error(`--model: one of ${Object.keys(MODELS).join(', ')}`);

const wasmThreads = Number(args['wasm-threads'] ?? 0);
if (wasmThreads > 1) {
  // Experiment: tfjs disables wasm threads in Node; force the flag and see whether it loads.
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  wasm.setThreadsCount(wasmThreads);
  const origError = console.error;
  console.error = () => {};
  const ok = await tf.setBackend('wasm').catch(() => false);
  console.error = origError;
  if (!ok) {
    console.log(
      JSON.stringify({
        backend: `wasm (${wasmThreads} threads)`,
        unavailable: "the threaded wasm build starts its workers from blob: URLs, which Node's worker_threads rejects (ERR_WORKER_PATH)",
      }),
    );
    process.exit(0);
  }
}
const active = await initBackend({ backend }).catch((error: unknown) => {
  // A backend that cannot start (not installed, no adapter) is reported, not a crash: its code and reason.
  if (!(error instanceof CohortError)) throw error;
  console.log(JSON.stringify({ backend, unavailable: `${error.code}: ${error.message}` }));
  process.exit(0);
});
const model = buildModel({ ...spec, inputShape: [...spec.inputShape], seed: 1 }).model;
const optimizer = tf.train.adam(1e-3);
const images = tf.randomUniform([batch, ...spec.inputShape]) as tf.Tensor4D;
const labels = tf.randomUniform([batch], 0, spec.classes, 'int32') as tf.Tensor1D;

const times: number[] = [];
for (let i = 0; i < warmup + steps; i++) {
  const start = performance.now();
  const { loss, logits } = trainStep(model, optimizer, images, labels);
  await loss.data();
  tf.dispose([loss, logits]);
  if (i >= warmup) times.push(performance.now() - start);
}

/** Forward passes in inference mode, as a forward-only teacher runs them. */
const forwardTimes: number[] = [];
if (forward) {
  for (let i = 0; i < warmup + Math.min(steps, 20); i++) {
    const start = performance.now();
    const out = model.predict(images) as tf.Tensor;
    await out.data();
    out.dispose();
    if (i >= warmup) forwardTimes.push(performance.now() - start);
  }
}

let kernels: Record<string, number> | undefined;
if (profile) {
  const info = await tf.profile(async () => {
    const { loss, logits } = trainStep(model, optimizer, images, labels);
    await loss.data();
    tf.dispose([loss, logits]);
  });
  kernels = {};
  // A kernel time is `{ error }` where the backend cannot time kernels: counted as 0.
  for (const k of info.kernels) kernels[k.name] = (kernels[k.name] ?? 0) + (typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0);
}
console.log(
  JSON.stringify({
    backend: wasmThreads > 1 ? `wasm (${wasmThreads} threads)` : active.choice,
    device: active.device,
    model: modelName,
    batch,
    forwardMs: forward ? median(forwardTimes) : undefined,
    steps,
    msPerStep: median(times),
    minMs: Math.min(...times),
    numTensors: tf.memory().numTensors,
    kernels,
  }),
);
shutdownBackend();
