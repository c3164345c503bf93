/**
 * One code path trains every algorithm: `cohort train` (real worker processes, wasm) runs a few
 * steps of baseline, DML_e, Tf-KD_virtual, cross-quality KD (a 14x14 student beside a 28x28
 * teacher), BYOT (a multi-exit ResNet-18) and DKD, and each member's evaluation is recorded.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { parseMetricsLines } from '../shared/metrics/records.js';
import { randomIdx } from './helpers/fake-coordinator.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-algorithms-'));
after(() => rmSync(root, { recursive: true, force: true }));

const member = (name: string, model: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ name, model, backend: 'wasm', ...extra });
const mlp = { name: 'mlp-student' };
const cases: [string, Record<string, unknown>][] = [
  ['baseline', { members: [member('solo', mlp)] }],
  ['dml_e', { members: [member('a', mlp), member('b', mlp), member('c', mlp)] }],
  ['tfkd_virtual', { members: [member('solo', mlp)], virtualTeacher: { a: 0.9, smooth: true }, temperature: 4 }],
  [
    'cross_quality_kd',
    { members: [member('small', { name: 'cnn-student' }, { downscale: { size: 14, upsample: 'none' } })], teachers: [member('teacher', { name: 'cnn-teacher' })] },
  ],
  // A ResNet-18 is slow on one CPU core: a small IDX dataset (16 test images) keeps its evaluation short.
  ['dkd', { members: [member('student', mlp)], teachers: [member('teacher', { name: 'mlp-teacher' })] }],
  [
    'byot',
    {
      members: [member('resnet', { name: 'multi-exit-resnet18', stem: 'small' })],
      batchSize: 8,
      trainLimit: 24,
      dataset: { name: 'idx', train: randomIdx(root, 'train', 32), test: randomIdx(root, 'test', 16) },
    },
  ],
];

for (const [algorithm, extra] of cases) {
  test(`${algorithm} trains through the same worker and records each member's evaluation`, { timeout: 300_000 }, async () => {
    const name = algorithm.replace('_', '-');
    const path = join(root, `${name}.json`);
    const config: Record<string, unknown> & { members: { name: string }[] } = {
      name,
      algorithm,
      dataset: { name: 'fashion-mnist', cacheDir: join(root, 'cache') },
      batchSize: 32,
      trainLimit: 96,
      runDir: join(root, 'runs'),
      members: [],
      ...extra,
    };
    writeFileSync(path, JSON.stringify(config));
    const result = await runCli(['train', path, '--log-every', '1']);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    const records = parseMetricsLines(readFileSync(join(root, 'runs', name, 'metrics.jsonl'), 'utf8')).records.filter((r) => r.kind === 'eval');
    const testImages = algorithm === 'byot' ? 16 : 10_000;
    for (const m of config.members) {
      const r = records.find((x) => x.worker === m.name && x.role === 'member');
      assert.ok(r && r.count === testImages && r.accuracy >= 0 && r.accuracy <= 1, `${m.name}: ${JSON.stringify(r)}`);
    }
    assert.match(result.stdout, /^step 3 \| loss /m);
  });
}
