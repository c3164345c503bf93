/**
 * AdamW (Loshchilov & Hutter, decoupled weight decay) as PyTorch's torch.optim.AdamW computes
 * it, which tfjs lacks: p *= 1 - lr * weightDecay, then Adam with the bias corrections
 * 1 - beta^t taken from the current betas (so that OneCycle may cycle beta1 as PyTorch's
 * OneCycleLR does, through `beta1`) and epsilon added after the corrected root:
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * Its state is the iteration count and m, v per variable (getWeights / setWeights): nothing is
 * derived from a running product, so a restored optimizer continues bit for bit.
 */
import * as tf from '@tensorflow/tfjs-core';

type NamedTensor = { name: string; tensor: tf.Tensor };

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  weightDecay: number;
  /** PyTorch's default 1e-8. */
  epsilon?: number;
}

interface Slot {
  originalName: string;
  variable: tf.Variable;
}

export class AdamW extends tf.Optimizer {
  static get className(): string {
    return 'AdamW';
  }

  learningRate: number;
  /** The current beta1 (OneCycle sets it before each step). */
  beta1: number;
  readonly beta2: number;
  readonly weightDecay: number;
  readonly epsilon: number;
  private firstMoments: Slot[] = [];
  private secondMoments: Slot[] = [];

  constructor(options: AdamWOptions) {
    super();
    this.learningRate = options.lr;
    this.beta1 = options.beta1;
    this.beta2 = options.beta2;
    this.weightDecay = options.weightDecay;
    this.epsilon = options.epsilon ?? 1e-8;
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const names = Array.isArray(variableGradients) ? variableGradients.map((v) => v.name) : Object.keys(variableGradients);
    const t = this.iterations + 1;
    const stepSize = this.learningRate / (1 - this.beta1 ** t);
    const rootCorrection = Math.sqrt(1 - this.beta2 ** t);
    tf.tidy(() => {
      names.forEach((name, i) => {
        const value = tf.engine().registeredVariables[name];
        this.firstMoments[i] ??= { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        this.secondMoments[i] ??= { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        const gradient = Array.isArray(variableGradients) ? variableGradients[i].tensor : variableGradients[name];
        if (gradient == null) return;
        const m = this.firstMoments[i].variable;
        const v = this.secondMoments[i].variable;
        const decayed = tf.mul(value, 1 - this.learningRate * this.weightDecay);
        const newM = tf.add(tf.mul(m, this.beta1), tf.mul(gradient, 1 - this.beta1));
        const newV = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(gradient), 1 - this.beta2));
        m.assign(newM);
        v.assign(newV);
        const denominator = tf.add(tf.div(tf.sqrt(newV), rootCorrection), this.epsilon);
        value.assign(tf.sub(decayed, tf.mul(tf.div(newM, denominator), stepSize)));
      });
    });
    this.incrementIterations();
  }

  override dispose(): void {
    tf.dispose([...this.firstMoments, ...this.secondMoments].map((s) => s.variable));
    this.firstMoments = [];
    this.secondMoments = [];
  }

  override async getWeights(): Promise<NamedTensor[]> {
    const slots = [...this.firstMoments, ...this.secondMoments];
    return [await this.saveIterations(), ...slots.map((s) => ({ name: s.originalName, tensor: s.variable }))];
  }

  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const values = await this.extractIterations(weightValues);
    const half = values.length / 2;
    const slot = (w: NamedTensor): Slot => ({ originalName: w.name, variable: w.tensor.variable(false) });
    this.firstMoments = values.slice(0, half).map(slot);
    this.secondMoments = values.slice(half).map(slot);
  }

  getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, beta1: this.beta1, beta2: this.beta2, weightDecay: this.weightDecay, epsilon: this.epsilon };
  }
}
