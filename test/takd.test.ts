/**
 * TAKD as a chain of KD stages in one `cohort train`: real worker processes; the second stage's
 * teacher is the first stage's member, loaded from its saved weights (its test accuracy in
 * stage 2 equals the one it reached in stage 1).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { takdStages } from '../shared/algorithms/registry.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { runCli } from './helpers/cli.js';
import { parseMetricsLines } from '../shared/metrics/records.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-takd-'));
after(() => rmSync(root, { recursive: true, force: true }));

const raw = {
  name: 'chain',
  algorithm: 'takd',
  dataset: { name: 'fashion-mnist', cacheDir: join(root, 'cache') },
  batchSize: 64,
  trainLimit: 256,
  members: [
    { name: 'assistant', model: { name: 'cnn-student' }, backend: 'wasm' },
    { name: 'student', model: { name: 'mlp-student' }, backend: 'wasm' },
  ],
  teachers: [{ name: 'teacher', model: { name: 'cnn-teacher' }, backend: 'wasm' }],
  runDir: join(root, 'runs'),
};

test('the stages: teacher -> assistant, then assistant (from its final weights) -> student', () => {
  const stages = takdStages(resolveRunConfig(raw));
  assert.deepEqual(
    stages.map((s) => [s.name, s.algorithm, s.teachers.map((t) => t.name), s.members.map((m) => m.name)]),
    [
      ['chain-stage1', 'kd', ['teacher'], ['assistant']],
      ['chain-stage2', 'kd', ['assistant'], ['student']],
    ],
  );
  assert.equal(stages[1].teachers[0].checkpoint, join(root, 'runs', 'chain-stage1', 'assistant', 'final'));
});

test('cohort train runs both stages; stage 2 teaches with the assistant stage 1 trained', { timeout: 300_000 }, async () => {
  const path = join(root, 'takd.json');
  writeFileSync(path, JSON.stringify(raw));
  const result = await runCli(['train', path, '--log-every', '2']);
  assert.equal(result.code, 0, result.stderr + result.stdout);
  assert.match(result.stdout, /takd: stage 1\/2: teacher -> assistant[\s\S]*takd: stage 2\/2: assistant -> student/);
  const records = (stage: string) => parseMetricsLines(readFileSync(join(root, 'runs', stage, 'metrics.jsonl'), 'utf8')).records.filter((r) => r.kind === 'eval');
  const trained = records('chain-stage1').find((r) => r.worker === 'assistant' && r.role === 'member')!;
  const teaching = records('chain-stage2').find((r) => r.worker === 'assistant' && r.role === 'teacher')!;
  assert.equal(teaching.accuracy, trained.accuracy);
  assert.ok(records('chain-stage2').some((r) => r.worker === 'student' && r.role === 'member'));
});
