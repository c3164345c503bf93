/**
 * Sum for the wasm backend with a fast path for sums over the LEADING axes of a float32 tensor
 * (e.g. a convolution's bias gradient: dy [N,H,W,C] summed over [0,1,2]). The backend's own
 * kernel transposes the reduced axes innermost first and then sums rows (~9 ms for
 * [128,26,26,32]); here a native SIMD kernel (native/kernels.c) sums the [rows, cols] view
 * in place, one pass, no copy. Every other case goes to the backend's original kernel.
 */
import { backend_util, util, type KernelConfig, type TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelFunc } from './kernel-scope.js';
import { nativeSumLeading } from './native/native-kernels.js';

/** k when `axes` (normalised, any order) are exactly [0 .. k-1] with 0 < k < rank, else 0. */
export function leadingAxesCount(axis: number | number[] | null | undefined, shape: number[]): number {
  if (axis == null) return 0; // null means every axis
  const axes = [...new Set(util.parseAxisParam(axis, shape))].sort((a, b) => a - b);
  const k = axes.length;
  if (k === 0 || k >= shape.length) return 0;
  return axes.every((a, i) => a === i) ? k : 0;
}

/** Wraps the backend's Sum so that sums over leading axes of float32 tensors run natively. */
export function leadingAxesSum(original: KernelConfig): KernelFunc {
  const base = original.kernelFunc as unknown as KernelFunc;
  return (args) => {
    const { inputs, attrs } = args;
    const backend = args.backend as BackendWasm;
    const { x } = inputs as Record<string, TensorInfo>;
    const { axis, keepDims } = attrs as { axis: number | number[]; keepDims?: boolean };
    const k = x.dtype === 'float32' ? leadingAxesCount(axis, x.shape) : 0;
    if (k === 0) return base(args);
    const rows = util.sizeFromShape(x.shape.slice(0, k));
    const trailing = x.shape.slice(k);
    const cols = util.sizeFromShape(trailing);
    const outShape = keepDims ? backend_util.expandShapeToKeepDim(trailing, [...Array(k).keys()]) : trailing;
    const out = backend.makeOutput(outShape, 'float32');
    nativeSumLeading(backend, x, out, rows, cols);
    return out;
  };
}
