/**
 * The building blocks every distillation loss shares: tempered (log-)softmax, a gradient stop
 * for teaching signals, and the batch-mean KL divergence, all numerically stable (log-softmax,
 * never log of a softmax; 0 * log 0 = 0).
 */
import * as tf from '@tensorflow/tfjs-core';

/** log softmax(z / T), row-wise. */
export function logSoftmaxT(logits: tf.Tensor2D, T = 1): tf.Tensor2D {
  return tf.tidy(() => tf.logSoftmax(T === 1 ? logits : tf.div(logits, T)) as tf.Tensor2D);
}

/** softmax(z / T), row-wise, computed as exp(log softmax). */
export function softmaxT(logits: tf.Tensor2D, T = 1): tf.Tensor2D {
  return tf.tidy(() => tf.exp(logSoftmaxT(logits, T)));
}

/**
 * The identity in the forward pass, zero gradient in the backward pass (PyTorch's `detach`):
 * a teaching signal must not be trained towards its student.
 */
export const stopGradient = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const x = inputs[0] as tf.Tensor;
  return { value: tf.clone(x), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
}) as <T extends tf.Tensor>(x: T) => T;

/** sum_c p log p per row, with 0 log 0 = 0 (p given as probabilities). */
export function negativeEntropy(p: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => {
    const safe = tf.where(tf.greater(p, 0), p, tf.onesLike(p)); // log(1) = 0 where p = 0
    return tf.sum(tf.mul(p, tf.log(safe)), 1) as tf.Tensor1D;
  });
}

/** log p, with -Infinity where p = 0 (for teachers given as probabilities). */
export function logOf(p: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const positive = tf.greater(p, 0);
    return tf.where(positive, tf.log(tf.where(positive, p, tf.onesLike(p))), tf.fill(p.shape, -Infinity)) as tf.Tensor2D;
  });
}

/**
 * Batch mean of KL(softmax(a) || softmax(b)), for teacher logits `a` (or log-probabilities,
 * -Infinity where the teacher gives 0) and student logits `b`, both already divided by T.
 * The teacher is detached: the gradient is (softmax(b) - softmax(a)) / B for b, zero for a.
 *
 * Two float32 formulas, chosen per row:
 *  - in the soft regime (|d| <= 1 for every class, d = a - b - E_p[a - b], the usual case at
 *    high T), KL = E_p[d] - log1p(E_q[expm1(d)]): no large log-normaliser is subtracted from
 *    another, which would cost ~1e-4 relative accuracy when p and q are close;
 *  - otherwise the direct sum_c p_c (log p_c - log q_c), 0 log 0 = 0 (confident or
 *    disagreeing distributions, logits such as +-80, teachers with zero probabilities).
 * The forward pass is one custom-gradient node, so none of its intermediate operations
 * (comparisons have no gradient) reach the autodiff tape.
 */
export const klDivergence = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [a, b] = args as [tf.Tensor2D, tf.Tensor2D];
  const save = args[2] as tf.GradSaveFunc;
  const logP = tf.logSoftmax(a);
  const logQ = tf.logSoftmax(b);
  const p = tf.exp(logP);
  const q = tf.exp(logQ);
  const support = tf.greater(p, 0);
  const zeros = tf.zerosLike(p);
  const direct = tf.sum(tf.where(support, tf.mul(p, tf.sub(logP, logQ)), zeros), 1);
  const delta = tf.sub(a, b); // -Infinity where the teacher gives 0
  const finiteDelta = tf.where(support, delta, zeros);
  const d = tf.sub(delta, tf.sum(tf.mul(p, finiteDelta), 1, true));
  const isSoft = tf.lessEqual(tf.max(tf.abs(d), 1), 1);
  const clipped = tf.clipByValue(tf.where(support, d, zeros), -1, 1); // finite in both branches
  const soft = tf.sub(tf.sum(tf.mul(p, clipped), 1), tf.log1p(tf.sum(tf.mul(q, tf.expm1(clipped)), 1)));
  save([p, q]);
  return {
    value: tf.mean(tf.where(isSoft, soft, direct)),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [pSaved, qSaved] = saved;
      return [tf.zerosLike(pSaved), tf.mul(tf.sub(qSaved, pSaved), tf.div(dy, pSaved.shape[0]))];
    },
  };
}) as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Scalar;

/** Logits divided by the temperature. */
export function temper(logits: tf.Tensor2D, T: number): tf.Tensor2D {
  return T === 1 ? logits : (tf.div(logits, T) as tf.Tensor2D);
}

/** (1 - alpha) * hard + alpha * T^2 * soft: the blend every distillation loss ends with. */
export function blend(hard: tf.Scalar, soft: tf.Scalar, alpha: number, T: number): tf.Scalar {
  return tf.tidy(() => tf.add(tf.mul(hard, 1 - alpha), tf.mul(soft, alpha * T * T)) as tf.Scalar);
}
