/**
 * Faults really injected into real processes (`cohort train` with its worker processes, wasm):
 * a worker killed with SIGKILL at a random step is restarted and the cohort rolls back to the
 * last global checkpoint, ending with member weights bit-identical to an undisturbed run; the
 * `fail` policy stops the run naming the worker; restarts are bounded; a run whose every process
 * died resumes with --resume; interrupted checkpoints are never loaded.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { initBackend } from '../shared/engine/backend.js';
import { completeCheckpoints, latestCheckpoint, pruneCheckpoints, writeCheckpointManifest } from '../shared/io/checkpoint.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { ROOT } from './helpers/cli.js';
import { dmlReplayWeights } from './helpers/dml-reference.js';
import { killAt, train, type Run } from './helpers/faults.js';
import { freePort } from './helpers/net.js';
import { asRoot, cannotRun, tool, unmet } from './helpers/requirements.js';
import { weightDifferences } from './helpers/weight-differences.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-faults-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cacheDir = join(root, 'cache');
const STEPS = 30;

before(async () => {
  await initBackend({ backend: 'wasm' }); // for reading saved weights and the elastic replay (the workers' backend)
  await loadFashionMnist({ cacheDir });
});

function config(name: string, extra: Record<string, unknown> = {}): string {
  // Dropout on: recovery must be bit-identical with it too (its masks are a function of the step).
  const member = (n: string) => ({ name: n, model: { name: 'mlp-student', dropout: 0.2 }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05 } });
  const path = join(root, `${name}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      name,
      algorithm: 'dml',
      dataset: { name: 'fashion-mnist', cacheDir },
      batchSize: 32,
      trainLimit: STEPS * 32,
      members: [member('a'), member('b'), member('c')],
      checkpoint: { everySteps: 5, keep: 2 },
      runDir: join(root, 'runs'),
      ...extra,
    }),
  );
  return path;
}

async function weights(run: string, member: string): Promise<Float32Array[]> {
  return (await readSavedWeights(join(root, 'runs', run, member, 'final'))).map((w) => w.values);
}

/**
 * How the coordinator words a killed worker's loss: the launcher's exit report, or, when a
 * heartbeat to the dead process fails first, the send error (a race between the two).
 */
const KILLED = String.raw`(?:its process exited with SIGKILL|unreachable \(.*\))`;

describe('restart policy', () => {
  test('a worker killed with SIGKILL at a random step: rolled back and restarted, the weights equal an undisturbed run bit for bit', { timeout: 300_000 }, async () => {
    const step = 6 + Math.floor(mulberry32(Date.now() >>> 0)() * 20); // after the first checkpoint, before the last step
    const [clean, faulty] = await Promise.all([train([config('clean')]), train([config('faulty')], killAt('b', step))]);
    assert.equal(clean.code, 0, clean.output);
    assert.equal(faulty.code, 0, faulty.output);
    // Back to the last complete checkpoint: the one of step floor(k / 5) * 5, or the one before
    // when the kill came while that one was being written.
    const rollback = new RegExp(`coordinator: b lost at .* \\(${KILLED}\\); rolling the cohort back to step (\\d+) `).exec(faulty.output);
    assert.ok(rollback, `killed at step ${step}:\n${faulty.output}`);
    const latest = Math.floor(step / 5) * 5;
    assert.ok([latest, latest - 5].includes(Number(rollback[1])), `killed at step ${step}, rolled back to ${rollback[1]}`);
    assert.match(faulty.output, /launcher: restarting b in 1000 ms/);
    assert.match(faulty.output, /coordinator: b \(member\) joined from .*; it starts at step \d+/);
    for (const member of ['a', 'b', 'c']) {
      assert.deepEqual(await weights('faulty', member), await weights('clean', member), `member ${member} (killed b at step ${step})`);
    }
    // keep: 2 checkpoints are left, both complete.
    assert.equal(completeCheckpoints(join(root, 'runs', 'faulty')).length, 2);
  });

  test('Adam: a worker killed after step 100 of 120, rolled back to the checkpoint of step 80: the weights equal an undisturbed run bit for bit', { timeout: 300_000 }, async () => {
    // At step 80 Adam's bias corrections are far from 1 (1 - 0.999^81 = 0.078): restored in the
    // last bits wrong (tfjs's pow), DML drifted the cohort apart in the following 40 steps.
    const adam = (name: string) =>
      config(name, {
        members: ['a', 'b'].map((n) => ({ name: n, model: { name: 'mlp-student', dropout: 0.2 }, backend: 'wasm', optimizer: { name: 'adam', lr: 1e-3 } })),
        trainLimit: 120 * 32,
        checkpoint: { everySteps: 40, keep: 2 },
      });
    const [clean, faulty] = await Promise.all([train([adam('adam-clean')]), train([adam('adam-faulty')], killAt('b', 100))]);
    assert.equal(clean.code, 0, clean.output);
    assert.equal(faulty.code, 0, faulty.output);
    assert.match(faulty.output, new RegExp(`coordinator: b lost at .* \\(${KILLED}\\); rolling the cohort back to step 80 `));
    assert.match(faulty.output, /coordinator: b \(member\) joined from .*; it starts at step 80/);
    for (const member of ['a', 'b']) {
      const [actual, expected] = [await weights('adam-faulty', member), await weights('adam-clean', member)];
      assert.deepEqual(actual, expected, `member ${member}: ${weightDifferences(actual, expected)}`);
    }
  });

  test('a member killed while writing its part of a checkpoint: that checkpoint is never loaded, the cohort rolls back to the one before, the weights equal an undisturbed run', { timeout: 240_000 }, async () => {
    // The failpoint SIGKILLs the first worker to have written its weights and optimizer state
    // for the checkpoint of step 15 but not its state.json; the others finish theirs.
    const env = { COHORT_FAILPOINT: 'checkpoint-before-state@15', COHORT_FAILPOINT_ONCE: join(root, 'mid-checkpoint.once') };
    const run = await train([config('mid-checkpoint')], () => {}, { env });
    assert.equal(run.code, 0, run.output);
    const lost = new RegExp(`coordinator: (\\w+) lost at .* \\(${KILLED}\\); rolling the cohort back to step (\\d+) `).exec(run.output);
    assert.ok(lost, run.output);
    assert.equal(lost[2], '10', `rolled back to step ${lost[2]}: the interrupted checkpoint of step 15 must not be used`);
    assert.doesNotMatch(run.output.slice(0, lost.index), /checkpoint of step 15 complete/, 'the interrupted checkpoint was never completed');
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('mid-checkpoint', member), await weights('clean', member), `member ${member} (${lost[1]} killed)`);
  });

  test('a teacher killed with SIGKILL: restarted, the students roll back, their weights equal an undisturbed KD run', { timeout: 300_000 }, async () => {
    const kd = (name: string) =>
      config(name, {
        algorithm: 'kd',
        members: [{ name: 's1', model: { name: 'mlp-student' }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05 } }, { name: 's2', model: { name: 'mlp-student', seed: 5 }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05 } }],
        teachers: [{ name: 't', model: { name: 'mlp-teacher', dropout: 0 }, backend: 'wasm' }],
        exchange: { teacherWindow: 3 },
      });
    const step = 6 + Math.floor(mulberry32((Date.now() >>> 0) ^ 0x5bd1e995)() * 20);
    const [clean, faulty] = await Promise.all([train([kd('kd-clean')]), train([kd('kd-teacher-killed')], killAt('t', step))]);
    assert.equal(clean.code, 0, clean.output);
    assert.equal(faulty.code, 0, faulty.output);
    assert.match(faulty.output, new RegExp(`coordinator: t lost at .* \\(${KILLED}\\); rolling the cohort back to step \\d+ `), `killed at step ${step}`);
    assert.match(faulty.output, /coordinator: t \(teacher\) joined from .*; it starts at step \d+/);
    for (const member of ['s1', 's2']) assert.deepEqual(await weights('kd-teacher-killed', member), await weights('kd-clean', member), `student ${member} (teacher killed at step ${step})`);
  });

  test('a hung worker (SIGSTOP) is declared lost after livenessMs, stopped and replaced; the weights equal an undisturbed run', { timeout: 240_000 }, async () => {
    // livenessMs 5 s: with 3 s, a CI machine loaded by other work once starved the coordinator
    // long enough for the healthy workers to think it gone (the run then gave up after 3 restarts).
    const step = 6 + Math.floor(mulberry32((Date.now() >>> 0) ^ 0x1b873593)() * 15);
    const pids = new Map<string, number>();
    let stoppedAt = 0;
    const run = await train([config('hung', { recovery: { livenessMs: 5000, heartbeatMs: 500 } })], (line) => {
      const joined = /^coordinator: (\w+) \(member\) joined from .*, pid (\d+)/.exec(line);
      if (joined) pids.set(joined[1], Number(joined[2]));
      if (new RegExp(`^step ${step} \\|`).test(line) && !stoppedAt) {
        process.kill(pids.get('b')!, 'SIGSTOP');
        stoppedAt = Date.now();
      }
    });
    try {
      process.kill(pids.get('b')!, 'SIGKILL'); // in case the run did not
    } catch {
      // gone, as it should be
    }
    assert.equal(run.code, 0, run.output);
    const lost = /coordinator: b lost at (\S+) \(no message for (\d+\.\d) s\); rolling the cohort back to step \d+ /.exec(run.output);
    assert.ok(lost, `stopped at step ${step}:\n${run.output}`);
    const detected = Date.parse(lost[1]) - stoppedAt;
    console.log(`# b stopped at step ${step}, declared lost ${detected} ms later`);
    assert.ok(Number(lost[2]) >= 5 && detected < 5000 + 2000, `declared lost after ${detected} ms (livenessMs 5000)`);
    assert.match(run.output, /launcher: stopping b \(pid \d+\), which the coordinator declared lost/);
    assert.match(run.output, /coordinator: b \(member\) joined from .*; it starts at step \d+/);
    assert.equal([...run.output.matchAll(/coordinator: \w+ lost at/g)].length, 1, 'lost once, not again when its process is stopped');
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('hung', member), await weights('clean', member), `member ${member}`);
  });

  test("the 'fail' policy stops the run with an error naming the worker", { timeout: 120_000 }, async () => {
    const run = await train([config('no-restart', { recovery: { policy: 'fail' } })], killAt('c', 3));
    assert.equal(run.code, 2);
    assert.match(run.output, /cohort: error: worker c lost at .*: its process exited with SIGKILL \(recovery policy 'fail'\)/);
  });

  test('restarts are bounded by maxRestarts', { timeout: 180_000 }, async () => {
    const run = await train([config('bounded', { recovery: { maxRestarts: 1, backoffMs: 100 } })], (line) => {
      // Kill a each time it joins, after it has started training.
      const joined = /^coordinator: a \(member\) joined from .*, pid (\d+)/.exec(line);
      if (joined) setTimeout(() => process.kill(Number(joined[1]), 'SIGKILL'), 1500);
    });
    assert.equal(run.code, 2, run.output);
    // Whichever sees the second death first names it: the launcher (the process exited) or the
    // coordinator's socket (the peer is gone).
    assert.match(run.output, new RegExp(`cohort: error: worker a lost at .*: ${KILLED}; giving up after 1 restart\\(s\\)`));
  });
});

describe('elastic policy', () => {
  test('a member killed with SIGKILL: the others train on without it, it rejoins from its last checkpoint at the current step; all weights equal a single-process replay bit for bit', { timeout: 300_000 }, async () => {
    const epochs = 4;
    const step = 6 + Math.floor(mulberry32(Date.now() >>> 0)() * 10);
    const path = config('elastic', { epochs, recovery: { policy: 'elastic', backoffMs: 100 } });
    const run = await train([path], killAt('b', step));
    assert.equal(run.code, 0, run.output);
    const lost = new RegExp(`coordinator: b lost at .* \\(${KILLED}\\); elastic: a, c continue without it from step (\\d+);`).exec(run.output);
    const back = /coordinator: b \(member\) rejoined from .*; it restores the checkpoint of step (\d+) and continues at step (\d+)/.exec(run.output);
    assert.ok(lost && back, `killed at step ${step}:\n${run.output}`);
    const [from, restoreStep, until] = [Number(lost[1]), Number(back[1]), Number(back[2])];
    console.log(`# b killed at step ${step}: steps ${from}..${until - 1} served without it; it restored the checkpoint of step ${restoreStep}`);
    assert.ok(restoreStep <= from && from <= until && until <= epochs * STEPS, `${restoreStep} <= ${from} <= ${until}`);
    assert.ok(restoreStep >= Math.floor(step / 5) * 5 - 5, `restored step ${restoreStep}, killed at ${step}`);
    assert.doesNotMatch(run.output, /rolling (the cohort )?back/);
    // Every step is served once: the coordinator's progress lines count 1..epochs * STEPS.
    const served = [...run.output.matchAll(/^step (\d+) \|/gm)].map((m) => Number(m[1]));
    assert.deepEqual(served, Array.from({ length: epochs * STEPS }, (_, i) => i + 1));
    const expected = await dmlReplayWeights(resolveRunConfig(JSON.parse(readFileSync(path, 'utf8'))), { member: 'b', from, until, restoreStep });
    for (const [i, member] of ['a', 'b', 'c'].entries()) assert.deepEqual(await weights('elastic', member), expected[i], `member ${member}`);
  });
});

describe('resume and checkpoint files', () => {
  test('--resume after every process died continues from the last complete checkpoint to the same weights', { timeout: 300_000 }, async () => {
    const path = config('resumed');
    let pids: number[] = [];
    let coordinator: number | undefined;
    const first = await new Promise<Run>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', 'train', path, '--log-every', '1'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      coordinator = child.pid;
      let output = '';
      createInterface({ input: child.stdout }).on('line', (line) => {
        output += `${line}\n`;
        const joined = /joined from .*, pid (\d+)/.exec(line);
        if (joined) pids.push(Number(joined[1]));
        if (/^coordinator: checkpoint of step 15 complete/.test(line)) {
          // Everything dies at once: the coordinator and its workers.
          for (const pid of [coordinator!, ...pids]) process.kill(pid, 'SIGKILL');
        }
      });
      child.on('close', (code) => resolve({ code, output }));
    });
    assert.notEqual(first.code, 0);
    const runDir = join(root, 'runs', 'resumed');
    assert.ok((latestCheckpoint(runDir)?.step ?? 0) >= 15);
    pids = [];
    const second = await train([path, '--resume']);
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /coordinator: resuming from the checkpoint of step (15|20|25)/);
    // The undisturbed run of the first test, same config.
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('resumed', member), await weights('clean', member), member);
  });

  test('a checkpoint without its manifest (interrupted) is never loaded, and is pruned', async () => {
    const runDir = join(root, 'runs', 'manual');
    for (const step of [5, 10, 15]) {
      for (const m of ['a', 'b']) {
        mkdirSync(join(runDir, 'checkpoints', `step-${String(step).padStart(9, '0')}`, m), { recursive: true });
        writeFileSync(join(runDir, 'checkpoints', `step-${String(step).padStart(9, '0')}`, m, 'state.json'), JSON.stringify({ step }));
      }
    }
    await writeCheckpointManifest(runDir, 5, ['a', 'b']);
    await writeCheckpointManifest(runDir, 10, ['a', 'b']);
    // Step 20: only member a got to write before the crash; no manifest.
    mkdirSync(join(runDir, 'checkpoints', 'step-000000020', 'a'), { recursive: true });
    assert.equal(latestCheckpoint(runDir)?.step, 10);
    await assert.rejects(writeCheckpointManifest(runDir, 20, ['a', 'b']), /step-000000020: member a has not written its state/);
    await pruneCheckpoints(runDir, 1);
    assert.deepEqual(readdirSync(join(runDir, 'checkpoints')).sort(), ['step-000000010', 'step-000000015', 'step-000000020']);
    // 15 and 20 are newer than the newest complete checkpoint (a crash may have left them mid-write); a later prune removes them.
    await writeCheckpointManifest(runDir, 15, ['a', 'b']);
    await pruneCheckpoints(runDir, 1);
    assert.deepEqual(readdirSync(join(runDir, 'checkpoints')).sort(), ['step-000000015', 'step-000000020']);
  });
});

describe('a full disk', () => {
  test('the disk fills up during a checkpoint: a clear error, the previous checkpoint intact; with space again, --resume ends with the undisturbed weights', { timeout: 300_000 }, async (t) => {
    // The run directory on a 48 MiB tmpfs: the checkpoint of step 5 (3 x 5.1 MB of weights and
    // 5.1 MB of momentum) fits, the one of step 10 does not.
    const runDir = join(root, 'runs', 'disk-full');
    mkdirSync(runDir, { recursive: true });
    if (cannotRun(t, unmet(tool('mount', 'mount'), asRoot))) return;
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', runDir], { encoding: 'utf8' });
    if (mounted.status !== 0 && cannotRun(t, `cannot mount a small tmpfs here (${(mounted.stderr || mounted.error?.message || '').trim()})`)) return;
    try {
      const path = config('disk-full');
      const full = await train([path]);
      assert.equal(full.code, 2, full.output);
      assert.match(full.output, /cohort: error: worker \w+ failed: cannot write the checkpoint \S+step-000000010\S* \(cannot write \S+: no space left on device \(ENOSPC\)\); the last complete checkpoint is untouched/);
      assert.doesNotMatch(full.output, /^\s+at /m, 'no stack trace');
      assert.equal(latestCheckpoint(runDir)?.step, 5);
      assert.equal(readdirSync(join(runDir, 'checkpoints', 'step-000000010')).includes('MANIFEST.json'), false);
      // No temporary file is left behind to keep the disk full.
      assert.deepEqual(readdirSync(join(runDir, 'checkpoints'), { recursive: true }).filter((f) => String(f).includes('.tmp-')), []);
      // Space again: the run resumes from step 5 and ends where an undisturbed run ends.
      assert.equal(spawnSync('mount', ['-o', 'remount,size=256m', runDir]).status, 0);
      const resumed = await train([path, '--resume']);
      assert.equal(resumed.code, 0, resumed.output);
      assert.match(resumed.output, /coordinator: resuming from the checkpoint of step 5 /);
      for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('disk-full', member), await weights('clean', member), member);
    } finally {
      spawnSync('umount', [runDir]);
    }
  });
});

describe('coordinator crash', () => {
  test('the coordinator killed mid-run and restarted with --resume on the same port: the workers rejoin on their own and end with the undisturbed weights', { timeout: 300_000 }, async () => {
    const path = config('coordinator-crash', { recovery: { livenessMs: 3000, heartbeatMs: 500 } });
    const port = await freePort();
    const endpoint = `tcp://127.0.0.1:${port}`;
    const start = (extra: string[], onLine: (line: string) => void = () => {}) =>
      new Promise<Run>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', ...extra], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        for (const stream of [child.stdout, child.stderr]) {
          createInterface({ input: stream }).on('line', (line) => {
            output += `${line}\n`;
            onLine(line);
            if (/^coordinator: checkpoint of step 10 complete/.test(line) && extra.includes('coordinator') && !extra.includes('--resume')) child.kill('SIGKILL');
          });
        }
        child.on('close', (code) => resolve({ code, output }));
      });
    const first = start(['coordinator', path, '--bind', endpoint, '--insecure', '--log-every', '1']);
    const workers = ['a', 'b', 'c'].map((m) => start(['worker', '--connect', endpoint, '--member', m, '--insecure']));
    const killed = await first;
    assert.notEqual(killed.code, 0, 'the first coordinator was killed');
    const second = await start(['coordinator', path, '--bind', endpoint, '--insecure', '--resume', '--log-every', '1']);
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /coordinator: resuming from the checkpoint of step 10/);
    const results = await Promise.all(workers);
    for (const r of results) {
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /no message from the coordinator for 3 s; joining again/);
    }
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('coordinator-crash', member), await weights('clean', member), member);
  });
});
