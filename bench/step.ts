/**
 * `npm run bench -- step`: one training step (forward, backward, Adam) of the reference CNN,
 * batch 128, on every installed tfjs backend and in PyTorch (Debian's python3-torch, 2 threads),
 * measured in the same run so that the ratios compare like with like. Each measurement runs in
 * its own process; wasm and PyTorch alternate over several rounds to average out machine noise.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isInstalled, visibleGpuCount } from '../shared/engine/backend.js';
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

const workerPath = fileURLToPath(new URL('./step-worker.ts', import.meta.url));
const torchScript = fileURLToPath(new URL('./torch_step.py', import.meta.url));

function runJson(command: string, args: string[], label: string): StepResult {
  const child = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const line = child.stdout.split('\n').reverse().find((l) => l.startsWith('{'));
  if (child.status !== 0 || !line) {
    const reason = (child.stderr || child.stdout).trim().split('\n').filter((l) => l.length < 400).slice(-3).join(' | ');
    return { backend: label, unavailable: `failed (exit ${child.status}): ${reason}` };
  }
  return JSON.parse(line) as StepResult;
}

function tfjsStep(backend: string, o: StepBenchOptions, extra: string[] = []): StepResult {
  const args = ['--import', 'tsx', workerPath, `--backend=${backend}`, `--steps=${o.steps}`, `--warmup=${o.warmup}`, ...extra];
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
    const top = Object.entries(r.kernels).sort((a, b) => b[1] - a[1]).slice(0, 8);
    print(`\n${r.backend} kernel time in one profiled step: ${top.map(([k, ms]) => `${k} ${ms.toFixed(1)}ms`).join(', ')}`);
  }
}
