/**
 * Gradients of a loss whose computation awaits in the middle: a distributed cohort member runs
 * its forward pass, sends the logits, awaits its peers' teaching signal, and only then builds
 * the loss. `tf.variableGrads` needs the whole computation in one synchronous function, so this
 * keeps tfjs's gradient tape open across the await (as PyTorch keeps its graph), then
 * backpropagates with the public `tf.variableGrads`, which records onto the open tape.
 *
 * It touches two private members of the tfjs engine (`startTape` / `endTape`, and the tape's
 * saved tensors for clean-up), pinned by the tfjs-core version in package.json and covered by
 * tests that compare with `tf.variableGrads`. While the await is pending, no other code in the
 * process may run tensor operations: they would be recorded on the tape and freed with the
 * step's intermediates. A cohort worker does one step at a time, so nothing else runs.
 */
import * as tf from '@tensorflow/tfjs-core';

interface TapeEngine {
  startTape(): void;
  endTape(): void;
  state: { gradientDepth: number; activeTape: { saved?: tf.Tensor[] }[] | null };
}

export interface AsyncGrads {
  value: tf.Scalar;
  grads: tf.NamedTensorMap;
}

/**
 * Like `tf.variableGrads(f, varList)` (all trainable variables when varList is omitted), but `f`
 * may await. Intermediate tensors of `f` are disposed; the value and the gradients are the
 * caller's to dispose.
 */
export async function asyncVariableGrads(f: () => Promise<tf.Scalar>, varList?: tf.Variable[]): Promise<AsyncGrads> {
  const engine = tf.engine() as unknown as TapeEngine;
  if (engine.state.gradientDepth !== 0) throw new Error('asyncVariableGrads cannot be nested inside another gradient computation');
  let result: AsyncGrads | undefined;
  engine.startTape();
  tf.engine().startScope('asyncVariableGrads');
  try {
    const loss = await f();
    // Records nothing new: `() => loss` returns the loss built on the open tape above, and
    // variableGrads backpropagates through every node recorded since startTape.
    result = tf.variableGrads(() => loss, varList);
  } finally {
    tf.engine().endScope(result ? [result.value, ...Object.values(result.grads)] : undefined);
    engine.endTape();
    for (const node of engine.state.activeTape ?? []) for (const t of node.saved ?? []) t.dispose();
    engine.state.activeTape = null;
  }
  return result;
}
