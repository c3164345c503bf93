/**
 * The study's statistics (examples/study/statistics.ts): final, best and late-training spread of
 * a worker's evaluations in training order; paired differences over seeds with Student-t 95%
 * intervals, the t quantiles checked against the t distribution integrated numerically here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accuracySummary, describeDifference, inOrder, pairedDifference, successiveJitter, tQuantile975 } from '../examples/study/statistics.js';

/** Student's t density, and its CDF from 0 by Simpson's rule (symmetric: 0.5 + that). */
function tCdf(x: number, df: number): number {
  const logGamma = (z: number): number => {
    // Lanczos approximation (g = 7), accurate to ~1e-15 for z > 0.5.
    const c = [
      0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
      1.5056327351493116e-7,
    ];
    z -= 1;
    let a = c[0];
    const t = z + 7.5;
    for (let i = 1; i < 9; i++) a += c[i] / (z + i);
    return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
  };
  const k = Math.exp(logGamma((df + 1) / 2) - logGamma(df / 2)) / Math.sqrt(df * Math.PI);
  const density = (u: number) => k * (1 + (u * u) / df) ** (-(df + 1) / 2);
  const n = 20_000;
  const h = x / n;
  let s = density(0) + density(x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * density(i * h);
  return 0.5 + (s * h) / 3;
}

test('the t quantiles are the 97.5% points of the t distribution for 1..30 degrees of freedom', () => {
  for (let df = 1; df <= 30; df++) assert.ok(Math.abs(tCdf(tQuantile975(df), df) - 0.975) < 2e-4, `df ${df}: cdf ${tCdf(tQuantile975(df), df)}`);
  assert.ok(Math.abs(tCdf(tQuantile975(60), 60) - 0.975) < 1e-3);
});

test('a paired difference over seeds: mean, sample sd and the t interval; seeds missing on one side are left out', () => {
  const a = new Map([
    [1, 0.91],
    [2, 0.92],
    [3, 0.93],
    [4, 0.94],
    [5, 0.95],
    [6, 0.5],
  ]);
  const b = new Map([
    [1, 0.9],
    [2, 0.9],
    [3, 0.9],
    [4, 0.9],
    [5, 0.9],
  ]);
  const d = pairedDifference(a, b);
  assert.equal(d.n, 5);
  assert.ok(Math.abs(d.mean - 0.03) < 1e-12);
  assert.ok(Math.abs(d.sd - Math.sqrt(2.5) / 100) < 1e-12);
  const half = (2.776 * (Math.sqrt(2.5) / 100)) / Math.sqrt(5);
  assert.ok(Math.abs(d.low! - (0.03 - half)) < 1e-12 && Math.abs(d.high! - (0.03 + half)) < 1e-12);
  assert.deepEqual(describeDifference(d), { text: '+3.00 [+1.04, +4.96]', outsideNoise: true });
  assert.equal(describeDifference(pairedDifference(new Map([[1, 0.9]]), new Map([[1, 0.8]]))).outsideNoise, false);
});

test("final, best and the spread of a worker's last half of evaluations, in training order (step evaluations and epochs' ends)", () => {
  const evals = [
    { worker: 'a', epoch: 1, accuracy: 0.88 },
    { worker: 'a', epoch: 0, step: 5, accuracy: 0.7 },
    { worker: 'a', epoch: 0, accuracy: 0.8 },
    { worker: 'b', epoch: 0, accuracy: 0.1 },
    { worker: 'a', epoch: 1, step: 15, accuracy: 0.9 },
  ];
  const ordered = inOrder(evals, 'a', 10);
  assert.deepEqual(
    ordered.map((e) => e.accuracy),
    [0.7, 0.8, 0.9, 0.88],
  );
  const s = accuracySummary(ordered);
  assert.equal(s.final, 0.88);
  assert.equal(s.best, 0.9);
  assert.ok(Math.abs(s.fluctuation - Math.sqrt(((0.9 - 0.89) ** 2 + (0.88 - 0.89) ** 2) / 1)) < 1e-12);
  assert.equal(s.jitter, 0, 'two evaluations in the last half: no second difference');
});

test('jitter: a steady climb has none, however large its spread; noise around it is measured', () => {
  const climb = Array.from({ length: 10 }, (_, i) => 0.8 + 0.01 * i);
  const s = accuracySummary(climb.map((accuracy, i) => ({ worker: 'a', epoch: 0, step: i, accuracy })));
  assert.ok(s.fluctuation > 0.015, 'the spread sees the climb');
  assert.ok(Math.abs(s.jitter) < 1e-12, 'the jitter does not');
  // A climb of 0.01 per evaluation, alternately 0.005 above and below it: second differences -0.01, +0.01, -0.01, +0.01.
  const noisy = [0.8, 0.815, 0.82, 0.835, 0.84, 0.855];
  assert.ok(Math.abs(successiveJitter(noisy) - Math.sqrt(0.01 ** 2 / 6)) < 1e-12);
  assert.equal(successiveJitter([0.5, 0.6]), 0);
});
