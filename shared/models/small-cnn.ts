/**
 * Small CNNs for 28x28 grey images (Fashion-MNIST), in two sizes for teacher/student
 * experiments. 'same' padding, so the same networks also take the 14x14 inputs of a
 * cross-quality student. Outputs logits.
 *   teacher: conv3x3(32)-pool, conv3x3(64)-pool, conv3x3(128)-pool, dense(256), dropout, dense
 *   student: conv3x3(16)-pool, conv3x3(32)-pool, dense(64), dense
 * (ReLU after every conv and hidden dense; 2x2 max-pooling.)
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { seededInitializers } from './initializers.js';
import { seededDropout } from './seeded-dropout.js';

export interface SmallCnnOptions {
  inputShape: [number, number, number];
  classes: number;
  /** Filters of each conv3x3-relu-maxpool2 block. */
  filters: readonly number[];
  hidden: number;
  /** Dropout before the classifier. */
  dropout: number;
  /** The max-pools' padding (default 'valid': odd sides are floored). */
  pooling?: 'valid' | 'same';
  seed?: number;
  name: string;
}

export const CNN_TEACHER = { filters: [32, 64, 128], hidden: 256, dropout: 0.3 } as const;
export const CNN_STUDENT = { filters: [16, 32], hidden: 64, dropout: 0 } as const;

export function smallCnn(o: SmallCnnOptions): tfl.Sequential {
  const seeds = seededInitializers(o.seed);
  const init = seeds.glorot;
  const layers: tfl.layers.Layer[] = [];
  o.filters.forEach((filters, i) => {
    layers.push(
      tfl.layers.conv2d({
        ...(i === 0 ? { inputShape: o.inputShape } : {}),
        filters,
        kernelSize: 3,
        padding: 'same',
        activation: 'relu',
        kernelInitializer: init(),
      }),
      tfl.layers.maxPooling2d({ poolSize: 2, padding: o.pooling ?? 'valid' }),
    );
  });
  layers.push(tfl.layers.flatten(), tfl.layers.dense({ units: o.hidden, activation: 'relu', kernelInitializer: init() }));
  if (o.dropout > 0) layers.push(seededDropout({ rate: o.dropout, seed: seeds.dropoutSeed() }));
  layers.push(tfl.layers.dense({ units: o.classes, kernelInitializer: init() }));
  return tfl.sequential({ name: o.name, layers });
}
