/**
 * Calls the wasm backend's own kernels directly from inside another kernel, and frees the
 * intermediate tensors they produce. This is how the wasm backend composes its kernels
 * internally: no engine bookkeeping, no gradient tape, just TensorInfos on the wasm heap.
 */
import { getKernel, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export type KernelInputs = Record<string, TensorInfo> | TensorInfo[];
export type KernelFunc = (args: { inputs: KernelInputs; attrs: NamedAttrMap; backend: BackendWasm }) => TensorInfo;

export class KernelScope {
  private readonly temporaries: TensorInfo[] = [];

  constructor(readonly backend: BackendWasm) {}

  /** Runs the wasm kernel `name`; its output is freed by `dispose()` unless `keep()` is called on it. */
  run(name: string, inputs: KernelInputs, attrs: NamedAttrMap = {}): TensorInfo {
    const kernel = getKernel(name, 'wasm');
    if (kernel == null) throw new Error(`wasm backend has no '${name}' kernel`);
    return this.call(kernel.kernelFunc as unknown as KernelFunc, inputs, attrs);
  }

  /** Runs a kernel function held by reference (e.g. the backend's original of a kernel we replaced). */
  call(kernelFunc: KernelFunc, inputs: KernelInputs, attrs: NamedAttrMap = {}): TensorInfo {
    const out = kernelFunc({ inputs, attrs, backend: this.backend });
    this.temporaries.push(out);
    return out;
  }

  /** A new uninitialised float32 tensor on the wasm heap, owned by this scope. */
  output(shape: number[]): TensorInfo {
    const out = this.backend.makeOutput(shape, 'float32');
    this.temporaries.push(out);
    return out;
  }

  /**
   * A Float32Array view of a tensor's heap memory. Views go stale when the heap grows, so take
   * a fresh one after running any kernel.
   */
  values(t: TensorInfo): Float32Array {
    return this.backend.typedArrayFromHeap(t) as Float32Array;
  }

  transpose(x: TensorInfo, perm: number[]): TensorInfo {
    return this.run('Transpose', { x }, { perm });
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return this.run('Reshape', { x }, { shape });
  }

  slice(x: TensorInfo, begin: number[], size: number[]): TensorInfo {
    const unchanged = begin.every((b) => b === 0) && size.every((s, i) => s === x.shape[i]);
    return unchanged ? x : this.run('Slice', { x }, { begin, size });
  }

  /** Takes `out` out of the scope: the caller (usually the engine) now owns it. */
  keep(out: TensorInfo): TensorInfo {
    const index = this.temporaries.lastIndexOf(out);
    if (index >= 0) this.temporaries.splice(index, 1);
    else this.backend.incRef(out.dataId); // an input passed through: give the caller its own reference
    return out;
  }

  dispose(): void {
    for (const t of this.temporaries) this.backend.disposeData(t.dataId);
    this.temporaries.length = 0;
  }
}

/** Runs `body` with a fresh scope and returns its kept result, freeing everything else. */
export function withScope(backend: BackendWasm, body: (scope: KernelScope) => TensorInfo): TensorInfo {
  const scope = new KernelScope(backend);
  try {
    return scope.keep(body(scope));
  } finally {
    scope.dispose();
  }
}
