/**
 * BatchMatMul for the wasm backend with transposed operands. The backend's own kernel sends
 * any transposed product to a naive triple loop; here the operand is transposed explicitly
 * (a cheap memory pass) and the product runs on XNNPACK's fully-connected kernel.
 */
import type { KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { withScope, type KernelFunc } from './kernel-scope.js';

function swapLastTwo(rank: number): number[] {
  const perm = [...Array(rank).keys()];
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return perm;
}

/** Wraps the backend's BatchMatMul so that transposed operands are materialised first. */
export function transposingBatchMatMul(original: KernelConfig): KernelFunc {
  const base = original.kernelFunc as unknown as KernelFunc;
  return ({ inputs, attrs, backend }) => {
    const { a, b } = inputs as Record<string, TensorInfo>;
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return base({ inputs, attrs, backend });
    return withScope(backend as BackendWasm, (s) => {
      const a2 = transposeA ? s.transpose(a, swapLastTwo(a.shape.length)) : a;
      const b2 = transposeB ? s.transpose(b, swapLastTwo(b.shape.length)) : b;
      const plain: NamedAttrMap = { ...attrs, transposeA: false, transposeB: false };
      return s.call(base, { a: a2, b: b2 }, plain);
    });
  };
}
