/**
 * Trains one model alone on Fashion-MNIST in this process: the first real run of Cohort and the
 * baseline every distillation method is compared with. Prints progress lines through `log`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { openDataset } from '../data/datasets.js';
import { referenceCnn } from '../models/reference-cnn.js';
import { topKAccuracy, type MetricSummary } from '../metrics/index.js';
import { evaluate } from './evaluate.js';
import { setDropoutStep } from '../models/seeded-dropout.js';
import { trainStep } from './train-step.js';

export interface TrainSingleOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  /** Use only the first N training samples of the epoch order (smoke tests); all when undefined. */
  trainLimit?: number;
  dataDir?: string;
  cacheDir?: string;
  /** Print a progress line every this many steps. */
  logEvery: number;
}

export interface TrainSingleResult {
  test: MetricSummary;
  steps: number;
  seconds: number;
  imagesPerSecond: number;
}

function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export async function trainSingle(options: TrainSingleOptions, log: (line: string) => void): Promise<TrainSingleResult> {
  const { epochs, batchSize, learningRate, seed, logEvery } = options;
  const dataset = await openDataset({ name: 'fashion-mnist', dataDir: options.dataDir, cacheDir: options.cacheDir }, log);
  const train = dataset.loader({ split: 'train', batchSize, seed, limit: options.trainLimit });
  const testSet = dataset.loader({ split: 'test', batchSize: 1000, seed });
  const stepsPerEpoch = train.batchesPerEpoch;
  const totalSteps = stepsPerEpoch * epochs;
  log(`train: ${train.size} images x ${epochs} epoch(s), batch ${batchSize}, ${totalSteps} steps; test: ${testSet.size} images`);

  const model = referenceCnn({ seed });
  const optimizer = tf.train.adam(learningRate);
  const started = performance.now();
  let step = 0;
  let seen = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    let lossSum = 0;
    let correct = 0;
    let count = 0;
    for await (const batch of train.epoch(epoch)) {
      const b = batch.batch;
      const images = tf.tensor4d(batch.images, batch.shape);
      const labels = tf.tensor1d(batch.labels, 'int32');
      setDropoutStep(step);
      const { loss, logits } = trainStep(model, optimizer, images, labels);
      const hits = topKAccuracy(logits, labels, 1);
      lossSum += (await loss.data())[0] * batch.labels.length;
      correct += (await hits.data())[0] * batch.labels.length;
      count += batch.labels.length;
      tf.dispose([images, labels, loss, logits, hits]);
      step++;
      seen += batch.labels.length;
      if (step % logEvery === 0 || b === stepsPerEpoch - 1) {
        const elapsed = (performance.now() - started) / 1000;
        const rate = seen / elapsed;
        const eta = ((totalSteps - step) * elapsed) / step;
        log(
          `epoch ${epoch + 1}/${epochs} step ${b + 1}/${stepsPerEpoch} | ${rate.toFixed(0)} img/s | ` +
            `loss ${(lossSum / count).toFixed(4)} | acc ${((100 * correct) / count).toFixed(2)}% | ETA ${formatDuration(eta)}`,
        );
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const test = await evaluate(model, testSet);
  log(`test: accuracy ${(100 * test.accuracy).toFixed(2)}% | loss ${test.nll.toFixed(4)} | ` + `ECE ${(100 * test.calibration.ece).toFixed(2)}% | ${test.count} images`);
  model.dispose();
  optimizer.dispose();
  return { test, steps: step, seconds, imagesPerSecond: seen / seconds };
}
