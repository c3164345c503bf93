/**
 * PyTorch references for the torchvision tests: the interpreter with torch and torchvision
 * (Debian's python3-torch, python3-torchvision), tests that skip without it locally and fail
 * without it under CI=true, and test/fixtures/torchvision_reference.py run into a folder.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { findTorchPython } from '../../bench/torch-python.js';
import { cannotRun } from './requirements.js';

export const TORCH_PYTHON = findTorchPython('torch, torchvision');
const script = fileURLToPath(new URL('../fixtures/torchvision_reference.py', import.meta.url));

/** The Python with torch, or undefined after skipping `t` (locally; under CI=true a missing torch fails the test). */
export function torchOrSkip(t: TestContext): string | undefined {
  if (TORCH_PYTHON) return TORCH_PYTHON;
  cannotRun(t, 'needs python3 with torch and torchvision (apt-get install python3-torch python3-torchvision)');
  return undefined;
}

export interface TorchReference {
  /** The state dict as safetensors. */
  weights: string;
  /** `images` (NCHW) and the eval-mode `logits`, as safetensors. */
  io: string;
  /** With `onnx`: the model exported by torch.onnx.export. */
  onnx: string;
  /** What the script printed: tensor count, batch-norm epsilon and momentum. */
  summary: { tensors: number; bnEps: number; bnMomentum: number };
}

export interface ReferenceOptions {
  classes?: number;
  size?: number;
  batch?: number;
  seed?: number;
  onnx?: boolean;
}

/** Runs the reference script for torchvision model `model` (resnet18, ..., mobilenet_v2) into `dir`. */
export function torchvisionReference(python: string, model: string, dir: string, o: ReferenceOptions = {}): TorchReference {
  const args = [
    script,
    `--model=${model}`,
    `--out=${dir}`,
    `--classes=${o.classes ?? 10}`,
    `--size=${o.size ?? 64}`,
    `--batch=${o.batch ?? 2}`,
    `--seed=${o.seed ?? 0}`,
    ...(o.onnx ? ['--onnx'] : []),
  ];
  const child = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (child.status !== 0) throw new Error(`torchvision_reference.py ${model} failed (exit ${child.status}):\n${child.stderr}`);
  const line = child.stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (!line) throw new Error(`torchvision_reference.py printed no summary:\n${child.stdout}`);
  return { weights: join(dir, 'weights.safetensors'), io: join(dir, 'io.safetensors'), onnx: join(dir, 'model.onnx'), summary: JSON.parse(line) };
}
