/** The cohort-consistent sampler: same seed, same batches; exact resume; per-sample streams. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchSampler, epochOrder, sampleRandom } from '../shared/data/sampler.js';

test('an epoch order is a permutation that depends only on (seed, epoch)', () => {
  const a = epochOrder(1000, 42, 3);
  assert.deepEqual(
    [...a].sort((x, y) => x - y),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  assert.deepEqual(epochOrder(1000, 42, 3), a);
  assert.notDeepEqual(epochOrder(1000, 42, 4), a);
  assert.notDeepEqual(epochOrder(1000, 43, 3), a);
});

test('two samplers with the same seed give the same batches; every sample once per epoch', () => {
  const options = { count: 1003, batchSize: 64, seed: 7 };
  const a = new BatchSampler(options);
  const b = new BatchSampler(options);
  const seen = new Set<number>();
  for (let i = 0; i < a.batchesPerEpoch; i++) {
    const x = a.next();
    const y = b.next();
    assert.deepEqual(x, y);
    x.indices.forEach((k) => seen.add(k));
  }
  assert.equal(seen.size, 1003);
  assert.equal(a.next().epoch, 1);
});

test('a restored sampler continues with exactly the batch it would have given', () => {
  const options = { count: 500, batchSize: 32, seed: 11 };
  const straight = new BatchSampler(options);
  const first = new BatchSampler(options);
  const expected = Array.from({ length: 40 }, () => straight.next()); // crosses two epoch ends
  for (let i = 0; i < 23; i++) first.next();
  const saved = JSON.parse(JSON.stringify(first.state()));
  const resumed = new BatchSampler(options);
  resumed.restore(saved);
  for (let i = 23; i < 40; i++) assert.deepEqual(resumed.next(), expected[i], `batch ${i}`);
  assert.throws(() => resumed.restore({ epoch: 0, batch: 99 }), /invalid state/);
});

test('per-sample random streams depend on (seed, epoch, index, member seed) only', () => {
  const draw = (...args: Parameters<typeof sampleRandom>) => {
    const r = sampleRandom(...args);
    return [r(), r(), r()];
  };
  assert.deepEqual(draw(1, 2, 3), draw(1, 2, 3));
  for (const other of [draw(1, 2, 4), draw(1, 3, 3), draw(2, 2, 3), draw(1, 2, 3, 5)]) assert.notDeepEqual(other, draw(1, 2, 3));
});
