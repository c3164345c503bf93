/**
 * A heterogeneous cohort: a real `cohort train` DML run whose member a trains on webgpu (Mesa
 * llvmpipe, COHORT_WEBGPU_SOFTWARE=1) and member b on wasm, coordinator and workers as separate
 * processes; its final weights match the same run with both members on cpu within float
 * tolerance. The worker on webgpu must also exit by itself (its device destroyed) for the run to
 * end. Skips locally without an adapter, fails under CI=true.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../shared/engine/backend.js';
import { probeAdapters } from '../shared/engine/webgpu.js';
import { readFileSync } from 'node:fs';
import { readSavedWeights } from '../shared/io/model-files.js';
import { parseMetricsLines } from '../shared/metrics/records.js';
import { runCli } from './helpers/cli.js';
import { randomIdx } from './helpers/fake-coordinator.js';
import { cannotRun } from './helpers/requirements.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-webgpu-cohort-'));
after(() => rmSync(root, { recursive: true, force: true }));

function adapterMissing(): string | undefined {
  try {
    return probeAdapters('software').adapters.some((a) => a.software)
      ? undefined
      : 'needs a software WebGPU adapter (apt-get install libegl1 libegl-mesa0 libegl-dev libgl1-mesa-dri)';
  } catch (error) {
    return `listing WebGPU adapters failed: ${(error as Error).message}`;
  }
}

const STEPS = 6;
const BATCH = 16;

function config(name: string, backends: [string, string]) {
  const member = (n: string, backend: string) => ({
    name: n,
    model: { name: 'reference-cnn', inputShape: [28, 28, 1] },
    backend,
    optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9 },
  });
  return {
    name,
    algorithm: 'dml',
    // Random 28x28 images: a small test split keeps the evaluation on cpu and llvmpipe short.
    dataset: { name: 'idx', train: randomIdx(root, 'train', STEPS * BATCH, 21), test: randomIdx(root, 'test', 32, 22), classes: 10 },
    epochs: 1,
    batchSize: BATCH,
    trainLimit: STEPS * BATCH,
    seed: 5,
    runDir: join(root, 'runs'),
    members: [member('a', backends[0]), member('b', backends[1])],
    // llvmpipe is ~70x slower than wasm; a step's silence must not read as a lost worker.
    progressEvery: 2,
    recovery: { livenessMs: 120_000 },
    exchange: { timeoutMs: 300_000 },
  };
}

async function train(name: string, backends: [string, string]) {
  const path = join(root, `${name}.json`);
  writeFileSync(path, JSON.stringify(config(name, backends)));
  const result = await runCli(['train', path, '--insecure'], { COHORT_WEBGPU_SOFTWARE: '1' }, 600_000);
  assert.equal(result.code, 0, `${name}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

test('DML with one member on webgpu and one on wasm ends with the weights of the same run on cpu', { timeout: 900_000 }, async (t) => {
  if (cannotRun(t, adapterMissing())) return;
  await initBackend({ backend: 'cpu' }); // this process reads the saved weights
  const mixed = await train('mixed', ['webgpu', 'wasm']);
  assert.match(mixed, /a: backend webgpu on GPU llvmpipe/);
  assert.match(mixed, /b: backend wasm on CPU/);
  // The worker on webgpu reports its GPU memory in its step records; the one on wasm has none.
  const steps = parseMetricsLines(readFileSync(join(root, 'runs', 'mixed', 'metrics.jsonl'), 'utf8')).records.filter((r) => r.kind === 'step');
  const memory = (worker: string) => steps.filter((r) => r.worker === worker).map((r) => (r as { memory?: { gpuBytes?: number; tensors: number } }).memory);
  assert.ok(memory('a').length > 0 && memory('a').every((m) => m !== undefined && m.gpuBytes! > 0), 'a reports GPU bytes');
  assert.ok(
    memory('b').every((m) => m !== undefined && m.gpuBytes === undefined && m.tensors > 0),
    'b reports tensors, no GPU bytes',
  );
  await train('cpu', ['cpu', 'cpu']);
  for (const member of ['a', 'b']) {
    const got = await readSavedWeights(join(root, 'runs', 'mixed', member, 'final'));
    const want = await readSavedWeights(join(root, 'runs', 'cpu', member, 'final'));
    assert.equal(got.length, want.length);
    let num = 0;
    let den = 0;
    let worst = 0;
    got.forEach(({ values }, k) => {
      for (let e = 0; e < values.length; e++) {
        const d = values[e] - want[k].values[e];
        num += d * d;
        den += want[k].values[e] ** 2;
        worst = Math.max(worst, Math.abs(d));
      }
    });
    const relative = Math.sqrt(num / den);
    t.diagnostic(`${member}: weights relative difference ${relative.toExponential(2)}, largest ${worst.toExponential(2)}`);
    assert.ok(relative < 1e-5, `${member}: weights differ by ${relative.toExponential(2)} relative`);
  }
});
