/**
 * Records the kernels a computation runs (forward and backward: gradients run kernels too),
 * with their inputs, attributes and outputs, so that each can be replayed on another backend
 * with the same operands. Tests only: inputs are read synchronously on the backend that ran them.
 */
import * as tf from '@tensorflow/tfjs-core';

export interface KernelCall {
  name: string;
  /** Kernels such as AddN and Concat take an array of tensors instead of named ones. */
  arrayInputs: boolean;
  inputs: Record<string, { shape: number[]; dtype: tf.DataType; values: tf.TypedArray }>;
  attrs: Record<string, unknown>;
  outputs: { shape: number[]; dtype: tf.DataType; values: tf.TypedArray }[];
}

type RunKernel = (name: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap) => tf.Tensor | tf.Tensor[];

const snapshot = (t: tf.Tensor) => ({ shape: t.shape.slice(), dtype: t.dtype, values: t.dataSync().slice() as tf.TypedArray });

/** A call's identity for de-duplication: kernel, operand shapes and dtypes, attributes. */
export function callKey(call: Pick<KernelCall, 'name' | 'inputs' | 'attrs'>): string {
  const inputs = Object.entries(call.inputs).map(([k, v]) => `${k}:${v.dtype}[${v.shape.join(',')}]`);
  return `${call.name}(${inputs.join(' ')}) ${JSON.stringify(call.attrs)}`;
}

/**
 * Runs `f` and returns its result and every distinct kernel call it made (the first of each
 * callKey). Kernels nested inside another kernel's implementation are recorded too.
 */
export function traceKernels<T>(f: () => T): { result: T; calls: KernelCall[] } {
  const engine = tf.engine() as unknown as { runKernel: RunKernel };
  const original = engine.runKernel;
  const seen = new Map<string, KernelCall>();
  engine.runKernel = function (name, inputs, attrs) {
    const out = original.call(this, name, inputs, attrs);
    const recorded = {
      name,
      arrayInputs: Array.isArray(inputs),
      inputs: Object.fromEntries(
        Object.entries(inputs)
          .filter(([, t]) => t != null)
          .map(([k, t]) => [k, snapshot(t as tf.Tensor)]),
      ),
      attrs: { ...(attrs ?? {}) } as Record<string, unknown>,
    };
    const key = callKey(recorded);
    if (!seen.has(key)) seen.set(key, { ...recorded, outputs: (Array.isArray(out) ? out : [out]).map(snapshot) });
    return out;
  };
  try {
    return { result: f(), calls: [...seen.values()] };
  } finally {
    engine.runKernel = original;
  }
}

/** Runs one recorded call on the current backend; returns its outputs' values. */
export async function replay(call: KernelCall): Promise<tf.TypedArray[]> {
  const engine = tf.engine() as unknown as { runKernel: RunKernel };
  const named = Object.fromEntries(Object.entries(call.inputs).map(([k, v]) => [k, tf.tensor(v.values, v.shape, v.dtype)]));
  const inputs = call.arrayInputs ? (Object.values(named) as unknown as tf.NamedTensorMap) : named;
  const out = engine.runKernel(call.name, inputs, call.attrs as tf.NamedAttrMap);
  const outs = Array.isArray(out) ? out : [out];
  const values = await Promise.all(outs.map((t) => t.data()));
  tf.dispose([...Object.values(named), ...outs]);
  return values;
}
