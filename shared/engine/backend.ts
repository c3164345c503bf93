/**
 * Decides the tfjs backend of a process. The backends are one registry (BACKENDS): each entry
 * loads and activates its backend or says why it cannot. `auto` tries, in order, tfjs-node-gpu
 * (when installed and an NVIDIA GPU is visible), WebGPU on a hardware adapter (never a software
 * one), tfjs-node, then the embedded wasm backend (made able to train convnets by
 * ./wasm-training). `--gpu N` pins the process to one GPU: CUDA_VISIBLE_DEVICES for
 * TensorFlow, set before its native library loads; the N-th hardware adapter for WebGPU
 * (./webgpu.ts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
/// <reference types="@webgpu/types" />
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers'; // its node bundle registers tfjs-core's gradient functions (autodiff)
import { CohortError } from '../errors.js';
import {
  chooseAdapter,
  describeAdapter,
  openDevice,
  probeAdapters,
  softwareRequested,
  type AdapterChoice,
  type AdapterInfo,
  type AdapterProbe,
  type WebgpuSession,
} from './webgpu.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow-gpu', 'webgpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
/** A backend that runs (what `auto` resolves to). */
export type ConcreteBackend = Exclude<BackendChoice, 'auto'>;

export interface BackendOptions {
  backend: BackendChoice;
  /** Index of the GPU this process is pinned to (native GPU backend only). */
  gpu?: number;
}

export interface ActiveBackend {
  /** What was asked for. */
  requested: BackendChoice;
  /** What runs: one of the concrete choices. */
  choice: ConcreteBackend;
  /** The tfjs backend name ('tensorflow', 'webgpu', 'wasm' or 'cpu'). */
  tfjsName: string;
  /** The device, in words, e.g. "GPU 1 (NVIDIA H100)" or "CPU (wasm, SIMD, 1 thread)". */
  device: string;
  /** WebGPU only: the adapter this process got. */
  adapter?: AdapterInfo;
}

const NATIVE_PACKAGES = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
} as const;

const INSTALL_HINT = {
  'tensorflow-gpu':
    'npm install @tensorflow/tfjs-node-gpu (downloads libtensorflow 2.9.1 for CUDA 11.2 / cuDNN 8.1, so it needs network access or TFJS_NODE_BASE_URI pointing at a mirror)',
  tensorflow: 'npm install @tensorflow/tfjs-node (downloads libtensorflow 2.9.1, so it needs network access or TFJS_NODE_BASE_URI pointing at a mirror)',
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
  if (!Number.isInteger(gpu) || gpu < 0) throw new CohortError(`--gpu must be a GPU index (0, 1, ...), got '${gpu}'`, { code: 'BAD_GPU_INDEX' });
  process.env.CUDA_VISIBLE_DEVICES = String(gpu);
  process.env.TF_FORCE_GPU_ALLOW_GROWTH = 'true';
}

/** Imports a native tfjs-node package; null when it is not installed. */
async function importNative(choice: keyof typeof NATIVE_PACKAGES): Promise<boolean> {
  const pkg: string = NATIVE_PACKAGES[choice];
  try {
    await import(pkg);
    return true;
  } catch (error) {
    if (!isInstalled(pkg)) return false;
    const reason = (error as Error)?.message?.split('\n')[0] ?? String(error);
    throw new CohortError(`backend '${choice}': ${pkg} is installed but failed to load: ${reason}`, { code: 'BACKEND_LOAD_FAILED', cause: error });
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
  if (!(await tf.setBackend(tfjsName))) throw new CohortError(`backend '${tfjsName}' failed to initialise`, { code: 'BACKEND_LOAD_FAILED' });
  await tf.ready();
}

/** The backend's device session, when it holds one (WebGPU): closed by shutdownBackend(). */
let session: WebgpuSession | undefined;

/**
 * Loads tfjs-backend-webgpu on the chosen adapter. The package is imported before
 * `navigator.gpu` exists, so that its own registration (which asks the default adapter for six
 * limits) stays out of the way and ours, with the device opened here, is the one.
 */
async function loadWebgpu(gpu: number | undefined): Promise<ActiveBackend> {
  const kind = softwareRequested() ? 'software' : 'hardware';
  const choice = chooseAdapter(kind, probeAdapters(kind), gpu);
  if (Object.keys(choice.env).length > 0) verifyPinned(choice, probeAdapters(kind, { ...process.env, ...choice.env }));
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  session = await openDevice(choice);
  const opened = session;
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(opened.device, opened.info as unknown as GPUAdapterInfo));
  await activate('webgpu');
  const pinned = gpu === undefined ? `adapter 0 of ${choice.seen}` : `--gpu ${gpu} of ${choice.seen}`;
  return { requested: 'webgpu', choice: 'webgpu', tfjsName: 'webgpu', device: `GPU ${describeAdapter(choice.name, opened.info)}, ${pinned}`, adapter: opened.info };
}

/**
 * Identical adapters are told apart by Mesa's device-select layer: with the pinning
 * environment it must leave exactly one. Without the layer every adapter stays, and Dawn would
 * open the first whatever N was: refused instead.
 */
function verifyPinned(choice: AdapterChoice, pinned: AdapterProbe): void {
  const left = pinned.adapters.filter((a) => !a.software).length;
  if (left === 1) return;
  throw new CohortError(
    `--gpu: ${choice.seen} adapters are named '${choice.name}', and telling them apart needs Mesa's device-select Vulkan layer (apt-get install mesa-vulkan-drivers), which left ${left} of them here; ` +
      'or give each worker its own GPU through the container runtime (docker --gpus device=N, a Kubernetes nvidia.com/gpu: 1 request, Slurm --gres) and use --gpu 0',
    { code: 'GPU_PIN_UNAVAILABLE' },
  );
}

/** Whether `auto` may take WebGPU: a hardware adapter exists (software adapters never count). */
function hardwareAdapterPresent(): boolean {
  try {
    return probeAdapters('hardware').adapters.some((a) => !a.software);
  } catch {
    return false;
  }
}

interface BackendEntry {
  /** Whether `auto` takes this backend here (cheap; no error when it cannot). */
  autoAvailable(gpus: number): Promise<boolean>;
  /** Loads and activates the backend, or throws a CohortError that says why and what to install. */
  load(options: { gpu?: number; gpus: number }): Promise<Omit<ActiveBackend, 'requested'>>;
}

async function loadNative(choice: keyof typeof NATIVE_PACKAGES): Promise<void> {
  if (!(await importNative(choice))) {
    throw new CohortError(`backend '${choice}' is not installed: ${INSTALL_HINT[choice]}`, { code: 'BACKEND_NOT_INSTALLED' });
  }
}

/** Every backend Cohort can run on; `auto` tries them in AUTO_ORDER. */
const BACKENDS = {
  'tensorflow-gpu': {
    autoAvailable: async (gpus) => gpus > 0 && (await importNative('tensorflow-gpu')),
    async load({ gpu, gpus }) {
      await loadNative('tensorflow-gpu');
      if (gpus === 0) throw new CohortError(`backend 'tensorflow-gpu' found no NVIDIA GPU on this machine: use --backend webgpu, tensorflow or wasm`, { code: 'NO_GPU' });
      await activate('tensorflow');
      const index = gpu ?? 0;
      const name = gpuName(index);
      const pinned = gpu === undefined ? 'all GPUs visible, TensorFlow uses GPU 0' : `CUDA_VISIBLE_DEVICES=${gpu}`;
      return { choice: 'tensorflow-gpu', tfjsName: 'tensorflow', device: `GPU ${index}${name ? ` (${name})` : ''}, ${pinned}` };
    },
  },
  webgpu: {
    autoAvailable: async () => hardwareAdapterPresent(),
    load: async ({ gpu }) => loadWebgpu(gpu),
  },
  tensorflow: {
    autoAvailable: async () => importNative('tensorflow'),
    async load() {
      await loadNative('tensorflow');
      await activate('tensorflow');
      return { choice: 'tensorflow', tfjsName: 'tensorflow', device: 'CPU (libtensorflow)' };
    },
  },
  wasm: {
    autoAvailable: async () => true,
    async load() {
      await importWasm();
      const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      return { choice: 'wasm', tfjsName: 'wasm', device: `CPU (wasm${simd ? ', SIMD' : ', no SIMD'}, 1 thread)` };
    },
  },
  cpu: {
    autoAvailable: async () => false,
    async load() {
      await import('@tensorflow/tfjs-backend-cpu');
      await activate('cpu');
      return { choice: 'cpu', tfjsName: 'cpu', device: 'CPU (pure JavaScript: a reference for tests, hundreds of times slower than wasm)' };
    },
  },
} satisfies Record<ConcreteBackend, BackendEntry>;

const AUTO_ORDER: readonly ConcreteBackend[] = ['tensorflow-gpu', 'webgpu', 'tensorflow', 'wasm'];

/** Selects, loads and activates the backend; prints nothing, returns what it got. */
export async function initBackend(options: BackendOptions): Promise<ActiveBackend> {
  const { backend: requested, gpu } = options;
  if (!(BACKEND_CHOICES as readonly string[]).includes(requested)) {
    throw new CohortError(`unknown backend '${requested}': choose one of ${BACKEND_CHOICES.join(', ')}`, { code: 'UNKNOWN_BACKEND' });
  }
  tf.enableProdMode(); // silences tfjs' console banners (e.g. "install tfjs-node")
  if (gpu !== undefined) pinGpu(gpu);
  const gpus = visibleGpuCount();
  let choice: ConcreteBackend = 'wasm';
  if (requested === 'auto') {
    for (const candidate of AUTO_ORDER) {
      if (await BACKENDS[candidate].autoAvailable(gpus)) {
        choice = candidate;
        break;
      }
    }
  } else {
    choice = requested;
  }
  const active = await BACKENDS[choice].load({ gpu, gpus });
  return { requested, ...active };
}

/**
 * Releases what the backend holds outside the JavaScript heap: the WebGPU device, without
 * which the process would not exit. Safe to call more than once, and on any backend.
 */
export function shutdownBackend(): void {
  if (!session) return;
  const closing = session;
  session = undefined;
  if (tf.getBackend() === 'webgpu') tf.engine().reset();
  closing.close();
}

/** What the backend holds now: tensors and bytes, and on a GPU the device memory tfjs uses. */
export interface BackendMemory {
  tensors: number;
  bytes: number;
  /** Bytes of GPU buffers held by live tensors (WebGPU, tfjs-node-gpu reports none). */
  gpuBytes?: number;
  /** Bytes of GPU buffers allocated, including tfjs' pool of free ones. */
  gpuBytesAllocated?: number;
}

export function backendMemory(): BackendMemory {
  const m = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
  return {
    tensors: m.numTensors,
    bytes: m.numBytes,
    ...(m.numBytesInGPU === undefined ? {} : { gpuBytes: m.numBytesInGPU }),
    ...(m.numBytesAllocatedInGPU === undefined ? {} : { gpuBytesAllocated: m.numBytesAllocatedInGPU }),
  };
}
