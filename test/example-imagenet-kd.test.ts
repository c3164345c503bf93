/**
 * The ImageNet KD examples run: examples/kd-imagenet-torchvision.yaml (a torchvision ResNet-50
 * teacher from safetensors) and its -onnx twin (the same network exported to ONNX) train their
 * ResNet-18 student with `cohort train` on a small generated image folder, with the paths,
 * sizes and step count scaled down here and the weights made by test/fixtures/torchvision_reference.py
 * (seeded random, 3 classes). The two sources are the same teacher: both runs record the same
 * teacher accuracy and test NLL (within 1e-4 relative) and end with the same student weights
 * (within 1e-4), which moved in training.
 * Skipped locally without python3-torch, required under CI=true.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { parse as parseYaml } from 'yaml';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { parseMetricsLines } from '../shared/metrics/records.js';
import { buildWorkerModel, finalWeightsDir } from '../worker/run-worker.js';
import { useWasm } from './helpers/backends.js';
import { ROOT, runCli } from './helpers/cli.js';
import { torchOrSkip, torchvisionReference } from './helpers/torchvision.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-imagenet-kd-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(() => useWasm());

const CLASSES = ['n01', 'n02', 'n03'];

/** root/<class>/<i>.png of random 80x72 RGB images. */
async function imageFolder(dir: string, perClass: number, seed: number): Promise<string> {
  const random = mulberry32(seed);
  for (const name of CLASSES) {
    mkdirSync(join(dir, name), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const raw = Buffer.from(Uint8Array.from({ length: 80 * 72 * 3 }, () => Math.floor(random() * 256)));
      writeFileSync(
        join(dir, name, `${i}.png`),
        await sharp(raw, { raw: { width: 80, height: 72, channels: 3 } })
          .png()
          .toBuffer(),
      );
    }
  }
  return dir;
}

test('the ImageNet KD examples (ResNet-50 teacher from safetensors and from ONNX, ResNet-18 student) train on an image folder', { timeout: 600_000 }, async (t) => {
  const python = torchOrSkip(t);
  if (!python) return;
  const ref = torchvisionReference(python, 'resnet50', join(root, 'weights'), { classes: CLASSES.length, size: 64, onnx: true });
  const train = await imageFolder(join(root, 'train'), 4, 1);
  const val = await imageFolder(join(root, 'val'), 2, 2);
  const runs: { name: string; student: Float32Array[]; teacherAccuracy: number; teacherNll: number }[] = [];
  let initial: Float32Array[] = [];
  for (const file of ['kd-imagenet-torchvision.yaml', 'kd-imagenet-torchvision-onnx.yaml']) {
    const example = parseYaml(readFileSync(join(ROOT, 'examples', file), 'utf8'));
    // Scaled down: 64x64 crops, batch 4, 2 steps, wasm; the teacher's weights made above.
    example.dataset = { ...example.dataset, train, test: val, size: 64, resize: 72, crop: 64, threads: 0 };
    Object.assign(example, { epochs: 1, batchSize: 4, trainLimit: 8, runDir: join(root, 'runs'), exchange: { timeoutMs: 120_000 } });
    example.members[0].backend = 'wasm';
    const teacher = example.teachers[0];
    teacher.backend = 'wasm';
    if (teacher.onnx) teacher.onnx = ref.onnx;
    else teacher.model.weights = ref.weights;
    const path = join(root, file.replace('.yaml', '.json'));
    writeFileSync(path, JSON.stringify(example));
    const run = await runCli(['train', path, '--log-every', '1']);
    assert.equal(run.code, 0, `${file}:\n${run.stdout}\n${run.stderr}`);
    const config = resolveRunConfig(example);
    const records = parseMetricsLines(readFileSync(join(config.runDir, config.name, 'metrics.jsonl'), 'utf8')).records;
    const teacherEval = records.find((r) => r.kind === 'eval' && r.worker === 'resnet50');
    assert.ok(teacherEval && teacherEval.kind === 'eval', `${file}: no teacher evaluation`);
    const student = (await readSavedWeights(finalWeightsDir(config, 'resnet18'))).map((w) => w.values);
    const fresh = buildWorkerModel(config, config.members[0], 0, [64, 64, 3], CLASSES.length);
    initial = await Promise.all(fresh.model.weights.map(async (w) => (await w.read().data()) as Float32Array));
    fresh.model.dispose();
    runs.push({ name: file, student, teacherAccuracy: teacherEval.accuracy, teacherNll: teacherEval.nll });
  }
  const [fromSafetensors, fromOnnx] = runs;
  assert.equal(fromOnnx.teacherAccuracy, fromSafetensors.teacherAccuracy);
  // The test NLL is continuous in the logits: the two teachers agree to float rounding.
  const nll = Math.abs(fromOnnx.teacherNll - fromSafetensors.teacherNll) / fromSafetensors.teacherNll;
  assert.ok(nll < 1e-4, `teacher NLL ${fromSafetensors.teacherNll} (safetensors) vs ${fromOnnx.teacherNll} (ONNX)`);
  let worst = 0;
  let moved = 0;
  fromSafetensors.student.forEach((values, k) => {
    for (let e = 0; e < values.length; e++) {
      worst = Math.max(worst, Math.abs(values[e] - fromOnnx.student[k][e]));
      moved = Math.max(moved, Math.abs(values[e] - initial[k][e]));
    }
  });
  assert.ok(moved > 1e-3, `the student did not train (largest change ${moved})`);
  assert.ok(worst < 1e-4, `student weights differ by ${worst} between the two teachers`);
  console.log(
    `# teacher test NLL ${fromSafetensors.teacherNll} (safetensors) / ${fromOnnx.teacherNll} (ONNX); students: largest weight difference ${worst.toExponential(2)}, largest change ${moved.toExponential(2)}`,
  );
});
