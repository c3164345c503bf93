/**
 * evalEverySteps: members evaluate on the test set every N steps as well as at each epoch's
 * end, each evaluation recorded in metrics.jsonl with its step, for every member and the
 * ensemble (what shows a run fluctuating during training), drawn by the report; the rule for when one is due; the
 * coordinator's ensemble of a mid-epoch evaluation.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseMetricsLines, type EvalRecord } from '../shared/metrics/records.js';
import { stepEvaluationDue } from '../worker/hooks.js';
import { runCli } from './helpers/cli.js';
import { randomIdx } from './helpers/fake-coordinator.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-eval-steps-'));
after(() => rmSync(root, { recursive: true, force: true }));

test("a step evaluation is due every N steps, except where the epoch's own evaluation follows at once", () => {
  assert.equal(stepEvaluationDue(3, 4, false, true), true); // after 4 steps
  assert.equal(stepEvaluationDue(2, 4, false, true), false);
  assert.equal(stepEvaluationDue(7, 4, true, true), false); // the epoch's evaluation comes right after
  assert.equal(stepEvaluationDue(7, 4, true, false), true); // ... unless that epoch is not evaluated
  assert.equal(stepEvaluationDue(3, undefined, false, true), false);
});

test('a DML run with evalEverySteps records an evaluation of every member and of the ensemble every N steps', { timeout: 300_000 }, async () => {
  const member = (name: string) => ({ name, model: { name: 'mlp-student' }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9 } });
  const config = {
    name: 'eval-steps',
    algorithm: 'dml',
    dataset: { name: 'idx', train: randomIdx(root, 'train', 80, 3), test: randomIdx(root, 'test', 24, 4), classes: 10 },
    epochs: 2,
    batchSize: 16,
    evalEverySteps: 2,
    runDir: join(root, 'runs'),
    members: [member('a'), member('b')],
  };
  const path = join(root, 'run.json');
  writeFileSync(path, JSON.stringify(config));
  const result = await runCli(['train', path, '--insecure']);
  assert.equal(result.code, 0, result.stderr);
  const evals = parseMetricsLines(readFileSync(join(root, 'runs', 'eval-steps', 'metrics.jsonl'), 'utf8')).records.filter((r): r is EvalRecord => r.kind === 'eval');
  // 5 steps an epoch: mid-epoch evaluations after steps 2, 4 (epoch 0) and 6, 8 (epoch 1); step 10 ends epoch 1 with its own.
  for (const worker of ['a', 'b', 'ensemble']) {
    const mine = evals.filter((e) => e.worker === worker);
    assert.deepEqual(
      mine.map((e) => [e.epoch, e.step ?? null]),
      [
        [0, 2],
        [0, 4],
        [0, null],
        [1, 6],
        [1, 8],
        [1, null],
      ],
      worker,
    );
    for (const e of mine) assert.ok(e.accuracy >= 0 && e.accuracy <= 1 && e.ece >= 0 && Number.isFinite(e.nll), `${worker} at ${e.step}`);
  }
  // Training moves the members between evaluations.
  const a = evals.filter((e) => e.worker === 'a').map((e) => e.nll);
  assert.ok(new Set(a).size > 1, 'the evaluations differ as the member trains');
  // The report draws them: one more chart, test accuracy over the steps.
  const report = await runCli(['report', join(root, 'runs', 'eval-steps')]);
  assert.equal(report.code, 0, report.stderr);
  assert.match(report.stdout, /\(7 charts, \d+ KiB\)/);
  const html = readFileSync(join(root, 'runs', 'eval-steps', 'report.html'), 'utf8');
  assert.match(html, /Test accuracy during training/);
});
