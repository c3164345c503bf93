/**
 * A model's weights on disk: `weights.json` (each weight's name and shape, in model order) and
 * `weights.bin` (their float32 values, concatenated, little-endian), both written atomically.
 * Read with `await data()`, so GPU backends are not blocked. Used for a member's final weights,
 * for teachers that load a trained member, and by `cohort eval`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { CohortError } from '../errors.js';
import { writeFileAtomic } from './atomic-write.js';

export interface WeightManifest {
  format: 'cohort-weights-1';
  weights: { name: string; shape: number[] }[];
}

export async function saveWeights(model: tfl.LayersModel, dir: string): Promise<void> {
  const weights = model.weights.map((w) => w.read());
  const values = await Promise.all(weights.map((w) => w.data()));
  const total = values.reduce((n, v) => n + v.length, 0);
  const bin = new Float32Array(total);
  let offset = 0;
  for (const v of values) {
    bin.set(v as Float32Array, offset);
    offset += v.length;
  }
  const manifest: WeightManifest = { format: 'cohort-weights-1', weights: model.weights.map((w) => ({ name: w.originalName, shape: w.shape as number[] })) };
  writeFileAtomic(join(dir, 'weights.bin'), new Uint8Array(bin.buffer));
  writeFileAtomic(join(dir, 'weights.json'), Buffer.from(`${JSON.stringify(manifest, null, 1)}\n`));
}

/** The saved values of each weight, by position, checked against `model`'s weight shapes. */
export function readWeights(dir: string, model?: tfl.LayersModel): { manifest: WeightManifest; values: Float32Array[] } {
  const [jsonPath, binPath] = [join(dir, 'weights.json'), join(dir, 'weights.bin')];
  if (!existsSync(jsonPath) || !existsSync(binPath)) throw new CohortError(`no saved weights in ${dir} (expected weights.json and weights.bin)`);
  const manifest = JSON.parse(readFileSync(jsonPath, 'utf8')) as WeightManifest;
  if (manifest.format !== 'cohort-weights-1') throw new CohortError(`${jsonPath}: unknown format '${String(manifest.format)}'`);
  const bytes = readFileSync(binPath);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const values: Float32Array[] = [];
  let offset = 0;
  for (const w of manifest.weights) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    values.push(all.subarray(offset, offset + n));
    offset += n;
  }
  if (offset !== all.length) throw new CohortError(`${binPath}: ${all.length} values, the manifest describes ${offset}`);
  if (model) {
    if (model.weights.length !== manifest.weights.length) throw new CohortError(`${dir}: ${manifest.weights.length} saved weights, the model has ${model.weights.length}`);
    model.weights.forEach((w, i) => {
      if (w.shape.join('x') !== manifest.weights[i].shape.join('x')) {
        throw new CohortError(`${dir}: weight ${i} (${manifest.weights[i].name}) has shape ${manifest.weights[i].shape.join('x')}, the model's ${w.originalName} ${w.shape.join('x')}`);
      }
    });
  }
  return { manifest, values };
}

export function loadWeights(model: tfl.LayersModel, dir: string): void {
  const { values } = readWeights(dir, model);
  model.weights.forEach((w, i) => {
    const t = tf.tensor(values[i], w.shape as number[]);
    w.write(t);
    t.dispose();
  });
}
