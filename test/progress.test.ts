/**
 * What users see while a run trains, and what it leaves in metrics.jsonl: a real `cohort train`
 * (2 members, wasm, 2 epochs of 20 steps) prints plain progress lines when its output is not a
 * terminal and redraws one line per worker in place when it is (run under `script`, which
 * gives it a pseudo-terminal); its metrics file parses with the documented schema, holds a
 * step record per worker every `progressEvery` steps and eval records whose reliability bins
 * reproduce the reported ECE and accuracy.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createProgressDisplay, formatDuration, progressFields, type ProgressUpdate } from '../coordinator/progress-display.js';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { parseMetricsLines, type EvalRecord, type StepRecord } from '../shared/metrics/records.js';
import { runCli, startCli } from './helpers/cli.js';
import { cannotRun, tool, unmet } from './helpers/requirements.js';
import { writeDmlConfig } from './helpers/dml-config.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-progress-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cacheDir = join(root, 'cache');

before(async () => {
  await loadFashionMnist({ cacheDir });
});

function config(name: string): string {
  return writeDmlConfig(name, { root, cacheDir, members: ['a', 'b'], steps: 20, extra: { epochs: 2, progressEvery: 5 } });
}

describe('the display', () => {
  const update = (worker: string, step: number): ProgressUpdate => ({
    worker,
    epoch: Math.floor(step / 10),
    step,
    totalSteps: 20,
    loss: 0.5,
    accuracy: 0.8125,
    imagesPerSecond: 640.4,
    stepMs: 50,
  });

  test('durations and fields', () => {
    assert.equal(formatDuration(42_000), '42s');
    assert.equal(formatDuration(190_000), '3m 10s');
    assert.equal(formatDuration(3_725_000), '1h 02m');
    // Step 4 of 20 done (0-based 3), 50 ms a step: 16 steps left, 0.8 s.
    assert.deepEqual(progressFields(update('a', 3), 2), { epoch: '1/2', steps: '4/20', ips: '640', loss: '0.5000', acc: '81.25%', eta: '1s' });
  });

  test('plain lines: at most one per worker per interval, and one at the end of each epoch', () => {
    const lines: string[] = [];
    const display = createProgressDisplay({ workers: ['a', 'b'], epochs: 2, interactive: false, plainEveryMs: 60_000, log: (l) => lines.push(l) });
    for (let step = 0; step < 20; step++) for (const w of ['a', 'b']) display.update(update(w, step));
    // The first update of each worker, then the ends of epochs 1 and 2 (steps 10 and 20).
    assert.deepEqual(
      lines.map((l) => /^progress (\w): epoch \d\/2 \| step (\d+)\/20/.exec(l)!.slice(1).join(' ')),
      ['a 1', 'b 1', 'a 10', 'b 10', 'a 20', 'b 20'],
    );
    assert.equal(lines[0], 'progress a: epoch 1/2 | step 1/20 | 640 img/s | loss 0.5000 | accuracy 81.25% | ETA 1s');
  });
});

describe('a real run', () => {
  test('not on a terminal: plain progress lines; metrics.jsonl follows the schema and its bins reproduce ECE and accuracy', { timeout: 180_000 }, async () => {
    const run = await runCli(['train', config('plain'), '--insecure']);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    for (const w of ['a', 'b']) {
      assert.match(run.stdout, new RegExp(`^progress ${w}: epoch 1/2 \\| step 20/40 \\| \\d+ img/s \\| loss \\d\\.\\d{4} \\| accuracy \\d+\\.\\d\\d% \\| ETA \\d+s$`, 'm'));
      assert.match(run.stdout, new RegExp(`^progress ${w}: epoch 2/2 \\| step 40/40 \\| .* \\| ETA 0s$`, 'm'));
    }
    const { records, problems } = parseMetricsLines(readFileSync(join(root, 'runs', 'plain', 'metrics.jsonl'), 'utf8'));
    assert.deepEqual(problems, []);
    assert.deepEqual(
      records.filter((r) => r.kind === 'run').map((r) => [r.run, r.algorithm, r.members.map((m) => m.name).join(), r.startStep]),
      [['plain', 'dml', 'a,b', 0]],
    );
    const steps = records.filter((r): r is StepRecord => r.kind === 'step');
    for (const w of ['a', 'b']) {
      const mine = steps.filter((s) => s.worker === w);
      assert.deepEqual(
        mine.map((s) => s.step),
        [4, 9, 14, 19, 24, 29, 34, 39],
      );
      assert.deepEqual(
        mine.map((s) => s.epoch),
        [0, 0, 0, 0, 1, 1, 1, 1],
      );
      for (const s of mine) {
        assert.ok(s.loss! > 0 && s.accuracy! >= 0 && s.imagesPerSecond > 0 && s.stepMs > 0 && s.lr === 0.05, JSON.stringify(s));
      }
    }
    const evals = records.filter((r): r is EvalRecord => r.kind === 'eval');
    assert.deepEqual(evals.map((e) => `${e.epoch}:${e.worker}`).sort(), ['0:a', '0:b', '0:ensemble', '1:a', '1:b', '1:ensemble']);
    for (const e of evals) {
      const bins = e.reliability!;
      assert.equal(bins.length, 15);
      const n = bins.reduce((sum, b) => sum + b.count, 0);
      assert.equal(n, 10_000);
      // ECE = sum_b |accuracy_b - confidence_b| n_b / n; accuracy = sum_b accuracy_b n_b / n.
      const ece = bins.reduce((sum, b) => sum + (b.count ? Math.abs(b.accuracy! - b.confidence!) * b.count : 0), 0) / n;
      const accuracy = bins.reduce((sum, b) => sum + (b.count ? b.accuracy! * b.count : 0), 0) / n;
      assert.ok(Math.abs(ece - e.ece) < 1e-9, `${e.worker}: ECE ${e.ece}, from its bins ${ece}`);
      assert.ok(Math.abs(accuracy - e.accuracy) < 1e-9, `${e.worker}: accuracy ${e.accuracy}, from its bins ${accuracy}`);
    }
  });

  test('on a terminal: one line per worker, redrawn in place, and no plain progress lines', { timeout: 180_000 }, async (t) => {
    if (cannotRun(t, unmet(tool('script', 'bsdutils')))) return; // gives the run a terminal
    // A wide terminal, so that the lines are not cut to 80 columns.
    const run = await startCli(['train', config('tty'), '--insecure'], {
      timeoutMs: 170_000,
      env: { COLUMNS: '160' },
      wrap: (argv) => ['script', ['-qec', `stty cols 200; ${argv.join(' ')}`, '/dev/null']],
    }).exited;
    assert.equal(run.code, 0, run.stdout);
    const out = run.stdout;
    assert.ok(out.includes('\u001b[1A'), 'the cursor moves up to redraw');
    for (const w of ['a', 'b']) assert.match(out, new RegExp(`${w} [█░]{20} epoch 2/2 \\| step 40/40 \\| \\d+ img/s \\| loss \\d\\.\\d{4} \\| acc \\d+\\.\\d\\d% \\| ETA 0s`));
    assert.doesNotMatch(out, /^progress \w:/m);
    assert.doesNotMatch(out, /^step \d+ \|/m);
    assert.match(out, /eval epoch 2: ensemble accuracy/);
    // Every line logged while the display ran is printed, the last ones included.
    for (const w of ['a', 'b']) assert.match(out, new RegExp(`\\[${w}\\] ${w}: final weights saved`));
  });
});
