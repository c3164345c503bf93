/**
 * Times training steps of the reference CNN on one backend, in its own process, and prints
 * one JSON line: {backend, device, msPerStep (median), steps, ...}. Spawned by bench/step.ts.
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../shared/engine/backend.js';
import { referenceCnn } from '../shared/models/reference-cnn.js';
import { trainStep } from '../shared/training/train-step.js';
import { median } from './stats.js';

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]),
);
const backend = (args.backend ?? 'wasm') as BackendChoice;
const steps = Number(args.steps ?? 20);
const warmup = Number(args.warmup ?? 3);
const batch = Number(args.batch ?? 128);
const profile = args.profile === '1';

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
    console.log(JSON.stringify({ backend: `wasm (${wasmThreads} threads)`, unavailable: 'the threaded wasm build starts its workers from blob: URLs, which Node\'s worker_threads rejects (ERR_WORKER_PATH)' }));
    process.exit(0);
  }
}
const active = await initBackend({ backend });
const model = referenceCnn({ seed: 1 });
const optimizer = tf.train.adam(1e-3);
const images = tf.randomUniform([batch, 28, 28, 1]) as tf.Tensor4D;
const labels = tf.randomUniform([batch], 0, 10, 'int32') as tf.Tensor1D;

const times: number[] = [];
for (let i = 0; i < warmup + steps; i++) {
  const start = performance.now();
  const { loss, logits } = trainStep(model, optimizer, images, labels);
  await loss.data();
  tf.dispose([loss, logits]);
  if (i >= warmup) times.push(performance.now() - start);
}

let kernels: Record<string, number> | undefined;
if (profile) {
  const info = await tf.profile(async () => {
    const { loss, logits } = trainStep(model, optimizer, images, labels);
    await loss.data();
    tf.dispose([loss, logits]);
  });
  kernels = {};
  for (const k of info.kernels) kernels[k.name] = (kernels[k.name] ?? 0) + (k.kernelTimeMs as number);
}
console.log(
  JSON.stringify({
    backend: wasmThreads > 1 ? `wasm (${wasmThreads} threads)` : active.choice,
    device: active.device,
    batch,
    steps,
    msPerStep: median(times),
    minMs: Math.min(...times),
    numTensors: tf.memory().numTensors,
    kernels,
  }),
);
