/**
 * The run config: YAML and JSON files load with every default filled in; every mistake is an
 * error naming the key and what was expected; the algorithm-level rules (DML needs peers, KD a
 * teacher, BYOT a multi-exit model, ...) are enforced; learning-rate schedules match
 * hand-computed values (OneCycleLR: PyTorch's formula).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadRunConfig, resolveRunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { learningRateAt } from '../shared/training/lr-schedule.js';
import { ROOT } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cohort-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const member = (name: string, model = 'cnn-student') => ({ name, model: { name: model } });
const minimal = { algorithm: 'dml', dataset: { name: 'fashion-mnist' }, members: [member('a'), member('b')] };

function fails(value: unknown, pattern: RegExp): void {
  assert.throws(
    () => resolveRunConfig(value),
    (e: unknown) => e instanceof CohortError && pattern.test(e.message),
    `expected ${pattern}`,
  );
}

describe('loading', () => {
  test('a YAML file gets every default, and the algorithm defaults for T and alpha', () => {
    const path = join(dir, 'run.yaml');
    writeFileSync(
      path,
      'algorithm: kd\ndataset: { name: fashion-mnist }\nmembers:\n  - { name: s, model: { name: cnn-student } }\nteachers:\n  - { name: t, model: { name: cnn-teacher }, checkpoint: runs/x/t/final }\n',
    );
    const config = loadRunConfig(path);
    assert.equal(config.temperature, 20);
    assert.equal(config.alpha, 0.5);
    assert.equal(config.epochs, 1);
    assert.equal(config.batchSize, 128);
    assert.equal(config.seed, 42);
    assert.deepEqual(config.members[0].optimizer, { name: 'adam', lr: 1e-3, momentum: 0.9, beta1: 0.9, beta2: 0.999 });
    assert.deepEqual(config.members[0].schedule, { kind: 'constant' });
    assert.equal(config.members[0].backend, 'auto');
    assert.deepEqual(config.exchange, { float16: false, teacherWindow: 4, timeoutMs: 60_000, maxMessageMiB: 256 });
    assert.equal(config.teachers[0].checkpoint, 'runs/x/t/final');
  });

  test('explicit values win; a JSON file loads the same way', () => {
    const path = join(dir, 'run.json');
    writeFileSync(path, JSON.stringify({ ...minimal, temperature: 4, alpha: 0.9, exchange: { float16: true } }));
    const config = loadRunConfig(path);
    assert.equal(config.temperature, 4);
    assert.equal(config.alpha, 0.9);
    assert.equal(config.exchange.float16, true);
    assert.equal(config.exchange.teacherWindow, 4);
  });

  test('every example config in examples/ is valid', () => {
    const files = readdirSync(join(ROOT, 'examples')).filter((f) => /\.ya?ml$|\.json$/.test(f));
    assert.ok(files.length >= 1);
    for (const f of files) loadRunConfig(join(ROOT, 'examples', f));
  });

  test('missing file, bad YAML and bad JSON name the file', () => {
    assert.throws(() => loadRunConfig(join(dir, 'none.yaml')), /config file not found: .*none\.yaml/);
    writeFileSync(join(dir, 'bad.yaml'), 'algorithm: [dml\n');
    assert.throws(() => loadRunConfig(join(dir, 'bad.yaml')), /bad\.yaml: not valid YAML/);
    writeFileSync(join(dir, 'bad.json'), '{"algorithm": ');
    assert.throws(() => loadRunConfig(join(dir, 'bad.json')), /bad\.json: not valid JSON/);
    writeFileSync(join(dir, 'wrong.yaml'), 'algorithm: dmll\n');
    assert.throws(() => loadRunConfig(join(dir, 'wrong.yaml')), /wrong\.yaml: invalid config config:[\s\S]*config\.algorithm/);
  });
});

describe('errors name the key and the expected value', () => {
  test('unknown algorithm', () => fails({ ...minimal, algorithm: 'dmll' }, /config\.algorithm: Invalid option: expected one of "baseline"\|"kd"\|"dml"/));
  test('unknown top-level key', () => fails({ ...minimal, epoch: 3 }, /config: unknown key 'epoch'/));
  test('bad member model', () =>
    fails({ ...minimal, members: [member('a', 'resnet101'), member('b')] }, /config\.members\[0\]\.model\.name: Invalid option: expected one of "reference-cnn"/));
  test('model options the zoo refuses', () =>
    fails(
      { ...minimal, members: [{ name: 'a', model: { name: 'mlp-student', stem: 'small' } }, member('b')] },
      /config\.members\[0\]\.model: model: 'stem' applies only to ResNet and MobileNetV2/,
    ));
  test('negative learning rate', () =>
    fails({ ...minimal, members: [{ ...member('a'), optimizer: { lr: -1 } }, member('b')] }, /config\.members\[0\]\.optimizer\.lr: Too small: expected number to be >0/));
  test('bad schedule', () =>
    fails({ ...minimal, members: [{ ...member('a'), schedule: { kind: 'step' } }, member('b')] }, /config\.members\[0\]\.schedule\.milestones: .*expected array/));
  test('alpha above 1', () => fails({ ...minimal, alpha: 1.5 }, /config\.alpha: Too big: expected number to be <=1/));
  test('several problems are listed together', () =>
    fails({ ...minimal, epochs: 0, batchSize: 'big' }, /config\.epochs: Too small[\s\S]*config\.batchSize: Invalid input: expected number, received string/));
  test('a worker name that cannot be a routing id', () =>
    fails({ ...minimal, members: [member('a b'), member('b')] }, /config\.members\[0\]\.name: expected 1-64 letters, digits/));
});

describe('algorithm rules', () => {
  test('DML needs two members', () => fails({ ...minimal, members: [member('a')] }, /config\.members: dml needs at least 2 members \(peers learn from each other\), got 1/));
  test('KD needs a teacher', () => fails({ ...minimal, algorithm: 'kd' }, /config\.teachers: kd needs at least 1 teacher/));
  test('baseline takes no teachers', () => fails({ ...minimal, algorithm: 'baseline', teachers: [member('t')] }, /config\.teachers: baseline takes no teachers/));
  test('BYOT needs a multi-exit model', () => fails({ ...minimal, algorithm: 'byot' }, /config\.members\[0\]\.model\.name: byot needs a multi-exit model/));
  test('cross-quality KD needs a downscaled member', () =>
    fails({ ...minimal, algorithm: 'cross_quality_kd', teachers: [member('t')] }, /cross_quality_kd needs at least one member with a downscale/));
  test("teacherSeesDownscaled with the study's CNN teacher: refused for a 14x14 view it cannot take, accepted upsampled back", () => {
    const study = parseYaml(readFileSync(join(ROOT, 'examples', 'study', '10-cross-quality-kd.yaml'), 'utf8'));
    fails(
      { ...study, teacherSeesDownscaled: true },
      /^invalid config config:\n {2}config\.teacherSeesDownscaled: teacher 'teacher' \(cnn-teacher\) loads weights whose dense layer is sized by full-resolution images and cannot take the 14x14 view \(upsample: none\): upsample it back \(the student's downscale\.upsample: nearest or bilinear\), or set teacherSeesDownscaled: false$/,
    );
    const upsampled = { ...study, teacherSeesDownscaled: true, members: [{ ...study.members[0], downscale: { size: 14, upsample: 'bilinear' } }] };
    assert.equal(resolveRunConfig(upsampled).teacherSeesDownscaled, true);
    // A teacher that can take any size (global pooling), or one without saved weights, is not refused.
    assert.ok(resolveRunConfig({ ...study, teacherSeesDownscaled: true, teachers: [{ ...study.teachers[0], model: { name: 'resnet18', inputShape: [28, 28, 1], classes: 10 } }] }));
    assert.ok(resolveRunConfig({ ...study, teacherSeesDownscaled: true, teachers: [{ ...study.teachers[0], checkpoint: undefined }] }));
  });
  test('names are unique across members and teachers', () => fails({ ...minimal, algorithm: 'kd', teachers: [member('a')] }, /config\.teachers\[0\]\.name: 'a' is used twice/));
});

describe('learning-rate schedules', () => {
  const clock = (step: number) => ({ step, stepsPerEpoch: 10, totalSteps: 20 });
  test('constant and step decay at epoch milestones', () => {
    assert.equal(learningRateAt({ kind: 'constant' }, 0.1, clock(13)), 0.1);
    const step = { kind: 'step' as const, milestones: [1, 3], gamma: 0.5 };
    assert.deepEqual(
      [0, 9, 10, 19].map((s) => learningRateAt(step, 0.1, { step: s, stepsPerEpoch: 10, totalSteps: 40 })),
      [0.1, 0.1, 0.05, 0.05],
    );
    assert.equal(learningRateAt(step, 0.1, { step: 30, stepsPerEpoch: 10, totalSteps: 40 }), 0.025);
  });
  test('cosine: lr at the start, the mean of lr and minLr half way, minLr at the end', () => {
    const cosine = { kind: 'cosine' as const, minLr: 0.01 };
    assert.equal(learningRateAt(cosine, 0.1, clock(0)), 0.1);
    assert.ok(Math.abs(learningRateAt(cosine, 0.1, clock(10)) - 0.055) < 1e-15);
    assert.ok(Math.abs(learningRateAt(cosine, 0.1, clock(20)) - 0.01) < 1e-15);
  });
  test("OneCycleLR follows PyTorch's phases: lr/25 -> lr at pct_start*total - 1, then down to lr/25/1e4 at total - 1", () => {
    const one = { kind: 'onecycle' as const, pctStart: 0.1, divFactor: 25, finalDivFactor: 1e4 };
    const lr = (s: number) => learningRateAt(one, 1e-3, clock(s));
    assert.ok(Math.abs(lr(0) - 4e-5) < 1e-18); // initial = max_lr / div_factor
    assert.equal(lr(1), 1e-3); // end of the warm-up phase: step pct_start * 20 - 1 = 1
    const final = 4e-5 / 1e4;
    assert.ok(Math.abs(lr(19) - final) < 1e-18);
    // step 10: (10 - 1) / (19 - 1) = half of the annealing phase, cosine midpoint.
    assert.ok(Math.abs(lr(10) - (final + (1e-3 - final) / 2)) < 1e-15);
  });
});

test('optimizer adamw with weight decay and OneCycle cycling its beta1 is accepted; cycling tfjs Adam or decaying it is refused by key', () => {
  const base = { algorithm: 'baseline', dataset: { name: 'fashion-mnist' } };
  const run = resolveRunConfig({
    ...base,
    members: [{ name: 'a', model: { name: 'cnn-student' }, optimizer: { name: 'adamw', lr: 5e-3, weightDecay: 0.01 }, schedule: { kind: 'onecycle', cycleMomentum: true } }],
  });
  assert.equal(run.members[0].optimizer.name, 'adamw');
  assert.throws(
    () =>
      resolveRunConfig({
        ...base,
        members: [{ name: 'a', model: { name: 'cnn-student' }, optimizer: { name: 'adam', weightDecay: 0.01 }, schedule: { kind: 'onecycle', cycleMomentum: true } }],
      }),
    /config\.members\[0\]\.optimizer\.weightDecay: weightDecay \(decoupled\) applies to adamw only, not adam\n\s+config\.members\[0\]\.schedule\.cycleMomentum: adam has no momentum to cycle/,
  );
});
