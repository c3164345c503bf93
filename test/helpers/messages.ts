/** Protocol messages built by hand for tests that drive the coordinator (or its parts). */
import type { MessageOf } from '../../shared/protocol/messages.js';

/** A predictions message of step `step` (batch `step` of epoch 0): `probs` row by row, one row per index. */
export function predictionsMessage(
  step: number,
  indices: readonly number[],
  probs: ArrayLike<number>,
  negEntropy: number,
  extra: Partial<MessageOf<'predictions'>> = {},
): MessageOf<'predictions'> {
  return {
    type: 'predictions',
    step,
    epoch: 0,
    batch: step,
    indices: { dtype: 'uint32', shape: [indices.length], data: Uint32Array.from(indices) },
    probs: { dtype: 'float32', shape: [indices.length, probs.length / indices.length], data: Float32Array.from(probs) },
    negEntropy,
    ...extra,
  };
}
