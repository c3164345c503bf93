/**
 * The exchange benchmark runs end to end on a tiny configuration: the real coordinator and the
 * two raw routers in this process, the synthetic members in a spawned process, every timed
 * step of all three paths reported, and every member's teaching signal checked against the
 * leave-one-out mean of the others (the member process fails the run otherwise). It asserts
 * what the bench computes from those times, not how fast anything is.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchExchange, parseShapes } from '../bench/exchange.js';
import { median } from '../bench/stats.js';

test('npm run bench -- exchange: three paths timed per step, per-step and median ratios and targets computed from them', async () => {
  const lines: string[] = [];
  const result = await benchExchange(
    {
      sizes: [2, 3],
      shapes: [
        [128, 10],
        [16, 300],
      ],
      steps: 6,
      bigSteps: 6,
      warmup: 2,
      sleepMs: 0,
      stepMs: 100,
      cnnSteps: 1,
    },
    (line) => lines.push(line),
  );
  assert.equal(result.rows.length, 4);
  for (const row of result.rows) {
    for (const path of ['cohort', 'raw', 'rawRead'] as const) {
      assert.equal(row.times[path].length, 6, `${path} times of K=${row.members}`);
      assert.ok(row.times[path].every((ms) => ms > 0 && Number.isFinite(ms)));
    }
    assert.equal(row.cohortMs, median(row.times.cohort));
    assert.equal(row.rawReadMs, median(row.times.rawRead));
    assert.ok(Math.abs(row.ratio - row.cohortMs / row.rawMs) < 1e-12);
    // Per-step ratios, recomputed here: step i of each path ran back to back.
    const ratios = (other: number[]) => row.times.cohort.map((ms, i) => ms / other[i]).sort((a, b) => a - b);
    const [r, rr] = [ratios(row.times.raw), ratios(row.times.rawRead)];
    assert.ok(Math.abs(row.pairedRatio - (r[2] + r[3]) / 2) < 1e-12, 'median of 6 per-step ratios');
    assert.ok(Math.abs(row.pairedRatioRead - (rr[2] + rr[3]) / 2) < 1e-12);
  }
  for (const row of result.rows) {
    if (row.classes === 10) assert.ok(Math.abs(row.stepPercent! - row.cohortMs) < 1e-9, 'cohort ms as a % of a 100 ms step');
    else assert.equal(row.stepPercent, undefined, "the step share is for the reference CNN's 128x10 logits only");
  }
  const failing = (ratio: (r: (typeof result.rows)[number]) => number) => result.rows.filter((r) => ratio(r) > 2).map((r) => `K=${r.members} ${r.batch}x${r.classes}`);
  assert.deepEqual(
    result.targets.ratio.failing,
    failing((r) => r.pairedRatio),
  );
  assert.deepEqual(
    result.targets.ratioOfMedians.failing,
    failing((r) => r.ratio),
  );
  assert.deepEqual(
    result.targets.ratioRead.failing,
    failing((r) => r.pairedRatioRead),
  );
  assert.equal(result.targets.stepShare.met, undefined, 'no K = 4 row, so the step-share target is not judged');
  assert.ok(
    lines.some((l) => l.startsWith('| 3 | 16x300 |')),
    lines.join('\n'),
  );
});

test('npm run bench -- exchange: bad options are refused with the option named', async () => {
  assert.throws(() => parseShapes('128x10,12'), /--shapes: '12' is not BATCHxCLASSES/);
  await assert.rejects(
    benchExchange({ sizes: [1], shapes: [[4, 4]], steps: 1, bigSteps: 1, warmup: 0, sleepMs: 0, stepMs: 1, cnnSteps: 1 }, () => {}),
    /--sizes: cohort sizes must be integers from 2 to 256, got 1/,
  );
});
