/**
 * A single-process replay of a DML cohort for the tests, with the workers' own arithmetic:
 * each member's probabilities at temperature T (temperedPredictions), the coordinator's float64
 * sums and leave-one-out means (PredictionSums), and the member's objective (objectiveFor). Long
 * runs need this: DML training amplifies rounding differences (wasm and cpu references drift
 * 3e-2 apart in 60 steps), so only the same operations in the same order reproduce a
 * distributed run; the K-1 tensor losses are checked against it in cohort-equivalence.test.ts.
 *
 * An optional absence replays the elastic recovery policy: one member is left out of the cohort
 * for steps [from, until) (its peers average over the others, it is not updated), then restored
 * to the state it had after `restoreStep` steps (its last checkpoint) and trained from `until`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { PredictionSums } from '../../coordinator/teaching.js';
import type { RunConfig } from '../../shared/config/run-config.js';
import { openDataset } from '../../shared/data/datasets.js';
import type { CohortModel } from '../../shared/models/index.js';
import { setDropoutStep } from '../../shared/models/seeded-dropout.js';
import { finalLogits, makeOptimizer, objectiveFor } from '../../shared/training/objective.js';
import { optimizerState, restoreOptimizerState } from '../../shared/training/optimizer-state.js';
import { temperedPredictions } from '../../shared/training/predictions.js';
import { buildWorkerModel } from '../../worker/run-worker.js';

export interface Absence {
  member: string;
  /** The first step served without it. */
  from: number;
  /** The step at which it is back (the number of steps: back after the end). */
  until: number;
  /** The step of the checkpoint it restores when back (<= from). */
  restoreStep: number;
}

interface Snapshot {
  weights: tf.Tensor[];
  optimizer: { name: string; tensor: tf.Tensor }[];
}

/** The members' final weights, in config order, after every step of the run's epochs. */
export async function dmlReplayWeights(config: RunConfig, absence?: Absence): Promise<Float32Array[][]> {
  const dataset = await openDataset(config.dataset);
  const train = dataset.loader({ split: 'train', batchSize: config.batchSize, seed: config.seed, limit: config.trainLimit });
  const members: CohortModel[] = config.members.map((w, i) => buildWorkerModel(config, w, i, train.imageShape, dataset.classNames.length));
  const optimizers = config.members.map((m) => makeOptimizer(m.optimizer));
  const objective = objectiveFor(config);
  const away = absence ? config.members.findIndex((m) => m.name === absence.member) : -1;
  let snapshot: Snapshot | undefined;
  const restore = async () => {
    members[away].model.setWeights(snapshot!.weights);
    await restoreOptimizerState(optimizers[away], snapshot!.optimizer);
  };
  let step = 0;
  for (let epoch = 0; epoch < config.epochs; epoch++) {
    for await (const batch of train.epoch(epoch)) {
      if (absence && step === absence.restoreStep) {
        snapshot = { weights: members[away].model.weights.map((w) => w.read().clone()), optimizer: await optimizerState(optimizers[away]) };
      }
      if (absence && step === absence.until) await restore();
      const live = members.map((_, i) => !(absence && i === away && step >= absence.from && step < absence.until));
      setDropoutStep(step);
      const x = tf.tensor4d(batch.images, batch.shape);
      const y = tf.tensor1d(batch.labels, 'int32');
      const forward = (m: CohortModel) => m.model.apply(x, { training: true }) as tf.Tensor;
      // What each live member sends: softmax(z / T) and its batch-mean negative entropy, from a
      // forward pass under a gradient tape as in the worker (tfjs fuses bias and activation into
      // the matmul only outside one, which rounds differently once biases are non-zero).
      const sent = await Promise.all(
        members.map(async (m, i) => {
          if (!live[i]) return undefined;
          let predictions!: { probs: tf.Tensor2D; negEntropy: tf.Scalar };
          const taped = tf.variableGrads(() => {
            const logits = finalLogits(forward(m), m.exits);
            predictions = temperedPredictions(logits, config.temperature);
            tf.keep(predictions.probs);
            tf.keep(predictions.negEntropy);
            return tf.sum(logits) as tf.Scalar;
          });
          tf.dispose([taped.value, ...Object.values(taped.grads)]);
          const { probs, negEntropy } = predictions;
          const out = { probs: (await probs.data()) as Float32Array, negEntropy: (await negEntropy.data())[0] };
          tf.dispose([probs, negEntropy]);
          return out;
        }),
      );
      const sums = new PredictionSums(sent.find((s) => s)!.probs.length);
      for (const s of sent) if (s) sums.add(s.probs, s.negEntropy);
      for (const [i, m] of members.entries()) {
        const own = sent[i];
        if (!own) continue;
        const peers = sums.leaveOneOut(own.probs, own.negEntropy);
        const teaching = { probs: tf.tensor2d(peers.meanProbs, [batch.labels.length, own.probs.length / batch.labels.length]), peerNegEntropy: peers.meanNegEntropy };
        const vars = m.model.trainableWeights.map((w) => w.read() as tf.Variable);
        const { value, grads } = tf.variableGrads(() => objective.loss(forward(m), y, teaching), vars);
        optimizers[i].applyGradients(grads);
        tf.dispose([value, teaching.probs, ...Object.values(grads)]);
      }
      tf.dispose([x, y]);
      step++;
    }
  }
  if (absence && absence.until >= step) await restore();
  const weights = await Promise.all(members.map((m) => Promise.all(m.model.weights.map(async (w) => (await w.read().data()) as Float32Array))));
  for (const m of members) m.model.dispose();
  if (snapshot) tf.dispose([...snapshot.weights, ...snapshot.optimizer.map((n) => n.tensor)]);
  return weights;
}
