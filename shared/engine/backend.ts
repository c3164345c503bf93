/**
 * Decides the tfjs backend of a process. `auto` prefers tfjs-node-gpu when it loads and a GPU
 * is visible, then tfjs-node, then the embedded wasm backend (made able to train convnets by
 * ./wasm-training). `--gpu N` pins the process to one GPU through CUDA_VISIBLE_DEVICES, which
 * must be set before TensorFlow's native library loads.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers'; // its node bundle registers tfjs-core's gradient functions (autodiff)
import { CohortError } from '../errors.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendOptions {
  backend: BackendChoice;
  /** Index of the GPU this process is pinned to (native GPU backend only). */
  gpu?: number;
}

export interface ActiveBackend {
  /** What was asked for. */
  requested: BackendChoice;
  /** What runs: one of the concrete choices. */
  choice: Exclude<BackendChoice, 'auto'>;
  /** The tfjs backend name ('tensorflow', 'wasm' or 'cpu'). */
  tfjsName: string;
  /** The device, in words, e.g. "GPU 1 (NVIDIA H100)" or "CPU (wasm, SIMD, 1 thread)". */
  device: string;
}

const NATIVE_PACKAGES = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
} as const;

const INSTALL_HINT = {
  'tensorflow-gpu':
    'npm install @tensorflow/tfjs-node-gpu (downloads libtensorflow 2.9.1 for CUDA 11.2 / cuDNN 8.1, so it needs network access or TFJS_NODE_BASE_URI pointing at a mirror)',
  tensorflow:
    'npm install @tensorflow/tfjs-node (downloads libtensorflow 2.9.1, so it needs network access or TFJS_NODE_BASE_URI pointing at a mirror)',
} as const;

/** Whether `pkg` resolves from Cohort's install (optional dependencies may be missing). */
export function isInstalled(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/** Number of NVIDIA GPUs the driver exposes on this machine (before CUDA_VISIBLE_DEVICES). */
export function visibleGpuCount(): number {
  const procDir = '/proc/driver/nvidia/gpus';
  if (existsSync(procDir)) return readdirSync(procDir).length;
  try {
    return execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split('\n')
      .filter((line) => line.startsWith('GPU ')).length;
  } catch {
    return 0;
  }
}

function gpuName(index: number): string | undefined {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader', '-i', String(index)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return undefined;
  }
}

/** Pins this process to GPU `gpu`; must run before the native backend is imported. */
export function pinGpu(gpu: number): void {
  if (!Number.isInteger(gpu) || gpu < 0) throw new CohortError(`--gpu must be a GPU index (0, 1, ...), got '${gpu}'`);
  process.env.CUDA_VISIBLE_DEVICES = String(gpu);
  process.env.TF_FORCE_GPU_ALLOW_GROWTH = 'true';
}

function isMissingModule(error: unknown, pkg: string): boolean {
  const e = error as { code?: string; message?: string };
  return (
    (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') && (e.message ?? '').includes(pkg)
  );
}

/** Imports a native tfjs-node package; null when it is not installed. */
async function importNative(choice: keyof typeof NATIVE_PACKAGES): Promise<boolean> {
  const pkg: string = NATIVE_PACKAGES[choice];
  try {
    await import(pkg);
    return true;
  } catch (error) {
    if (isMissingModule(error, pkg)) return false;
    const reason = (error as Error)?.message?.split('\n')[0] ?? String(error);
    throw new CohortError(`backend '${choice}': ${pkg} is installed but failed to load: ${reason}`);
  }
}

/**
 * Imports the wasm backend. Its Emscripten glue installs process-wide handlers that rethrow
 * every uncaught exception together with a megabyte of minified source; those handlers are
 * removed again so that errors stay readable.
 */
async function importWasm(): Promise<void> {
  const before = {
    uncaughtException: process.listeners('uncaughtException'),
    unhandledRejection: process.listeners('unhandledRejection'),
  };
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  for (const listener of process.listeners('uncaughtException')) {
    if (!before.uncaughtException.includes(listener)) process.removeListener('uncaughtException', listener);
  }
  for (const listener of process.listeners('unhandledRejection')) {
    if (!before.unhandledRejection.includes(listener)) process.removeListener('unhandledRejection', listener);
  }
  const { registerWasmTrainingKernels } = await import('./wasm-training/index.js');
  registerWasmTrainingKernels();
}

async function activate(tfjsName: string): Promise<void> {
  if (!(await tf.setBackend(tfjsName))) throw new CohortError(`backend '${tfjsName}' failed to initialise`);
  await tf.ready();
}

/** Selects, loads and activates the backend; prints nothing, returns what it got. */
export async function initBackend(options: BackendOptions): Promise<ActiveBackend> {
  const { backend: requested, gpu } = options;
  if (!(BACKEND_CHOICES as readonly string[]).includes(requested)) {
    throw new CohortError(`unknown backend '${requested}': choose one of ${BACKEND_CHOICES.join(', ')}`);
  }
  tf.enableProdMode(); // silences tfjs' console banners (e.g. "install tfjs-node")
  if (gpu !== undefined) pinGpu(gpu);

  const gpus = visibleGpuCount();
  let choice: ActiveBackend['choice'];
  if (requested === 'auto') {
    if (gpus > 0 && (await importNative('tensorflow-gpu'))) choice = 'tensorflow-gpu';
    else if (await importNative('tensorflow')) choice = 'tensorflow';
    else choice = 'wasm';
  } else {
    choice = requested;
    if (choice === 'tensorflow-gpu' || choice === 'tensorflow') {
      if (!(await importNative(choice))) {
        throw new CohortError(`backend '${choice}' is not installed: ${INSTALL_HINT[choice]}`);
      }
    }
    if (choice === 'tensorflow-gpu' && gpus === 0) {
      throw new CohortError(`backend 'tensorflow-gpu' found no NVIDIA GPU on this machine: use --backend tensorflow or wasm`);
    }
  }

  if (choice === 'wasm') {
    await importWasm();
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    return { requested, choice, tfjsName: 'wasm', device: `CPU (wasm${simd ? ', SIMD' : ', no SIMD'}, 1 thread)` };
  }
  if (choice === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu');
    await activate('cpu');
    return { requested, choice, tfjsName: 'cpu', device: 'CPU (pure JavaScript: a reference for tests, hundreds of times slower than wasm)' };
  }
  await activate('tensorflow');
  if (choice === 'tensorflow') return { requested, choice, tfjsName: 'tensorflow', device: 'CPU (libtensorflow)' };
  const index = gpu ?? 0;
  const name = gpuName(index);
  const pinned = gpu === undefined ? 'all GPUs visible, TensorFlow uses GPU 0' : `CUDA_VISIBLE_DEVICES=${gpu}`;
  return { requested, choice, tfjsName: 'tensorflow', device: `GPU ${index}${name ? ` (${name})` : ''}, ${pinned}` };
}
