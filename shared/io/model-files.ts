/**
 * A model's weights on disk in the tfjs layers format, so that `tf.loadLayersModel` can read
 * them directly: `model.json` (topology and weights manifest) and `weights.bin`, each written
 * atomically, model.json last. Cohort itself rebuilds models from their config and loads only
 * the weights, checking names and shapes. Weights are read with `await data()` (tfjs's
 * encodeWeights), so GPU backends are not blocked. Also holds any other named tensors (an
 * optimizer's state) in the same manifest + binary form.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { CohortError } from '../errors.js';
import { writeFileAtomic } from './atomic-write.js';

/** A named tensor, as optimizers' getWeights() return them. */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

const bytesOf = (data: tf.io.WeightData): Uint8Array => new Uint8Array(tf.io.CompositeArrayBuffer.join(data));

/** Writes `model.json` + `weights.bin` (the tfjs layers format) into `dir`. */
export async function saveModel(model: tfl.LayersModel, dir: string): Promise<void> {
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      writeFileAtomic(join(dir, 'weights.bin'), bytesOf(artifacts.weightData ?? new ArrayBuffer(0)));
      const json: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology as object,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }],
      };
      writeFileAtomic(join(dir, 'model.json'), Buffer.from(JSON.stringify(json)));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
}

/** Reads the named tensors of a `NAME.json` manifest + its binary in `dir`. */
function readNamed(dir: string, manifestFile: string): { specs: tf.io.WeightsManifestEntry[]; tensors: tf.NamedTensorMap } {
  const manifestPath = join(dir, manifestFile);
  if (!existsSync(manifestPath)) throw new CohortError(`no saved weights in ${dir} (${manifestFile} is missing)`, { code: 'FILE_UNREADABLE' });
  let json: { weightsManifest?: tf.io.WeightsManifestConfig };
  try {
    json = JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch (error) {
    throw new CohortError(`${manifestPath}: not valid JSON (${(error as Error).message})`, { code: 'FILE_UNREADABLE', cause: error });
  }
  const group = json.weightsManifest?.[0];
  if (!group || group.paths.length !== 1) throw new CohortError(`${manifestPath}: expected one weights group with one file`, { code: 'FILE_UNREADABLE' });
  const binPath = join(dir, group.paths[0]);
  if (!existsSync(binPath)) throw new CohortError(`${binPath} is missing`, { code: 'FILE_UNREADABLE' });
  const bytes = readFileSync(binPath);
  const expected = group.weights.reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1) * (w.dtype === 'float32' || w.dtype === 'int32' ? 4 : 1), 0);
  if (bytes.byteLength !== expected) throw new CohortError(`${binPath}: ${bytes.byteLength} bytes, the manifest describes ${expected}`, { code: 'FILE_UNREADABLE' });
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return { specs: group.weights, tensors: tf.io.decodeWeights(buffer, group.weights) };
}

/** Sets `model`'s weights from `dir`/model.json + weights.bin; names and shapes must match. */
export function loadModelWeights(model: tfl.LayersModel, dir: string): void {
  const { specs, tensors } = readNamed(dir, 'model.json');
  try {
    if (specs.length !== model.weights.length) throw new CohortError(`${dir}: ${specs.length} saved weights, the model has ${model.weights.length}`, { code: 'WEIGHTS_MISMATCH' });
    model.weights.forEach((w, i) => {
      const t = tensors[specs[i].name];
      if (t.shape.join('x') !== w.shape.join('x')) {
        throw new CohortError(`${dir}: saved weight ${specs[i].name} has shape ${t.shape.join('x')}, the model's ${w.originalName} ${w.shape.join('x')}`, {
          code: 'WEIGHTS_MISMATCH',
        });
      }
      w.write(t);
    });
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

/** Writes named tensors as `NAME.json` (manifest) + `NAME.bin`. */
export async function saveNamedTensors(tensors: NamedTensor[], dir: string, name: string): Promise<void> {
  const { data, specs } = await tf.io.encodeWeights(tensors);
  writeFileAtomic(join(dir, `${name}.bin`), bytesOf(data));
  writeFileAtomic(join(dir, `${name}.json`), Buffer.from(JSON.stringify({ weightsManifest: [{ paths: [`${name}.bin`], weights: specs }] })));
}

/** Reads `NAME.json` + `NAME.bin` back as named tensors, in saved order (the caller disposes them). */
export function loadNamedTensors(dir: string, name: string): NamedTensor[] {
  const { specs, tensors } = readNamed(dir, `${name}.json`);
  return specs.map((s) => ({ name: s.name, tensor: tensors[s.name] }));
}

/** The saved weights of `dir`/model.json in saved order, as plain arrays (for comparisons and tools). */
export async function readSavedWeights(dir: string): Promise<{ name: string; shape: number[]; values: Float32Array }[]> {
  const { specs, tensors } = readNamed(dir, 'model.json');
  try {
    return await Promise.all(specs.map(async (s) => ({ name: s.name, shape: s.shape, values: (await tensors[s.name].data()) as Float32Array })));
  } finally {
    tf.dispose(Object.values(tensors));
  }
}
