/**
 * `npm run bench -- step`: one training step (forward, backward, Adam) of the reference CNN,
 * batch 128, on every installed tfjs backend and in PyTorch (Debian's python3-torch, 2 threads),
 * measured in the same run so that the ratios compare like with like. Each measurement runs in
 * its own process; wasm and PyTorch alternate over several rounds to average out machine noise.
 */
import { spawnSync } from 'node:child_process';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isInstalled, visibleGpuCount } from '../shared/engine/backend.js';
import { runChildJson } from './child-json.js';
import { median } from './stats.js';
import { findTorchPython } from './torch-python.js';

export interface StepResult {
  backend: string;
  device?: string;
  msPerStep?: number;
  minMs?: number;
  steps?: number;
  unavailable?: string;
  kernels?: Record<string, number>;
}

export interface StepBenchOptions {
  steps: number;
  warmup: number;
  /** The pure-JS cpu backend takes over a minute per step: it gets this many timed steps. */
  cpuSteps: number;
  rounds: number;
  backends?: string[];
  torchThreads: number;
  profile: boolean;
}

// From source, the worker runs under tsx; bundled (bench/gpu/bundle.mjs), it is step-worker.mjs beside this file.
const ownExtension = extname(fileURLToPath(import.meta.url));
const workerPath = fileURLToPath(new URL(`./step-worker${ownExtension}`, import.meta.url));
const workerLoader = ownExtension === '.ts' ? ['--import', 'tsx'] : [];
const torchScript = fileURLToPath(new URL('./torch_step.py', import.meta.url));

function runJson(command: string, args: string[], label: string): StepResult {
  const result = runChildJson<StepResult>(command, args);
  return 'value' in result ? result.value : { backend: label, unavailable: result.failed };
}

function tfjsStep(backend: string, o: StepBenchOptions, extra: string[] = []): StepResult {
  const args = [...workerLoader, workerPath, `--backend=${backend}`, `--steps=${o.steps}`, `--warmup=${o.warmup}`, ...extra];
  if (o.profile) args.push('--profile=1');
  return runJson(process.execPath, args, backend);
}

export function defaultBackends(): string[] {
  const list: string[] = [];
  if (isInstalled('@tensorflow/tfjs-node-gpu') && visibleGpuCount() > 0) list.push('tensorflow-gpu');
  if (isInstalled('@tensorflow/tfjs-node')) list.push('tensorflow');
  list.push('wasm', 'cpu');
  return list;
}

export async function benchStep(o: StepBenchOptions, print: (line: string) => void): Promise<StepResult[]> {
  const backends = o.backends ?? defaultBackends();
  const python = findTorchPython();
  const rounds: StepResult[][] = [];
  print(`step benchmark: reference CNN, batch 128, ${o.steps} timed steps after ${o.warmup} warm-up, ${o.rounds} round(s)`);
  for (let r = 0; r < o.rounds; r++) {
    const round: StepResult[] = [];
    const torch = python
      ? runJson(python, [torchScript, `--steps=${o.steps}`, `--warmup=${o.warmup}`, `--threads=${o.torchThreads}`], 'pytorch')
      : { backend: 'pytorch', unavailable: 'python3 with torch not found: apt-get install python3-torch' };
    round.push(torch);
    print(`  round ${r + 1}: ${describe(torch)}`);
    for (const backend of backends) {
      if (backend === 'cpu' && r > 0) continue; // far slower than wasm: one round is enough
      const result = tfjsStep(backend, backend === 'cpu' ? { ...o, steps: o.cpuSteps, warmup: 1 } : o);
      round.push(result);
      print(`  round ${r + 1}: ${describe(result)}`);
    }
    if (r === 0) {
      const threads = tfjsStep('wasm', { ...o, steps: 3, warmup: 1, profile: false }, ['--wasm-threads=2']);
      round.push(threads);
      print(`  round ${r + 1}: ${describe(threads)}`);
    }
    rounds.push(round);
  }
  const merged = mergeRounds(rounds);
  printTable(merged, print);
  return merged;
}

function describe(r: StepResult): string {
  return r.unavailable ? `${r.backend}: unavailable: ${r.unavailable}` : `${r.backend}: ${r.msPerStep!.toFixed(1)} ms/step (${r.device})`;
}

/** One result per backend: the median over rounds of each round's median step time. */
function mergeRounds(rounds: StepResult[][]): StepResult[] {
  const byBackend = new Map<string, StepResult[]>();
  for (const round of rounds) for (const r of round) byBackend.set(r.backend, [...(byBackend.get(r.backend) ?? []), r]);
  return [...byBackend.values()].map((results) => {
    const ok = results.filter((r) => r.msPerStep !== undefined);
    if (ok.length === 0) return results[0];
    return { ...ok[0], msPerStep: median(ok.map((r) => r.msPerStep!)), minMs: Math.min(...ok.map((r) => r.minMs!)) };
  });
}

function printTable(results: StepResult[], print: (line: string) => void): void {
  const torch = results.find((r) => r.backend.startsWith('pytorch') && r.msPerStep !== undefined);
  print('');
  print('| backend | device | timed steps | ms/step (median) | x PyTorch |');
  print('|---|---|---|---|---|');
  for (const r of results) {
    if (r.unavailable) {
      print(`| ${r.backend} | - | - | unavailable: ${r.unavailable} | - |`);
      continue;
    }
    const ratio = torch ? (r.msPerStep! / torch.msPerStep!).toFixed(2) : '-';
    print(`| ${r.backend} | ${r.device} | ${r.steps} | ${r.msPerStep!.toFixed(1)} | ${ratio} |`);
  }
  for (const r of results) {
    if (!r.kernels) continue;
    const top = Object.entries(r.kernels)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8);
    print(`\n${r.backend} kernel time in one profiled step: ${top.map(([k, ms]) => `${k} ${ms.toFixed(1)}ms`).join(', ')}`);
  }
}

/** The GPU cases of `--backend webgpu`: model, batch, PyTorch's case key (bench/torch_gpu_step.py). */
const GPU_CASES = [
  { model: 'reference-cnn', batch: 128, torch: 'refcnn128', label: 'reference CNN 28x28, batch 128' },
  { model: 'resnet18-small32', batch: 64, torch: 'resnet18s64', label: 'ResNet-18 32x32 (small stem), batch 64' },
  { model: 'resnet18-imagenet224', batch: 64, torch: 'resnet18i64', label: 'ResNet-18 224x224, batch 64' },
] as const;

const torchGpuScript = fileURLToPath(new URL('./torch_gpu_step.py', import.meta.url));

interface TorchTime {
  key: string;
  variant: string;
  stepMsMedian: number;
  forwardMsMedian: number;
}

/** PyTorch on the GPU (CUDA), every case and variant; none when torch or CUDA is missing. */
function torchGpu(python: string | undefined, cases: string[], print: (line: string) => void): { times: TorchTime[]; device?: string; unavailable?: string } {
  if (!python) return { times: [], unavailable: 'python3 with torch not found' };
  const child = spawnSync(python, [torchGpuScript, `--cases=${cases.join(',')}`, '--limit-s=300'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    env: { ...process.env, TORCH_DEVICE: 'cuda' },
  });
  const results = child.stdout
    .split('\n')
    .filter((l) => l.startsWith('RESULT '))
    .map((l) => JSON.parse(l.slice(7)) as Record<string, unknown>);
  const info = results.find((r) => r.kind === 'torch');
  if (!info || info.device === 'cpu') return { times: [], unavailable: 'PyTorch sees no CUDA GPU' };
  for (const r of results.filter((r) => r.kind === 'error')) print(`  pytorch error: ${String(r.where)}: ${String(r.message).slice(0, 200)}`);
  return { times: results.filter((r) => r.kind === 'torch-time') as unknown as TorchTime[], device: `${String(info.gpu)} (torch ${String(info.torch)})` };
}

/**
 * `npm run bench -- step --backend webgpu`: a training step and a forward pass (a teacher's
 * work) of each GPU case on webgpu, and beside them PyTorch on the same GPU (fp32 with TF32
 * off, default, bf16 autocast), as ratios from one run; with --profile, the top kernels of a
 * webgpu step. On a software adapter (COHORT_WEBGPU_SOFTWARE=1) give --cases a small subset.
 */
export async function benchGpuStep(o: StepBenchOptions & { cases?: string[] }, print: (line: string) => void): Promise<StepResult[]> {
  const cases = GPU_CASES.filter((c) => !o.cases || o.cases.includes(c.torch));
  print(`GPU step benchmark on webgpu: ${cases.map((c) => c.label).join('; ')}; ${o.steps} timed steps after ${o.warmup} warm-up`);
  const results: (StepResult & { forwardMs?: number; model?: string })[] = [];
  for (const c of cases) {
    const r = tfjsStep('webgpu', o, [`--model=${c.model}`, `--batch=${c.batch}`, '--forward=1']) as StepResult & { forwardMs?: number; model?: string };
    results.push({ ...r, model: c.model });
    print(`  ${c.label}: ${describe(r)}${r.forwardMs !== undefined ? `, forward ${r.forwardMs.toFixed(1)} ms` : ''}`);
  }
  const torch = torchGpu(
    findTorchPython(),
    cases.map((c) => c.torch),
    print,
  );
  print('');
  print(`PyTorch: ${torch.unavailable ? `unavailable: ${torch.unavailable}` : torch.device}`);
  print('| case | webgpu step ms | webgpu forward ms | PyTorch fp32 (TF32 off) step ms | x | PyTorch default step ms | x | PyTorch bf16 step ms | x | forward x fp32 |');
  print('|---|---|---|---|---|---|---|---|---|---|');
  for (const [i, c] of cases.entries()) {
    const r = results[i];
    const t = (variant: string) => torch.times.find((x) => x.key === c.torch && x.variant === variant);
    const cell = (variant: string) => {
      const tt = t(variant);
      return tt && r.msPerStep !== undefined ? `${tt.stepMsMedian.toFixed(2)} | ${(r.msPerStep / tt.stepMsMedian).toFixed(2)}` : '- | -';
    };
    const strict = t('fp32-strict');
    const fwd = strict && r.forwardMs !== undefined ? (r.forwardMs / strict.forwardMsMedian).toFixed(2) : '-';
    print(
      `| ${c.label} | ${r.msPerStep?.toFixed(1) ?? r.unavailable} | ${r.forwardMs?.toFixed(1) ?? '-'} | ${cell('fp32-strict')} | ${cell('default')} | ${cell('bf16-amp-cl')} | ${fwd} |`,
    );
  }
  for (const r of results) {
    if (!r.kernels) continue;
    // tfjs' webgpu backend times kernels with GPU timestamp queries, and reports 0 where the adapter has none.
    if (Object.values(r.kernels).every((ms) => !(ms > 0))) {
      print(`\n${r.model}: no kernel times (the adapter has no 'timestamp-query' feature, so tfjs reports 0 for every kernel)`);
      continue;
    }
    const top = Object.entries(r.kernels)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8);
    print(`\n${r.model} top kernels of one profiled webgpu step: ${top.map(([k, ms]) => `${k} ${ms.toFixed(1)}ms`).join(', ')}`);
  }
  return results;
}
