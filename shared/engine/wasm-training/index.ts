/**
 * Makes the wasm backend able to train convnets: registers the convolution gradient kernels it
 * lacks, and replaces the kernels that a training step spends its time in when the backend's
 * own versions are slow: the max-pool gradient, the transposed matrix product, the sum over
 * leading axes (bias gradients) and the copying Identity (the last three delegate the cases
 * they do not speed up to the backend's originals). Call once, after the wasm backend has been
 * registered (importing '@tensorflow/tfjs-backend-wasm' does that).
 */
import { getKernel, registerKernel, unregisterKernel, type KernelConfig, type KernelFunc as TfKernelFunc } from '@tensorflow/tfjs-core';
import { transposingBatchMatMul } from './batch-matmul.js';
import { conv2dBackpropFilter, conv2dBackpropInput, depthwiseBackpropFilter, depthwiseBackpropInput } from './conv-gradients.js';
import { sharedIdentity } from './identity.js';
import type { KernelFunc } from './kernel-scope.js';
import { maxPoolGrad } from './maxpool-grad.js';
import { leadingAxesSum } from './sum.js';

const BACKEND = 'wasm';

function replaceKernel(config: KernelConfig): void {
  if (getKernel(config.kernelName, BACKEND) != null) unregisterKernel(config.kernelName, BACKEND);
  registerKernel(config);
}

/** Replaces kernel `name` by one built around the backend's original (kept for delegation). */
function wrapOriginal(name: string, wrap: (original: KernelConfig) => KernelFunc): void {
  const original = getKernel(name, BACKEND);
  if (original == null) throw new Error(`the wasm backend is not registered (no '${name}' kernel): import @tensorflow/tfjs-backend-wasm first`);
  replaceKernel({
    kernelName: name,
    backendName: BACKEND,
    setupFunc: original.setupFunc, // the original binds its wasm function there
    kernelFunc: wrap(original) as unknown as TfKernelFunc,
  });
}

let registered = false;

export function registerWasmTrainingKernels(): void {
  if (registered) return;
  const kernels: Array<[string, unknown]> = [
    ['Conv2DBackpropFilter', conv2dBackpropFilter],
    ['Conv2DBackpropInput', conv2dBackpropInput],
    ['DepthwiseConv2dNativeBackpropFilter', depthwiseBackpropFilter],
    ['DepthwiseConv2dNativeBackpropInput', depthwiseBackpropInput],
    ['MaxPoolGrad', maxPoolGrad],
    ['Identity', sharedIdentity],
  ];
  for (const [kernelName, kernelFunc] of kernels) {
    replaceKernel({ kernelName, backendName: BACKEND, kernelFunc: kernelFunc as TfKernelFunc });
  }
  wrapOriginal('BatchMatMul', transposingBatchMatMul);
  wrapOriginal('Sum', leadingAxesSum);
  registered = true;
}
