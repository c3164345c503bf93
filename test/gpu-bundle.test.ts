/**
 * The GPU bundle (bench/gpu/bundle.mjs): what a GPU machine with no Node.js packages runs. Built
 * into a folder outside the repository, it must run there with nothing but Node and $DAWN_NODE:
 * the benchmark answers, and the bundled webgpu test file runs its tests (the adapter-choice
 * ones need no adapter; with llvmpipe, one model's kernels and whole step against cpu).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requiredHere } from './helpers/requirements.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const dawnNode = join(dirname(createRequire(import.meta.url).resolve('webgpu')), 'dist', 'linux-x64', 'dawn.node');

test('the GPU bundle runs outside the repository with only Node and DAWN_NODE', { timeout: 600_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'cohort-gpu-bundle-'));
  try {
    const built = spawnSync(process.execPath, [join(ROOT, 'bench', 'gpu', 'bundle.mjs'), out], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    for (const f of ['bench.mjs', 'step-worker.mjs', 'webgpu-probe.mjs', 'webgpu.test.mjs', 'torch_gpu_step.py', 'run.sh']) assert.ok(existsSync(join(out, f)), f);
    const bytes = ['bench.mjs', 'step-worker.mjs', 'webgpu-probe.mjs', 'webgpu.test.mjs'].reduce((sum, f) => sum + statSync(join(out, f)).size, 0);
    assert.ok(bytes < 32 << 20, `the bundle fits the device tool's carry beside Node and Dawn (${(bytes / 2 ** 20).toFixed(1)} MiB)`);
    // NODE_TEST_CONTEXT left out: the bundled tests report to this process's stdout, not to this runner.
    const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
    const env = { ...inherited, DAWN_NODE: dawnNode, NODE_PATH: '' };
    // Run from the bundle's folder, where no node_modules can be found.
    const help = spawnSync(process.execPath, ['bench.mjs', 'step', '--help'], { cwd: out, env, encoding: 'utf8' });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /--backend/);
    const tests = spawnSync(process.execPath, ['--test', '--test-reporter=tap', '--test-name-pattern=adapter list|PCI bus|mlp-student', 'webgpu.test.mjs'], {
      cwd: out,
      env: { ...env, COHORT_WEBGPU_MODELS: 'mlp-student' },
      encoding: 'utf8',
      timeout: 540_000,
    });
    assert.equal(tests.status, 0, tests.stdout + tests.stderr);
    assert.match(tests.stdout, /^# pass [1-9]/m);
    assert.match(tests.stdout, /^# fail 0$/m);
    const step = tests.stdout.split('\n').find((l) => /^ok \d+ - mlp-student: /.test(l));
    assert.ok(step, tests.stdout);
    // Skipped only where this machine has no llvmpipe adapter, and never under CI=true.
    if (step.includes('# SKIP')) assert.ok(!requiredHere(), step);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
