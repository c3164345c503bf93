/**
 * Makes the wasm backend able to train convnets: registers the convolution gradient kernels it
 * lacks and replaces its slow max-pool gradient and transposed matrix product. Call once, after the wasm backend has
 * been registered (importing '@tensorflow/tfjs-backend-wasm' does that).
 */
import { getKernel, registerKernel, unregisterKernel, type KernelConfig, type KernelFunc as TfKernelFunc } from '@tensorflow/tfjs-core';
import { transposingBatchMatMul } from './batch-matmul.js';
import {
  conv2dBackpropFilter,
  conv2dBackpropInput,
  depthwiseBackpropFilter,
  depthwiseBackpropInput,
} from './conv-gradients.js';
import { maxPoolGrad } from './maxpool-grad.js';

const BACKEND = 'wasm';

function replaceKernel(config: KernelConfig): void {
  if (getKernel(config.kernelName, BACKEND) != null) unregisterKernel(config.kernelName, BACKEND);
  registerKernel(config);
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
  ];
  for (const [kernelName, kernelFunc] of kernels) {
    replaceKernel({ kernelName, backendName: BACKEND, kernelFunc: kernelFunc as TfKernelFunc });
  }
  const matMul = getKernel('BatchMatMul', BACKEND);
  if (matMul == null) throw new Error('the wasm backend is not registered: import @tensorflow/tfjs-backend-wasm first');
  replaceKernel({
    kernelName: 'BatchMatMul',
    backendName: BACKEND,
    setupFunc: matMul.setupFunc, // the original binds its wasm function there
    kernelFunc: transposingBatchMatMul(matMul) as unknown as TfKernelFunc,
  });
  registered = true;
}
