/**
 * An ONNX model as a forward-only teacher: the worker's batches (NHWC, normalised the dataset's
 * way) are re-normalised to the model's own mean and std, laid out as it wants them (NCHW for
 * models exported from PyTorch) and run through onnxruntime-node on its CPU execution provider;
 * the first output is the logits. onnxruntime-node is an optional dependency (its CPU binary
 * ships inside the npm package), loaded only when a run has an ONNX teacher.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-node';
import type { OnnxInput } from '../shared/config/onnx-teacher.js';
import type { Normalization } from '../shared/data/batch.js';
import { CohortError } from '../shared/errors.js';

type Ort = typeof import('onnxruntime-node');

async function loadOrt(): Promise<Ort> {
  try {
    return await import('onnxruntime-node');
  } catch (error) {
    throw new CohortError(
      `ONNX teachers need onnxruntime-node, which is not installed or does not load here (${(error as Error).message.split('\n')[0]}); npm install onnxruntime-node`,
      { code: 'BACKEND_NOT_INSTALLED', cause: error },
    );
  }
}

/** Per-channel a, b so that the model's input is x * a + b for the dataset's normalised x. */
export function renormalization(from: Normalization, to: Pick<OnnxInput, 'mean' | 'std'>, channels: number): { scale: number[]; shift: number[] } {
  const pick = (v: number | readonly number[], c: number) => (typeof v === 'number' ? v : v[c]);
  const scale: number[] = [];
  const shift: number[] = [];
  for (let c = 0; c < channels; c++) {
    const [mean, std] = to.mean && to.std ? [to.mean[c], to.std[c]] : [pick(from.mean, c), pick(from.std, c)];
    // pixel01 = x * stdFrom + meanFrom; input = (pixel01 - mean) / std
    scale.push(pick(from.std, c) / std);
    shift.push((pick(from.mean, c) - mean) / std);
  }
  return { scale, shift };
}

export interface OnnxTeacherOptions {
  /** The ONNX file. */
  path: string;
  input: OnnxInput;
  /** How the dataset normalises its images. */
  normalization: Normalization;
  /** [height, width, channels] of the batches. */
  imageShape: [number, number, number];
  classes: number;
  /** The teacher's name, for errors. */
  name: string;
  /** Try onnxruntime's WebGPU execution provider first (the worker is on a hardware GPU adapter). */
  gpu?: boolean;
}

/** Which execution provider an ONNX teacher ran on, and why not the GPU when it was asked for. */
export interface OnnxPlacement {
  provider: 'webgpu' | 'cpu';
  /** Why the WebGPU provider was not used, when it was tried. */
  fallback?: string;
}

/**
 * The execution providers to try: onnxruntime's WebGPU provider (its own Dawn, on the same
 * Vulkan driver) only where the worker's own backend is webgpu on a hardware adapter; never on a
 * software adapter, as with tfjs.
 */
export function onnxProviders(backend: { choice: string; adapter?: { software: boolean } }): ('webgpu' | 'cpu')[] {
  return backend.choice === 'webgpu' && backend.adapter && !backend.adapter.software ? ['webgpu', 'cpu'] : ['cpu'];
}

export class OnnxTeacher {
  private constructor(
    private readonly ort: Ort,
    private readonly session: InferenceSession,
    private readonly o: OnnxTeacherOptions,
    private readonly scale: tf.Tensor1D,
    private readonly shift: tf.Tensor1D,
    readonly placement: OnnxPlacement,
  ) {}

  /**
   * Opens the model: on onnxruntime's WebGPU provider when `gpu` and it can get an adapter (it
   * fails as a whole without one: then CPU, saying why), otherwise on the CPU provider. A missing
   * or unreadable file or a wrong channel count is a CohortError.
   */
  static async open(o: OnnxTeacherOptions): Promise<OnnxTeacher> {
    const ort = await loadOrt();
    const channels = o.imageShape[2];
    if (o.input.mean && o.input.mean.length !== channels) {
      throw new CohortError(`teacher ${o.name}: input.mean has ${o.input.mean.length} values for ${channels}-channel images`, { code: 'CONFIG_INVALID' });
    }
    let session: InferenceSession | undefined;
    let placement: OnnxPlacement = { provider: 'cpu' };
    if (o.gpu) {
      try {
        session = await ort.InferenceSession.create(o.path, { executionProviders: ['webgpu', 'cpu'] });
        placement = { provider: 'webgpu' };
      } catch (error) {
        placement = { provider: 'cpu', fallback: (error as Error).message.split('\n')[0] };
      }
    }
    try {
      session ??= await ort.InferenceSession.create(o.path, { executionProviders: ['cpu'] });
    } catch (error) {
      throw new CohortError(`teacher ${o.name}: cannot open ONNX model ${o.path}: ${(error as Error).message.split('\n')[0]}`, { code: 'FILE_UNREADABLE', cause: error });
    }
    const { scale, shift } = renormalization(o.normalization, o.input, channels);
    return new OnnxTeacher(ort, session, o, tf.tensor1d(scale), tf.tensor1d(shift), placement);
  }

  /** The model's input tensor for an NHWC batch of the dataset. */
  private async input(x: tf.Tensor4D): Promise<OrtTensor> {
    const prepared = tf.tidy(() => {
      const y = tf.add(tf.mul(x, this.scale), this.shift);
      return this.o.input.layout === 'NCHW' ? tf.transpose(y, [0, 3, 1, 2]) : y;
    });
    const data = (await prepared.data()) as Float32Array;
    const dims = prepared.shape;
    prepared.dispose();
    return new this.ort.Tensor('float32', data, dims);
  }

  /** Eval-mode logits of an NHWC batch, [batch, classes]. */
  async logits(x: tf.Tensor4D): Promise<tf.Tensor2D> {
    const feeds = { [this.session.inputNames[0]]: await this.input(x) };
    let output: OrtTensor;
    try {
      output = (await this.session.run(feeds))[this.session.outputNames[0]];
    } catch (error) {
      throw new CohortError(
        `teacher ${this.o.name}: ONNX model ${this.o.path} failed on a ${x.shape.join('x')} batch (${this.o.input.layout}): ${(error as Error).message.split('\n')[0]}`,
        { code: 'MODEL_INVALID', cause: error },
      );
    }
    const dims = output.dims as number[];
    if (dims.length !== 2 || dims[0] !== x.shape[0] || dims[1] !== this.o.classes) {
      throw new CohortError(
        `teacher ${this.o.name}: ONNX model ${this.o.path} outputs [${dims.join(', ')}], expected [${x.shape[0]}, ${this.o.classes}] (batch, the dataset's classes)`,
        { code: 'MODEL_INVALID' },
      );
    }
    const logits = tf.tensor2d(output.data as Float32Array, [dims[0], dims[1]]);
    output.dispose();
    return logits;
  }

  async dispose(): Promise<void> {
    tf.dispose([this.scale, this.shift]);
    await this.session.release();
  }
}

/** The ONNX teacher a worker config names, opened for `dataset`'s batches; undefined for zoo models. */
export async function openOnnxTeacher(
  worker: { name: string; onnx?: string; input?: OnnxInput },
  dataset: { normalization: Normalization; classNames: readonly string[] },
  imageShape: [number, number, number],
  log: (line: string) => void,
  backend: { choice: string; adapter?: { software: boolean } } = { choice: 'cpu' },
): Promise<OnnxTeacher | undefined> {
  if (worker.onnx === undefined) return undefined;
  const teacher = await OnnxTeacher.open({
    gpu: onnxProviders(backend)[0] === 'webgpu',
    path: worker.onnx,
    input: worker.input ?? { layout: 'NCHW' },
    normalization: dataset.normalization,
    imageShape,
    classes: dataset.classNames.length,
    name: worker.name,
  });
  const { provider, fallback } = teacher.placement;
  log(`${worker.name}: ONNX model ${worker.onnx} on onnxruntime's ${provider === 'webgpu' ? 'WebGPU' : 'CPU'} provider${fallback ? ` (WebGPU failed: ${fallback})` : ''}`);
  return teacher;
}
