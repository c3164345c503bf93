/**
 * Identity for the wasm backend without a copy. The engine clones every tensor it saves for the
 * backward pass through this kernel; the backend's own version copies the data (three copies of
 * the first conv layer's activations per step), while tensors are immutable, so sharing the
 * heap buffer by reference count is enough, as the backend's Reshape and the cpu backend do.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export function sharedIdentity({ inputs, backend }: { inputs: Record<string, TensorInfo>; backend: BackendWasm }): TensorInfo {
  const { x } = inputs;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}
