/**
 * `npm run bench -- teacher`: one forward pass of ResNet-50 (224x224, batch 32 by default) as a
 * CPU teacher, three ways, in one run: a Cohort teacher on wasm (the zoo network with the
 * torchvision weights from safetensors), an ONNX teacher through onnxruntime-node's CPU
 * provider (the same network exported by torch.onnx.export, fed through OnnxTeacher as a
 * worker feeds it), and PyTorch itself (Debian's python3-torch, `--torch-threads`). Each is the
 * median of `--reps` timed passes after `--warmup`, run one after the other; ratios are to PyTorch.
 */
import { runChildJson } from './child-json.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { IMAGENET_NORMALIZATION } from '../shared/data/transforms.js';
import { initBackend } from '../shared/engine/backend.js';
import { buildModel } from '../shared/models/index.js';
import { OnnxTeacher } from '../worker/onnx-teacher.js';
import { median } from './stats.js';
import { findTorchPython } from './torch-python.js';

export interface TeacherBenchOptions {
  batch: number;
  size: number;
  reps: number;
  warmup: number;
  torchThreads: number;
}

export interface TeacherResult {
  backend: string;
  device?: string;
  msPerForward?: number;
  minMs?: number;
  reps?: number;
  unavailable?: string;
}

const torchScript = fileURLToPath(new URL('./torch_teacher.py', import.meta.url));

/** Median and minimum of `reps` timed calls of `f` after `warmup` untimed ones. */
async function time(f: () => Promise<void>, o: TeacherBenchOptions): Promise<{ msPerForward: number; minMs: number; reps: number }> {
  const times: number[] = [];
  for (let i = 0; i < o.warmup + o.reps; i++) {
    const start = performance.now();
    await f();
    if (i >= o.warmup) times.push(performance.now() - start);
  }
  return { msPerForward: median(times), minMs: Math.min(...times), reps: times.length };
}

function runTorch(python: string, dir: string, o: TeacherBenchOptions): TeacherResult {
  const args = [torchScript, `--out=${dir}`, `--batch=${o.batch}`, `--size=${o.size}`, `--reps=${o.reps}`, `--warmup=${o.warmup}`, `--threads=${o.torchThreads}`];
  const result = runChildJson<TeacherResult>(python, args);
  return 'value' in result ? result.value : { backend: 'PyTorch', unavailable: result.failed };
}

export async function benchTeacher(o: TeacherBenchOptions, print: (line: string) => void): Promise<TeacherResult[]> {
  print(`teacher benchmark: ResNet-50 forward, ${o.size}x${o.size}, batch ${o.batch}, median of ${o.reps} after ${o.warmup} warm-up, ${cpus().length} cores`);
  const python = findTorchPython('torch, torchvision');
  if (!python) {
    print('unavailable: python3 with torch and torchvision not found (apt-get install python3-torch python3-torchvision); it makes the weights and the ONNX file');
    return [];
  }
  const dir = mkdtempSync(join(tmpdir(), 'cohort-bench-teacher-'));
  try {
    const results: TeacherResult[] = [];
    const torch = runTorch(python, dir, o);
    results.push(torch);
    print(`  ${describe(torch)}`);
    if (torch.unavailable) return results;
    await initBackend({ backend: 'wasm' });
    const shape: [number, number, number, number] = [o.batch, o.size, o.size, 3];
    const x = tf.randomUniform(shape, -2, 2, 'float32', 1) as tf.Tensor4D;

    const onnx = await OnnxTeacher.open({
      path: join(dir, 'resnet50.onnx'),
      input: { layout: 'NCHW' },
      normalization: IMAGENET_NORMALIZATION,
      imageShape: [o.size, o.size, 3],
      classes: 1000,
      name: 'bench',
    });
    const ort = {
      backend: 'onnxruntime-node (CPU provider), as an ONNX teacher',
      device: 'CPU, default threads',
      ...(await time(async () => (await onnx.logits(x)).dispose(), o)),
    };
    await onnx.dispose();
    results.push(ort);
    print(`  ${describe(ort)}`);

    const { model } = buildModel({ name: 'resnet50', classes: 1000, inputShape: [o.size, o.size, 3], weights: join(dir, 'resnet50.safetensors') });
    const wasm = {
      backend: 'Cohort teacher on wasm (tfjs)',
      device: 'CPU, SIMD, 1 thread',
      ...(await time(async () => {
        const logits = model.apply(x, { training: false }) as tf.Tensor;
        await logits.data();
        logits.dispose();
      }, o)),
    };
    model.dispose();
    x.dispose();
    results.push(wasm);
    print(`  ${describe(wasm)}`);
    printTable(results, o.batch, print);
    return results;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function describe(r: TeacherResult): string {
  return r.unavailable ? `${r.backend}: unavailable: ${r.unavailable}` : `${r.backend}: ${r.msPerForward!.toFixed(0)} ms/forward (${r.device})`;
}

function printTable(results: TeacherResult[], batch: number, print: (line: string) => void): void {
  const torch = results[0];
  print('');
  print('| teacher | device | timed passes | ms/forward (median) | images/s | x PyTorch |');
  print('|---|---|---|---|---|---|');
  for (const r of results) {
    if (r.unavailable) continue;
    print(
      `| ${r.backend} | ${r.device} | ${r.reps} | ${r.msPerForward!.toFixed(0)} | ${((1000 * batch) / r.msPerForward!).toFixed(1)} | ${(r.msPerForward! / torch.msPerForward!).toFixed(2)} |`,
    );
  }
}
