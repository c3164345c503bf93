/**
 * The first real run: `cohort train-single` as a child process on the default backend, one full
 * epoch of the 60,000 Fashion-MNIST training images, must reach > 85% test accuracy; a short
 * run checks the progress lines and determinism of the seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';

const cacheDir = mkdtempSync(join(tmpdir(), 'cohort-train-'));
process.on('exit', () => rmSync(cacheDir, { recursive: true, force: true }));

function testAccuracy(stdout: string): number {
  const match = /^test: accuracy ([\d.]+)% \| loss ([\d.]+) \| ECE ([\d.]+)% \| 10000 images$/m.exec(stdout);
  assert.ok(match, `no test accuracy line in:\n${stdout}`);
  return Number(match[1]);
}

test('a short run prints progress and is reproducible for a seed', async () => {
  const args = ['train-single', '--backend', 'wasm', '--train-limit', '1280', '--log-every', '5', '--cache-dir', cacheDir];
  const first = await runCli(args);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^backend: wasm on CPU \(wasm/m);
  assert.match(first.stdout, /^train: 1280 images x 1 epoch\(s\), batch 128, 10 steps; test: 10000 images$/m);
  const progress = first.stdout.split('\n').filter((l) => l.startsWith('epoch 1/1 step'));
  assert.deepEqual(
    progress.map((l) => /step (\d+)\/10/.exec(l)?.[1]),
    ['5', '10'],
  );
  assert.match(progress[1], /\| \d+ img\/s \| loss \d+\.\d{4} \| acc \d+\.\d{2}% \| ETA \d+s$/);
  const accuracy = testAccuracy(first.stdout);
  assert.ok(accuracy > 50, `10 steps should already beat chance by far, got ${accuracy}%`);
  const second = await runCli(args);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(testAccuracy(second.stdout), accuracy, 'same seed, same backend: same result');
});

test('one epoch on the default backend reaches > 85% test accuracy', async () => {
  const { code, stdout, stderr } = await runCli(['train-single', '--cache-dir', cacheDir]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^train: 60000 images x 1 epoch\(s\), batch 128, 469 steps; test: 10000 images$/m);
  const accuracy = testAccuracy(stdout);
  assert.ok(accuracy > 85, `test accuracy ${accuracy}%`);
});
